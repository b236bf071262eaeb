// The wallet's story through OffstKit, as the iOS app runs it: two wallets and a real relay on
// loopback (OFFST_TEST_RELAY, set by scripts/test-bindings.sh). One test method runs the story
// in order (each step needs the one before); the error cases have their own.
import Foundation
import XCTest
import OffstKit

/// A stand-in for the iOS Keychain: a secret that never leaves this object.
final class TestKeyStore: KeyStore, @unchecked Sendable {
    let secret: [UInt8]
    init(_ secret: String) { self.secret = Array(secret.utf8) }
    func key(salt: Data) throws -> Data {
        // Not a KDF: a test key, 32 bytes that depend on the secret and the salt.
        var out = [UInt8](repeating: 0, count: 32)
        for (i, b) in (secret + Array(salt)).enumerated() { out[i % 32] = out[i % 32] &* 31 &+ b &+ UInt8(i % 251) }
        return Data(out)
    }
}

final class LockedKeyStore: KeyStore, @unchecked Sendable {
    func key(salt: Data) throws -> Data {
        throw KeyStoreError.Unavailable(reason: "the user cancelled Face ID")
    }
}

final class Lines: Logger, @unchecked Sendable {
    private let lock = NSLock()
    private var all: [String] = []
    func log(level: LogLevel, target: String, message: String) { lock.lock(); all.append(message); lock.unlock() }
    var lines: [String] { lock.lock(); defer { lock.unlock() }; return all }
}

func relayAddress() throws -> String {
    guard let r = ProcessInfo.processInfo.environment["OFFST_TEST_RELAY"] else {
        throw XCTSkip("set OFFST_TEST_RELAY to a relay's KEY@HOST:PORT")
    }
    return r
}

func tempDir(_ name: String) -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("offst-swift-\(UUID().uuidString)/\(name)")
    return d.path
}

/// Sync both until `cond` holds.
func until(_ ws: [OffstWallet], _ what: String, _ cond: () async throws -> Bool) async throws {
    for _ in 0..<60 {
        for w in ws { try await w.sync() }
        if try await cond() { return }
        try await Task.sleep(nanoseconds: 250_000_000)
    }
    XCTFail("not within 60 rounds: \(what)")
}

/// Two wallets on the relay, friends, each letting the other owe it `limit` EUR.
func friends(limit: UInt64 = 100) async throws -> (OffstWallet, OffstWallet) {
    let relay = try relayAddress()
    let alice = try await OffstWallet.create(dir: tempDir("alice"), relay: relay, keys: TestKeyStore("alice"))
    let bob = try await OffstWallet.create(dir: tempDir("bob"), relay: relay, keys: TestKeyStore("bob"))
    let inv = try await alice.invite(name: "Alice")
    _ = try await bob.accept(invitation: inv.text, name: "Bob")
    try await until([bob, alice], "Bob's request reaches Alice") {
        try await alice.friendRequests().contains { $0.id == bob.id }
    }
    _ = try await alice.acceptFriendRequest(bob.id, name: "Alice")
    try await alice.setLimit(friend: bob.id, currency: "EUR", amount: limit)
    try await bob.setLimit(friend: alice.id, currency: "EUR", amount: limit)
    try await until([alice, bob], "limits agreed") {
        let line = try await bob.friends().first?.lines.first
        return line?.weMayOwe == limit && line?.theyMayOwe == limit
    }
    return (alice, bob)
}

