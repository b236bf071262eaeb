// The app's screens as plain Swift: state, and actions that change it. The SwiftUI views only
// draw the state and call the actions (see ios/OffstApp); `onChange` tells them to redraw.
// Plain classes (no Combine), so the same code is tested on Linux.
import Foundation

/// Base: a state change notifies `onChange`; `error` holds the last failure as a sentence.
open class ViewModel: @unchecked Sendable {
    public var onChange: (() -> Void)?
    public internal(set) var error: String? { didSet { onChange?() } }
    public internal(set) var busy = false { didSet { onChange?() } }
    public init() {}

    /// Run `body`, keeping `busy` and `error` true to what happened.
    func run<T>(_ body: () async throws -> T) async -> T? {
        busy = true
        defer { busy = false }
        do {
            let r = try await body()
            error = nil
            return r
        } catch {
            self.error = message(of: error)
            return nil
        }
    }
}

/// Reads a whole, positive amount typed by a person.
public func parseAmount(_ text: String) -> UInt64? {
    let t = text.trimmingCharacters(in: .whitespaces)
    guard let v = UInt64(t), v > 0 else { return nil }
    return v
}

/// Onboarding: create a wallet or restore one, with a relay.
public final class OnboardingViewModel: ViewModel, @unchecked Sendable {
    public var relay = ""
    public private(set) var wallet: OffstWallet? { didSet { onChange?() } }
    let dir: String
    let keys: KeyStore

    public init(dir: String, keys: KeyStore) {
        self.dir = dir
        self.keys = keys
    }

    /// Open the wallet if there is one already.
    public func openExisting() async {
        wallet = await run { try await OffstWallet.open(dir: dir, keys: keys) }
    }

    public func create() async {
        guard !relay.trimmingCharacters(in: .whitespaces).isEmpty else {
            error = "pick a relay first: paste or scan its KEY@HOST:PORT"
            return
        }
        wallet = await run { try await OffstWallet.create(dir: dir, relay: relay, keys: keys) }
    }

    public func restore(backup: String) async {
        wallet = await run { try await OffstWallet.restore(dir: dir, backup: backup, keys: keys) }
    }
}

/// Home: the total balance per currency and the friends.
public final class HomeViewModel: ViewModel, @unchecked Sendable {
    public private(set) var balances: [Balance] = [] { didSet { onChange?() } }
    public private(set) var friends: [Friend] = [] { didSet { onChange?() } }
    let wallet: OffstWallet

    public init(wallet: OffstWallet) { self.wallet = wallet }

    public func refresh() async {
        if let (b, f) = await run({ (try await wallet.balances(), try await wallet.friends()) }) {
            balances = b
            friends = f
        }
    }
}

/// Add a friend: show my invitation, or accept a scanned one, or a request that came in.
public final class AddFriendViewModel: ViewModel, @unchecked Sendable {
    public private(set) var invitation: Invitation? { didSet { onChange?() } }
    public private(set) var requests: [FriendRequest] = [] { didSet { onChange?() } }
    public private(set) var added: Friend? { didSet { onChange?() } }
    public var myName = ""
    let wallet: OffstWallet

    public init(wallet: OffstWallet) { self.wallet = wallet }

    public func showMyCode(hours: UInt64 = 72) async {
        invitation = await run { try await wallet.invite(name: myName, hours: hours) }
    }

    /// A QR code was scanned (or text pasted).
    public func scanned(_ text: String) async {
        added = await run { try await wallet.accept(invitation: text, name: myName) }
    }

    public func refreshRequests() async {
        requests = await run { try await wallet.friendRequests() } ?? requests
    }

    public func accept(request: FriendRequest) async {
        added = await run { try await wallet.acceptFriendRequest(request.id, name: myName) }
        await refreshRequests()
    }
}

/// One friend: the limits both ways, the balance, history; change how much they may owe.
public final class FriendDetailViewModel: ViewModel, @unchecked Sendable {
    public private(set) var detail: FriendDetail? { didSet { onChange?() } }
    let wallet: OffstWallet
    let friendId: String

    public init(wallet: OffstWallet, friendId: String) {
        self.wallet = wallet
        self.friendId = friendId
    }

    public func load() async {
        detail = await run { try await wallet.friend(friendId) } ?? detail
    }

    /// `amount` as typed.
    public func setLimit(_ amount: String, currency: String) async {
        guard let a = UInt64(amount.trimmingCharacters(in: .whitespaces)) else {
            error = "\(amount) is not a whole amount"
            return
        }
        if await run({ try await wallet.setLimit(friend: friendId, currency: currency, amount: a) }) != nil {
            await load()
        }
    }
}

/// Request a payment: an invoice and its QR code; says when it is paid.
public final class RequestViewModel: ViewModel, @unchecked Sendable {
    public private(set) var invoice: Invoice? { didSet { onChange?() } }
    public private(set) var paid = false { didSet { onChange?() } }
    let wallet: OffstWallet

