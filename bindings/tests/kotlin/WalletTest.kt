// The wallet through its Kotlin bindings, as the Android app uses it: two wallets and a real
// relay on loopback (started by scripts/test-bindings.sh, given in OFFST_TEST_RELAY). No JUnit
// here (no Maven); each check prints ok or FAIL, and the last line is "N passed, N failed".
import org.offst.ffi.*
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.delay
import java.nio.file.Files
import java.security.MessageDigest
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlin.test.assertNotNull
import kotlin.test.assertNotEquals

var passed = 0
var failed = 0

fun check(name: String, body: suspend () -> Unit) {
    try {
        runBlocking { withTimeout(120_000) { body() } }
        passed++
        println("ok   $name")
    } catch (t: Throwable) {
        failed++
        println("FAIL $name: $t")
        t.printStackTrace()
    }
}

/** A stand-in for the Android Keystore: a secret that never leaves this object. */
class TestKeyStore(private val secret: String) : KeyStore {
    var calls = 0
    override fun key(salt: ByteArray): ByteArray {
        calls++
        val md = MessageDigest.getInstance("SHA-256")
        md.update(secret.toByteArray())
        md.update(salt)
        return md.digest()
    }
}

/** A key store that is locked (the user cancelled the prompt). */
class LockedKeyStore : KeyStore {
    override fun key(salt: ByteArray): ByteArray =
        throw KeyStoreException.Unavailable("the user cancelled the fingerprint prompt")
}

class Lines : Logger {
    val lines = CopyOnWriteArrayList<String>()
    override fun log(level: LogLevel, target: String, message: String) {
        lines.add("$level $target $message")
    }
}

class Events : EventListener {
    val queue = LinkedBlockingQueue<HistoryItem>()
    override fun onEvent(event: HistoryItem) { queue.add(event) }
    fun waitFor(kind: EventKind, seconds: Long = 60): HistoryItem {
        val end = System.nanoTime() + seconds * 1_000_000_000
        while (System.nanoTime() < end) {
            val e = queue.poll(200, TimeUnit.MILLISECONDS) ?: continue
            if (e.kind == kind) return e
        }
        throw AssertionError("no $kind event within $seconds s")
    }
}

class Steps : PayListener {
    val steps = CopyOnWriteArrayList<PayProgress>()
    override fun onProgress(progress: PayProgress) { steps.add(progress) }
}

/** Sync both until `cond` holds (friends' messages cross the relay). */
suspend fun until(vararg ws: Wallet, what: String, cond: () -> Boolean) {
    repeat(60) {
        for (w in ws) w.sync(30UL)
        if (cond()) return
        delay(250)
    }
    throw AssertionError("not within 60 rounds: $what")
}