final class WalletStoryTests: XCTestCase {
    /// Onboarding, the invitation and its acceptance, through the view models; logs reach the
    /// foreign Logger.
    func testOnboardingInvitationAndAcceptance() async throws {
        let relay = try relayAddress()
        let logs = Lines()
        setLogger(logger: logs, level: .info)
        let onboarding = OnboardingViewModel(dir: tempDir("alice"), keys: TestKeyStore("alice's keychain"))
        await onboarding.create()
        XCTAssertNil(onboarding.wallet)
        XCTAssertTrue(onboarding.error?.contains("relay") ?? false)
        onboarding.relay = relay
        await onboarding.create()
        let alice = try XCTUnwrap(onboarding.wallet, onboarding.error ?? "")
        let bob = try await OffstWallet.create(dir: tempDir("bob"), relay: relay,
                                               keys: passphraseKeyStore(passphrase: "bob's passphrase"))
        try await alice.sync()
        let connection = await alice.connection()
        XCTAssertEqual(connection, .connected)
        XCTAssertTrue(logs.lines.contains { $0.contains("connected to the relay") })

        let aliceAdd = AddFriendViewModel(wallet: alice)
        aliceAdd.myName = "Alice"
        await aliceAdd.showMyCode()
        let inv = try XCTUnwrap(aliceAdd.invitation)
        XCTAssertTrue(inv.text.hasPrefix("OFFSTI1"))
        XCTAssertEqual(inv.uri, "offst:" + inv.text)
        XCTAssertTrue(inv.qrSvg.contains("<svg"))
        XCTAssertEqual(Array(inv.qrPng.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        let bobAdd = AddFriendViewModel(wallet: bob)
        bobAdd.myName = "Bob"
        await bobAdd.scanned(inv.uri)
        XCTAssertEqual(bobAdd.added?.id, alice.id, bobAdd.error ?? "")
        XCTAssertEqual(bobAdd.added?.name, "Alice")
        try await until([bob, alice], "Bob's request reaches Alice") {
            await aliceAdd.refreshRequests()
            return aliceAdd.requests.contains { $0.id == bob.id }
        }
        let request = try XCTUnwrap(aliceAdd.requests.first { $0.id == bob.id })
        XCTAssertEqual(request.name, "Bob")
        await aliceAdd.accept(request: request)
        XCTAssertEqual(aliceAdd.added?.id, bob.id, aliceAdd.error ?? "")
        let home = HomeViewModel(wallet: alice)
        await home.refresh()
        XCTAssertEqual(home.friends.map(\.id), [bob.id])
        await alice.shutdown()
        await bob.shutdown()
    }

    /// Limits both ways from the friend screen; bad input gets a sentence.
    func testLimits() async throws {
        let (alice, bob) = try await friends(limit: 10)
        let aliceOnBob = FriendDetailViewModel(wallet: alice, friendId: bob.id)
        await aliceOnBob.setLimit("lots", currency: "EUR")
        XCTAssertEqual(aliceOnBob.error, "lots is not a whole amount")
        await aliceOnBob.setLimit("100", currency: "EUR")
        XCTAssertNil(aliceOnBob.error)
        let line = aliceOnBob.detail?.friend.lines.first
        XCTAssertTrue(line?.theyMayOwe == 100 || line?.theyMayOwePending == 100, "\(String(describing: line))")
        // A change of limit is a signed move: it shows once the channel has taken it.
        try await until([alice, bob], "both see the new limit") {
            await aliceOnBob.load()
            let bobSees = try await bob.friends().first?.lines.first?.weMayOwe
            return bobSees == 100 && aliceOnBob.detail?.friend.lines.first?.theyMayOwe == 100
        }
        XCTAssertTrue(aliceOnBob.detail?.history.contains { $0.kind == .limitSet } ?? false)
        await alice.shutdown()
        await bob.shutdown()
    }

    /// Invoice, quote, pay with progress, the payer's receipt, the payee's event; then home
    /// and history show it.
    func testInvoicePayReceiptAndEvent() async throws {
        let (alice, bob) = try await friends()
        let events = alice.events()
        let requestVM = RequestViewModel(wallet: alice)
        await requestVM.create(amount: "0", currency: "EUR", memo: "coffee")
        XCTAssertNotNil(requestVM.error)
        await requestVM.create(amount: "30", currency: "EUR", memo: "coffee", minutes: 10)
        let invoice = try XCTUnwrap(requestVM.invoice, requestVM.error ?? "")
        XCTAssertTrue(invoice.text.hasPrefix("OFFSTP1"))
        XCTAssertEqual(try readPaymentRequest(text: invoice.uri).memo, "coffee")
        let pay = PayViewModel(wallet: bob)
        await pay.scanned(invoice.uri)
        guard case .quoted(let quote) = pay.stage else { return XCTFail("not quoted: \(pay.stage)") }
        XCTAssertEqual(quote.totalFee, 0)
        XCTAssertEqual(quote.routes.count, 1)
        XCTAssertEqual(quote.request.amount, 30)
        await pay.confirm()
        guard case .paid(let receipt) = pay.stage else { return XCTFail("not paid: \(pay.stage)") }
        XCTAssertEqual(receipt.amount, 30)
        XCTAssertEqual(receipt.invoiceId, invoice.id)
        XCTAssertEqual(try verifyReceipt(text: receipt.text), receipt)
        var heard = false
        for try await e in events {
            requestVM.heard(e)
            if requestVM.paid { heard = true; break }
        }
        XCTAssertTrue(heard)
        let mine = try bob.wallet.payment(invoiceId: invoice.id)
        XCTAssertEqual(mine.role, .buyer)
        XCTAssertEqual(mine.status, .completed)
        XCTAssertEqual(mine.receipt, receipt)
        XCTAssertEqual(try alice.wallet.payment(invoiceId: invoice.id).status, .paid)

        let home = HomeViewModel(wallet: bob)
        try await until([alice, bob], "balances settle") {
            await home.refresh()
            return home.balances == [Balance(currency: "EUR", total: -30)]
        }
        let history = try await bob.history()
        XCTAssertTrue(history.contains { $0.kind == .paymentCompleted && $0.amount == -30 })
        XCTAssertTrue(zip(history, history.dropFirst()).allSatisfy { $0.seq > $1.seq }, "newest first")
        let aliceOnBob = FriendDetailViewModel(wallet: alice, friendId: bob.id)
        await aliceOnBob.load()
        XCTAssertEqual(aliceOnBob.detail?.friend.lines.first?.balance, 30)
        await alice.shutdown()
        await bob.shutdown()
    }

    /// An offst: link shows what it asks and acts only when the person confirms.
    func testLinkAsksBeforeActing() async throws {
        let relay = try relayAddress()
        let (alice, bob) = try await friends()
        let tea = try await alice.invoice(amount: 5, currency: "EUR", memo: "link tea", minutes: 10)
        let before = try await bob.balances()
        let link = LinkViewModel(wallet: bob)
        await link.opened(tea.uri)
        guard case .confirmPayment(_, let request) = link.stage else { return XCTFail("not asked: \(link.stage)") }
        XCTAssertEqual(request.amount, 5)
        XCTAssertEqual(request.memo, "link tea")
        // Opening it paid nothing: paying needs the pay screen's confirm().
        let after = try await bob.balances()
        XCTAssertEqual(before, after)
        XCTAssertEqual(try alice.wallet.payment(invoiceId: tea.id).status, .open)
        link.decline()
        XCTAssertEqual(link.stage, .idle)
        // An invitation by link: Carol sees who invites, and becomes a friend on yes.
        let carol = try await OffstWallet.create(dir: tempDir("carol"), relay: relay, keys: TestKeyStore("carol"))
        let invite = LinkViewModel(wallet: carol)
        invite.myName = "Carol"
        await invite.opened(try await alice.invite(name: "Alice", hours: 1).uri)
        guard case .confirmFriend(_, _, let name) = invite.stage else { return XCTFail("not asked: \(invite.stage)") }
        XCTAssertEqual(name, "Alice")
        let none = try await carol.friends()
        XCTAssertTrue(none.isEmpty)
        await invite.acceptFriend()
        guard case .added(let friend) = invite.stage else { return XCTFail("not added: \(invite.stage) \(invite.error ?? "")") }
        XCTAssertEqual(friend.id, alice.id)
        await invite.opened("offst:nonsense")
        guard case .refused(let why) = invite.stage else { return XCTFail("not refused: \(invite.stage)") }
        XCTAssertFalse(why.isEmpty)
        await alice.shutdown()
        await bob.shutdown()
        await carol.shutdown()
    }

    /// A bad invitation, an unknown friend, an amount over capacity: typed errors with
    /// sentences, nothing changed.
    func testErrors() async throws {
        let relay = try relayAddress()
        let (alice, bob) = try await friends(limit: 100)
        let bobAdd = AddFriendViewModel(wallet: bob)
        await bobAdd.scanned("hello")
        XCTAssertNotNil(bobAdd.error)
        do { _ = try await bob.accept(invitation: "hello", name: "Bob"); XCTFail("accepted nonsense") }
        catch let e as InviteError { guard case .NotOffst = e else { return XCTFail("\(e)") } }
        let inv = try await alice.invite(name: "Alice").text
        // Change the third character from the end to another one (it always differs).
        let third = inv[inv.index(inv.endIndex, offsetBy: -3)]
        let damaged = String(inv.dropLast(3)) + (third == "A" ? "B" : "A") + String(inv.suffix(2))
        XCTAssertNotEqual(inv, damaged)
        do { _ = try await bob.accept(invitation: damaged, name: "Bob"); XCTFail("accepted a damaged code") }
        catch let e as InviteError {
            switch e { case .Damaged, .Forged: break; default: XCTFail("\(e)") }
        }
        let stranger = String(relay.split(separator: "@")[0])
        do { try await alice.setLimit(friend: stranger, currency: "EUR", amount: 5); XCTFail("a stranger") }
        catch let e as FriendError {
            guard case .UnknownFriend = e else { return XCTFail("\(e)") }
            XCTAssertTrue(message(of: e).contains("not your friend"), message(of: e))
        }
        do { try await alice.setLimit(friend: "carol", currency: "EUR", amount: 5); XCTFail("not a key") }
        catch let e as FriendError { guard case .BadId = e else { return XCTFail("\(e)") } }
        let big = try await alice.invoice(amount: 1000, currency: "EUR", memo: "a car")
        let payBig = PayViewModel(wallet: bob)
        await payBig.scanned(big.text)
        guard case .failed(let why) = payBig.stage else { return XCTFail("quoted over capacity") }
        XCTAssertTrue(why.contains("1000"), why)
        do { _ = try await bob.quote(big.text); XCTFail("over capacity") }
        catch let e as PayError { guard case .NoRoute = e else { return XCTFail("\(e)") } }
        let balances = try await bob.balances()
        XCTAssertEqual(balances, [Balance(currency: "EUR", total: 0)])
        await alice.shutdown()
        await bob.shutdown()
    }

    /// Settings: the relay, report privacy, backup, and a restore that keeps the friends.
    func testSettingsBackupAndRestore() async throws {
        let relay = try relayAddress()
        let (alice, bob) = try await friends()
        let settings = SettingsViewModel(wallet: bob)
        await settings.load()
        XCTAssertEqual(settings.relay, relay)
        await settings.setPrivacy(.buckets)
        XCTAssertEqual(try bob.wallet.reportPrivacy(), .buckets)
        await settings.setRelay("nonsense")
        XCTAssertNotNil(settings.error)
        let backup = tempDir("bob.backup")
        try FileManager.default.createDirectory(atPath: (backup as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        await settings.backup(to: backup, keys: TestKeyStore("bob"))
        XCTAssertEqual(settings.backedUp, backup, settings.error ?? "")
        await bob.shutdown()
        let restored = OnboardingViewModel(dir: tempDir("bob-restored"), keys: TestKeyStore("bob"))
        await restored.restore(backup: backup)
        let again = try XCTUnwrap(restored.wallet, restored.error ?? "")
        XCTAssertEqual(again.id, bob.id)
        let friends = try await again.friends()
        XCTAssertEqual(friends.map(\.id), [alice.id])
        await again.shutdown()
        await alice.shutdown()
    }

    /// A wallet in use, a wrong key, a locked key store, then the right key.
    func testWrongKeyAndLockedKeyStore() async throws {
        let relay = try relayAddress()
        let dir = tempDir("carol")
        var carol: OffstWallet? = try await OffstWallet.create(dir: dir, relay: relay, keys: TestKeyStore("right"))
        do { _ = try await OffstWallet.open(dir: dir, keys: TestKeyStore("right")); XCTFail("opened twice") }
        catch let e as WalletError { guard case .InUse = e else { return XCTFail("\(e)") } }
        await carol?.shutdown()
        carol = nil
        do { _ = try await OffstWallet.open(dir: dir, keys: TestKeyStore("wrong")); XCTFail("wrong key opened") }
        catch let e as WalletError {
            guard case .WrongKey = e else { return XCTFail("\(e)") }
            XCTAssertTrue(message(of: e).contains("wrong key"))
        }
        do { _ = try await OffstWallet.open(dir: dir, keys: LockedKeyStore()); XCTFail("locked store opened") }
        catch let e as WalletError { guard case .KeyStore = e else { return XCTFail("\(e)") } }
        let again = try await OffstWallet.open(dir: dir, keys: TestKeyStore("right"))
        let friends = try await again.friends()
        XCTAssertEqual(friends.count, 0)
        await again.shutdown()
    }
}