    public init(wallet: OffstWallet) { self.wallet = wallet }

    public func create(amount: String, currency: String, memo: String, minutes: UInt64 = 60) async {
        guard let a = parseAmount(amount) else {
            error = "\(amount) is not an amount: type a whole number above 0"
            return
        }
        paid = false
        invoice = await run { try await wallet.invoice(amount: a, currency: currency, memo: memo, minutes: minutes) }
    }

    /// An event came (from the app's event loop): is it our invoice, paid?
    public func heard(_ event: HistoryItem) {
        if event.kind == .invoicePaid, event.invoiceId != nil, event.invoiceId == invoice?.id {
            paid = true
        }
    }
}

/// Pay: scan, see routes and fees, confirm, follow the progress, get the receipt.
public final class PayViewModel: ViewModel, @unchecked Sendable {
    public enum Stage: Equatable {
        case scanning
        case quoted(PaymentQuote)
        case paying([PayProgress])
        case paid(Receipt)
        case failed(String)
    }
    public private(set) var stage: Stage = .scanning { didSet { onChange?() } }
    var request = ""
    let wallet: OffstWallet

    public init(wallet: OffstWallet) { self.wallet = wallet }

    /// A code was scanned: read it, then ask for routes and fees.
    public func scanned(_ text: String) async {
        request = text
        if let q = await run({ try await wallet.quote(text) }) {
            stage = .quoted(q)
        } else {
            stage = .failed(error ?? "")
        }
    }

    /// The person confirmed.
    public func confirm() async {
        guard case .quoted = stage else { return }
        stage = .paying([])
        let steps = Steps()
        let receipt = await run {
            try await wallet.pay(request, progress: { [weak self] p in
                steps.add(p)
                self?.stage = .paying(steps.list)
            })
        }
        if let r = receipt {
            stage = .paid(r)
        } else {
            stage = .failed(error ?? "")
        }
    }

    public func reset() {
        stage = .scanning
        error = nil
    }
}

/// An offst: link opened from another app, a web page or an NFC tag (the app's URL scheme):
/// read it, show what it asks, and act only when the person confirms. A payment request goes on
/// to `PayViewModel` (routes, fees, then `confirm()`); an invitation is accepted by
/// `acceptFriend()`. Nothing happens on opening alone.
public final class LinkViewModel: ViewModel, @unchecked Sendable {
    public enum Stage: Equatable {
        case idle
        case confirmFriend(uri: String, inviter: String, name: String)
        case confirmPayment(uri: String, request: PaymentRequestInfo)
        case added(Friend)
        case refused(String)
    }
    public private(set) var stage: Stage = .idle { didSet { onChange?() } }
    public var myName = ""
    let wallet: OffstWallet

    public init(wallet: OffstWallet) { self.wallet = wallet }

    public func opened(_ uri: String) async {
        switch await run({ try readLink(text: uri) }) {
        case .invitation(let inviter, let name, _)?:
            stage = .confirmFriend(uri: uri, inviter: inviter, name: name)
        case .paymentRequest(let request)?:
            stage = .confirmPayment(uri: uri, request: request)
        case nil:
            stage = .refused(error ?? "")
        }
    }

    /// The person said yes to the invitation.
    public func acceptFriend() async {
        guard case .confirmFriend(let uri, _, _) = stage else { return }
        let name = myName
        if let f = await run({ try await wallet.accept(invitation: uri, name: name) }) {
            stage = .added(f)
        } else {
            stage = .refused(error ?? "")
        }
    }

    /// The person said no (or went back).
    public func decline() {
        stage = .idle
        error = nil
    }
}

final class Steps: @unchecked Sendable {
    private let lock = NSLock()
    private var all: [PayProgress] = []
    func add(_ p: PayProgress) { lock.lock(); all.append(p); lock.unlock() }
    var list: [PayProgress] { lock.lock(); defer { lock.unlock() }; return all }
}

/// Settings: the relay, what the index is told, backup.
public final class SettingsViewModel: ViewModel, @unchecked Sendable {
    public private(set) var relay: String? { didSet { onChange?() } }
    public private(set) var privacy: ReportPrivacy = .exact { didSet { onChange?() } }
    public private(set) var backedUp: String? { didSet { onChange?() } }
    let wallet: OffstWallet

    public init(wallet: OffstWallet) { self.wallet = wallet }

    public func load() async {
        relay = await run { try await wallet.relay() } ?? relay
        privacy = (try? wallet.wallet.reportPrivacy()) ?? privacy
    }

    public func setRelay(_ text: String) async {
        if await run({ try await wallet.setRelay(text) }) != nil { await load() }
    }

    public func setPrivacy(_ p: ReportPrivacy) async {
        if await run({ try await offCaller { try self.wallet.wallet.setReportPrivacy(privacy: p) } }) != nil {
            privacy = p
        }
    }

    public func backup(to path: String, keys: KeyStore) async {
        if await run({ try await wallet.backup(to: path, keys: keys) }) != nil { backedUp = path }
    }
}
