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

final class WalletStoryTests: XCTestCase {
    func testStory() async throws {
        let relay = try relayAddress()
        let logs = Lines()
        setLogger(logger: logs, level: .info)
        let aliceKeys = TestKeyStore("alice's keychain")
        let bobKeys = passphraseKeyStore(passphrase: "bob's passphrase")

        // Onboarding: no relay is refused with a sentence; then both wallets are made.
        let onboarding = OnboardingViewModel(dir: tempDir("alice"), keys: aliceKeys)
        await onboarding.create()
        XCTAssertNil(onboarding.wallet)
        XCTAssertTrue(onboarding.error?.contains("relay") ?? false)
        onboarding.relay = relay
        await onboarding.create()
        let alice = try XCTUnwrap(onboarding.wallet, onboarding.error ?? "")
        let bob = try await OffstWallet.create(dir: tempDir("bob"), relay: relay, keys: bobKeys)
        try await alice.sync()
        let connection = await alice.connection()
        XCTAssertEqual(connection, .connected)
        XCTAssertTrue(logs.lines.contains { $0.contains("connected to the relay") })

        // Add a friend: Alice shows her code, Bob scans it, Alice accepts his request.
        let aliceAdd = AddFriendViewModel(wallet: alice)
        aliceAdd.myName = "Alice"
        await aliceAdd.showMyCode()
        let inv = try XCTUnwrap(aliceAdd.invitation)
        XCTAssertTrue(inv.text.hasPrefix("OFFSTI1"))
        XCTAssertTrue(inv.qrSvg.contains("<svg"))
        XCTAssertEqual(Array(inv.qrPng.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        let bobAdd = AddFriendViewModel(wallet: bob)
        bobAdd.myName = "Bob"
        await bobAdd.scanned(inv.uri)
        XCTAssertEqual(bobAdd.added?.id, alice.id, bobAdd.error ?? "")
        try await until([bob, alice], "Bob's request reaches Alice") {
            await aliceAdd.refreshRequests()
            return aliceAdd.requests.contains { $0.id == bob.id }
        }
        let request = try XCTUnwrap(aliceAdd.requests.first { $0.id == bob.id })
        XCTAssertEqual(request.name, "Bob")
        await aliceAdd.accept(request: request)
        XCTAssertEqual(aliceAdd.added?.id, bob.id, aliceAdd.error ?? "")

        // Limits both ways, from the friend screen.
        let aliceOnBob = FriendDetailViewModel(wallet: alice, friendId: bob.id)
        await aliceOnBob.setLimit("100", currency: "EUR")
        XCTAssertNil(aliceOnBob.error)
        await aliceOnBob.setLimit("lots", currency: "EUR")
        XCTAssertEqual(aliceOnBob.error, "lots is not a whole amount")
        try await bob.setLimit(friend: alice.id, currency: "EUR", amount: 50)
        try await until([alice, bob], "limits agreed") {
            let line = try await bob.friends().first?.lines.first
            return line?.weMayOwe == 100 && line?.theyMayOwe == 50
        }

        // Alice asks for 30; Bob scans, sees the fee, confirms, gets the receipt; Alice hears.
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

        // Home and history.
        let home = HomeViewModel(wallet: bob)
        try await until([alice, bob], "balances settle") {
            await home.refresh()
            return home.balances == [Balance(currency: "EUR", total: -30)]
        }
        XCTAssertEqual(home.friends.map(\.id), [alice.id])
        let history = try await bob.history()
        XCTAssertTrue(history.contains { $0.kind == .paymentCompleted && $0.amount == -30 })
        await aliceOnBob.load()
        XCTAssertEqual(aliceOnBob.detail?.friend.lines.first?.balance, 30)

        // Settings: privacy, backup.
        let settings = SettingsViewModel(wallet: bob)
        await settings.load()
        XCTAssertEqual(settings.relay, relay)
        await settings.setPrivacy(.buckets)
        XCTAssertEqual(try bob.wallet.reportPrivacy(), .buckets)
        let backup = tempDir("bob.backup")
        try FileManager.default.createDirectory(atPath: (backup as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        await settings.backup(to: backup, keys: bobKeys)
        XCTAssertEqual(settings.backedUp, backup, settings.error ?? "")

        // Errors, each a sentence: a bad invitation, an unknown friend, over capacity.
        await bobAdd.scanned("hello")
        XCTAssertNotNil(bobAdd.error)
        do { _ = try await bob.accept(invitation: "hello", name: "Bob"); XCTFail("accepted nonsense") }
        catch let e as InviteError { guard case .NotOffst = e else { return XCTFail("\(e)") } }
        let stranger = String(relay.split(separator: "@")[0])
        do { try await alice.setLimit(friend: stranger, currency: "EUR", amount: 5); XCTFail("a stranger") }
        catch let e as FriendError {
            guard case .UnknownFriend = e else { return XCTFail("\(e)") }
            XCTAssertTrue(message(of: e).contains("not your friend"), message(of: e))
        }
        let big = try await alice.invoice(amount: 1000, currency: "EUR", memo: "a car")
        let payBig = PayViewModel(wallet: bob)
        await payBig.scanned(big.text)
        guard case .failed(let why) = payBig.stage else { return XCTFail("quoted over capacity") }
        XCTAssertTrue(why.contains("1000"), why)
        do { _ = try await bob.quote(big.text); XCTFail("over capacity") }
        catch let e as PayError { guard case .NoRoute = e else { return XCTFail("\(e)") } }

        await alice.shutdown()
        await bob.shutdown()
    }

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