fun main() {
    val relay = System.getenv("OFFST_TEST_RELAY") ?: error("set OFFST_TEST_RELAY to KEY@HOST:PORT")
    val root = Files.createTempDirectory("offst-kotlin")
    fun config(name: String) = WalletConfig(root.resolve(name).toString(), relay, 0UL, 0U)
    val logs = Lines()
    setLogger(logs, LogLevel.INFO)
    val aliceKeys = TestKeyStore("alice's keystore secret")
    val bobKeys = passphraseKeyStore("bob's passphrase")
    lateinit var alice: Wallet
    lateinit var bob: Wallet
    val aliceEvents = Events()
    lateinit var request: String
    lateinit var receipt: Receipt

    check("create two wallets on the relay") {
        assertTrue(version().isNotEmpty())
        alice = createWallet(config("alice"), aliceKeys)
        bob = createWallet(config("bob"), bobKeys)
        assertTrue(aliceKeys.calls > 0, "the foreign key store was asked for the key")
        assertEquals(relay, alice.relay())
        assertTrue(alice.id() != bob.id())
        alice.sync(30UL)
        assertEquals(Connection.Connected, alice.connection())
        assertTrue(logs.lines.any { it.contains("connected to the relay") }, "logs reach the Logger: ${logs.lines}")
    }

    check("invitation and acceptance") {
        val inv = alice.invite("Alice", 24UL)
        assertTrue(inv.text.startsWith("OFFSTI1"), inv.text)
        assertEquals("offst:" + inv.text, inv.uri)
        assertEquals(alice.id(), inv.inviter)
        assertTrue(inv.qrSvg.contains("<svg"), "an SVG QR code")
        assertEquals(listOf<Byte>(0x89.toByte(), 'P'.code.toByte(), 'N'.code.toByte(), 'G'.code.toByte()),
            inv.qrPng.take(4), "a PNG QR code")
        val friend = bob.acceptInvitation(inv.text, "Bob")
        assertEquals(alice.id(), friend.id)
        assertEquals("Alice", friend.name)
        until(bob, alice, what = "alice sees bob's request") { alice.friendRequests().any { it.id == bob.id() } }
        val req = alice.friendRequests().first { it.id == bob.id() }
        assertEquals("Bob", req.name)
        alice.acceptFriendRequest(bob.id(), "Alice")
        assertEquals(listOf(bob.id()), alice.friends().map { it.id })
        assertEquals(listOf(alice.id()), bob.friends().map { it.id })
    }

    check("events: waiting ones through nextEvent, then a listener") {
        // The friend request is waiting in alice's queue.
        var e = alice.nextEvent()
        while (e.kind != EventKind.FRIEND_REQUESTED) { alice.eventHandled(e.seq); e = alice.nextEvent() }
        assertEquals(bob.id(), e.friend)
        alice.eventHandled(e.seq)
        alice.setEventListener(aliceEvents)
    }

    check("limits both ways") {
        alice.setLimit(bob.id(), "EUR", 100UL)
        bob.setLimit(alice.id(), "EUR", 50UL)
        until(alice, bob, what = "both limits agreed") {
            val b = bob.friends().single().lines.singleOrNull()
            val a = alice.friends().single().lines.singleOrNull()
            b != null && a != null && b.weMayOwe == 100UL && b.theyMayOwe == 50UL && a.theyMayOwe == 100UL && a.weMayOwe == 50UL
        }
        val detail = alice.friend(bob.id(), 10U)
        assertEquals(0L, detail.friend.lines.single().balance)
        assertTrue(detail.history.any { it.kind == EventKind.LIMIT_SET }, "${detail.history}")
    }

    check("invoice, quote, pay, the payer's receipt and the payee's event") {
        val invoice = alice.createInvoice(30UL, "EUR", "coffee", 10UL)
        request = invoice.text
        assertTrue(request.startsWith("OFFSTP1"), request)
        assertTrue(invoice.qrPng.size > 100 && invoice.qrSvg.contains("<svg"))
        val info = readPaymentRequest(request)
        assertEquals(30UL, info.amount)
        assertEquals("coffee", info.memo)
        assertEquals(alice.id(), info.seller)
        val quote = bob.quote(request, 4U.toUByte())
        assertEquals(1, quote.routes.size)
        assertEquals(0UL, quote.totalFee)
        assertEquals(0U, quote.routes.single().mediators)
        val steps = Steps()
        receipt = bob.pay(request, 4U.toUByte(), 60UL, steps)
        assertEquals(30UL, receipt.amount)
        assertEquals(alice.id(), receipt.seller)
        assertEquals(invoice.id, receipt.invoiceId)
        assertTrue(steps.steps.any { it is PayProgress.Sent }, "progress: ${steps.steps}")
        assertEquals(receipt, verifyReceipt(receipt.text))
        val paid = aliceEvents.waitFor(EventKind.INVOICE_PAID)
        assertEquals(invoice.id, paid.invoiceId)
        val mine = bob.payment(invoice.id)
        assertEquals(PaymentRole.BUYER, mine.role)
        assertEquals(PaymentStatus.COMPLETED, mine.status)
        assertEquals(receipt, mine.receipt)
        assertTrue(mine.history.any { it.kind == EventKind.PAYMENT_COMPLETED })
        val theirs = alice.payment(invoice.id)
        assertEquals(PaymentRole.SELLER, theirs.role)
        assertEquals(PaymentStatus.PAID, theirs.status)
        assertFailsWith<PayException.BadRequest> { bob.payment("coffee") }
        assertFailsWith<PayException.Refused> { bob.payment("00".repeat(32)) }
        assertFailsWith<PayException.Refused> { bob.abandonPayment(invoice.id) } // committed
        until(alice, bob, what = "balances settle") {
            alice.balances() == listOf(Balance("EUR", 30L)) && bob.balances() == listOf(Balance("EUR", -30L))
        }
    }

    check("history") {
        val h = bob.history(50U, null)
        assertTrue(h.any { it.kind == EventKind.PAYMENT_COMPLETED && it.amount == -30L }, "$h")
        assertTrue(h.zipWithNext().all { (a, b) -> a.seq > b.seq }, "newest first")
        val older = bob.history(2U, h.first().seq)
        assertTrue(older.all { it.seq < h.first().seq })
        assertTrue(alice.history(50U, null).any { it.kind == EventKind.INVOICE_PAID })
    }

    check("a bad invitation") {
        val good = alice.invite("Alice", 1UL).text
        assertFailsWith<InviteException.NotOffst> { bob.acceptInvitation("hello", "Bob") }
        // Change the third character from the end to another one (it always differs).
        val damaged = good.dropLast(3) + (if (good[good.length - 3] == 'A') "B" else "A") + good.takeLast(2)
        assertNotEquals(good, damaged)
        val e = assertFailsWith<InviteException> { bob.acceptInvitation(damaged, "Bob") }
        assertTrue(e is InviteException.Damaged || e is InviteException.Forged, "$e")
        assertFailsWith<InviteException.WrongKind> { bob.acceptInvitation(request, "Bob") }
        assertFailsWith<InviteException.Invalid> { bob.acceptInvitation(good, "Bob") } // already friends
        assertEquals(1, bob.friends().size)
    }

    check("an unknown friend") {
        val stranger = relay.substringBefore('@') // a real key, of no friend
        val e = assertFailsWith<FriendException.UnknownFriend> { alice.setLimit(stranger, "EUR", 10UL) }
        assertTrue(e.message!!.contains("not your friend"), e.message)
        assertFailsWith<FriendException.BadId> { alice.setLimit("carol", "EUR", 10UL) }
        assertFailsWith<FriendException.UnknownFriend> { alice.friend(stranger, 5U) }
        val none = assertFailsWith<FriendException.UnknownFriend> { alice.acceptFriendRequest(stranger, "Alice") }
        assertTrue(none.message!!.contains("no friend request"), none.message)
    }

    check("an amount over capacity") {
        // bob may owe alice 100 and owes 30: 70 is left.
        val big = alice.createInvoice(1_000UL, "EUR", "a car", 10UL).text
        val e = assertFailsWith<PayException.NoRoute> { bob.quote(big, 4U.toUByte()) }
        assertTrue(e.message!!.contains("1000"), e.message)
        assertFailsWith<PayException.NoRoute> { bob.pay(big, 4U.toUByte(), 30UL, null) }
        assertEquals(listOf(Balance("EUR", -30L)), bob.balances())
        assertFailsWith<PayException.BadRequest> { bob.quote("OFFSTP1AAAA", 4U.toUByte()) }
    }

    check("a wrong key, a locked key store, a wallet in use, then the right key") {
        val again = config("alice")
        assertFailsWith<WalletException.InUse> { openWallet(again, aliceKeys) }
        alice.setEventListener(null)
        alice.shutdown()
        alice.destroy()
        val wrong = assertFailsWith<WalletException.WrongKey> { openWallet(again, TestKeyStore("a guess")) }
        assertTrue(wrong.message!!.contains("wrong key"), wrong.message)
        assertFailsWith<WalletException.KeyStore> { openWallet(again, LockedKeyStore()) }
        assertFailsWith<WalletException.NotFound> { openWallet(config("nobody"), aliceKeys) }
        assertFailsWith<WalletException.BadConfig> {
            createWallet(WalletConfig(root.resolve("x").toString(), "not-a-relay", 0UL, 0U), aliceKeys)
        }
        alice = openWallet(again, aliceKeys)
        assertEquals(listOf(Balance("EUR", 30L)), alice.balances())
        assertEquals(listOf(bob.id()), alice.friends().map { it.id })
    }

    check("backup and restore") {
        val file = root.resolve("bob.backup").toString()
        bob.backup(file, bobKeys)
        bob.shutdown()
        bob.destroy()
        val restored = restoreWallet(config("bob-restored"), file, bobKeys)
        assertEquals(listOf(Balance("EUR", -30L)), restored.balances())
        restored.shutdown()
        restored.destroy()
    }

    runBlocking { alice.shutdown() }
    viewModelChecks(relay, root)
    // The wallets' files go with the run, so repeated runs do not fill the disk.
    root.toFile().deleteRecursively()
    println("$passed passed, $failed failed")
    if (failed > 0) kotlin.system.exitProcess(1)
}
