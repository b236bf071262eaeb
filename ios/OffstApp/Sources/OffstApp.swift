import SwiftUI
import OffstKit

/// The app: one wallet, its events for the screens, logs to os_log.
@main
struct OffstApp: App {
    @StateObject private var model = AppModel()

    var body: some Scene {
        WindowGroup {
            if let wallet = model.wallet {
                HomeView(app: model, wallet: wallet)
            } else {
                OnboardingView(app: model)
            }
        }
    }
}

@MainActor
final class AppModel: ObservableObject {
    @Published var wallet: OffstWallet?
    /// Each event as it happens (screens filter what they care about).
    @Published var lastEvent: HistoryItem?
    let keys = KeychainKeys()
    let dir = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
        .appendingPathComponent("wallet").path

    init() { setLogger(logger: OSLogLogger(), level: .info) }

    func opened(_ w: OffstWallet) {
        wallet = w
        Task {
            for try await e in w.events() { lastEvent = e }
        }
    }
}
