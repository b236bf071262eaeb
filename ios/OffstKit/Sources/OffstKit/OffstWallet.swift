// A Swift-friendly face for the generated bindings: async throughout (blocking calls run off
// the caller's thread), events as an AsyncSequence, and errors as sentences.
import Foundation
@_exported import OffstFFI

/// Run a call that may block on the disk away from the caller's thread (the main thread,
/// in an app).
func offCaller<T>(_ body: @escaping () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        DispatchQueue.global(qos: .userInitiated).async {
            do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
        }
    }
}

/// The sentence inside an error from the wallet (what happened, what to do), for people.
public func message(of error: Error) -> String {
    let mirror = Mirror(reflecting: error)
    if let case_ = mirror.children.first {
        if let text = case_.value as? String { return text }
        let fields = Mirror(reflecting: case_.value)
        if let text = fields.children.first(where: { $0.label == "message" || $0.label == "reason" })?.value as? String {
            return text
        }
    }
    return String(describing: error)
}

/// An open wallet, online until `shutdown()`.
public final class OffstWallet: @unchecked Sendable {
    /// The generated object, for what this wrapper does not cover.
    public let wallet: Wallet

    public init(_ wallet: Wallet) { self.wallet = wallet }

    /// Create a wallet in `dir`, sealed with `keys`, using `relay` (`KEY@HOST:PORT`).
    public static func create(dir: String, relay: String?, keys: KeyStore, feeBase: UInt64 = 0, feePpm: UInt32 = 0) async throws -> OffstWallet {
        let config = WalletConfig(dir: dir, relay: relay, feeBase: feeBase, feePpm: feePpm)
        return OffstWallet(try await createWallet(config: config, keys: keys))
    }

    /// Open the wallet in `dir` with `keys` (and, if given, move it to `relay`).
    public static func open(dir: String, relay: String? = nil, keys: KeyStore) async throws -> OffstWallet {
        let config = WalletConfig(dir: dir, relay: relay, feeBase: 0, feePpm: 0)
        return OffstWallet(try await openWallet(config: config, keys: keys))
    }

    /// Restore the backup at `backup` into the new directory `dir`.
    public static func restore(dir: String, backup: String, keys: KeyStore) async throws -> OffstWallet {
        let config = WalletConfig(dir: dir, relay: nil, feeBase: 0, feePpm: 0)
        return OffstWallet(try await restoreWallet(config: config, backupPath: backup, keys: keys))
    }

    public var id: String { wallet.id() }

    public func relay() async throws -> String? { try await offCaller { try self.wallet.relay() } }
    public func setRelay(_ relay: String) async throws { try await offCaller { try self.wallet.setRelay(relay: relay) } }
    public func connection() async -> Connection { await wallet.connection() }
    public func sync(timeout: UInt64 = 30) async throws { try await wallet.sync(timeoutSecs: timeout) }

    public func friends() async throws -> [Friend] { try await offCaller { try self.wallet.friends() } }
    public func balances() async throws -> [Balance] { try await offCaller { try self.wallet.balances() } }
    public func friend(_ id: String, recent: UInt32 = 20) async throws -> FriendDetail {
        try await offCaller { try self.wallet.friend(id: id, recent: recent) }
    }
    public func invite(name: String, hours: UInt64 = 72) async throws -> Invitation {
        try await offCaller { try self.wallet.invite(name: name, hours: hours) }
    }
    public func accept(invitation: String, name: String) async throws -> Friend {
        try await offCaller { try self.wallet.acceptInvitation(text: invitation, name: name) }
    }
    public func friendRequests() async throws -> [FriendRequest] {
        try await offCaller { try self.wallet.friendRequests() }
    }
    public func acceptFriendRequest(_ id: String, name: String) async throws -> Friend {
        try await offCaller { try self.wallet.acceptFriendRequest(id: id, name: name) }
    }
    public func setLimit(friend: String, currency: String, amount: UInt64) async throws {
        try await offCaller { try self.wallet.setLimit(id: friend, currency: currency, amount: amount) }
    }
    public func invoice(amount: UInt64, currency: String, memo: String, minutes: UInt64 = 60) async throws -> Invoice {
        try await offCaller { try self.wallet.createInvoice(amount: amount, currency: currency, memo: memo, minutes: minutes) }
    }
    public func quote(_ request: String, maxRoutes: UInt8 = 8) async throws -> PaymentQuote {
        try await wallet.quote(request: request, maxRoutes: maxRoutes)
    }
    /// Pay and follow to the receipt; `progress` hears each step (on a library thread).
    public func pay(_ request: String, maxRoutes: UInt8 = 8, timeout: UInt64 = 120,
                    progress: ((PayProgress) -> Void)? = nil) async throws -> Receipt {
        let listener = progress.map { ProgressRelay($0) }
        return try await wallet.pay(request: request, maxRoutes: maxRoutes, timeoutSecs: timeout, progress: listener)
    }
    public func history(limit: UInt32 = 50, before: UInt64? = nil) async throws -> [HistoryItem] {
        try await offCaller { try self.wallet.history(limit: limit, before: before) }
    }
    public func backup(to path: String, keys: KeyStore) async throws {
        try await wallet.backup(path: path, keys: keys)
    }

    /// Events as they happen, each marked handled once the loop body has it. Ends when the
    /// task is cancelled or the wallet is shut down.
    public func events() -> AsyncThrowingStream<HistoryItem, Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    while !Task.isCancelled {
                        let e = try await self.wallet.nextEvent()
                        continuation.yield(e)
                        try self.wallet.eventHandled(seq: e.seq)
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Go offline (every step is durable).
    public func shutdown() async { await wallet.shutdown() }
}

final class ProgressRelay: PayListener, @unchecked Sendable {
    let body: (PayProgress) -> Void
    init(_ body: @escaping (PayProgress) -> Void) { self.body = body }
    func onProgress(progress: PayProgress) { body(progress) }
}
