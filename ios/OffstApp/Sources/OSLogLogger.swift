import OffstKit
import os

/// The library's logs in the unified log (subsystem org.offst.app).
final class OSLogLogger: Logger, @unchecked Sendable {
    private let log = os.Logger(subsystem: "org.offst.app", category: "wallet")

    func log(level: LogLevel, target: String, message: String) {
        switch level {
        case .error: log.error("\(target, privacy: .public): \(message, privacy: .public)")
        case .warn: log.warning("\(target, privacy: .public): \(message, privacy: .public)")
        case .info: log.info("\(target, privacy: .public): \(message, privacy: .public)")
        case .debug: log.debug("\(target, privacy: .public): \(message, privacy: .public)")
        }
    }
}
