// The Android app's view models against the real library and relay: the screens' story
// (onboarding, add friend, friend detail, request, pay, home, settings) and their error texts.
// Run by bindings/tests/kotlin/WalletTest.kt's main, with the same check() and summary line.
import org.offst.app.viewmodels.*
import org.offst.ffi.*
import java.nio.file.Path
import kotlin.test.assertEquals
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue

fun viewModelChecks(relay: String, root: Path) {
    val carolKeys = TestKeyStore("carol's keystore")
    val daveKeys = TestKeyStore("dave's keystore")
    lateinit var carol: Wallet
    lateinit var dave: Wallet
    lateinit var carolAdd: AddFriendViewModel

    check("view models: onboarding asks for a relay, then creates; opening again is refused while open") {
        val onboarding = OnboardingViewModel(root.resolve("carol").toString(), carolKeys)
        onboarding.create()
        assertNull(onboarding.wallet.value)
        assertTrue(onboarding.error.value!!.contains("relay"), onboarding.error.value)
        onboarding.relay.value = relay
        onboarding.create()
        carol = assertNotNull(onboarding.wallet.value, onboarding.error.value)
        assertNull(onboarding.error.value)
        val twice = OnboardingViewModel(root.resolve("carol").toString(), carolKeys)
        twice.openExisting()
        assertNull(twice.wallet.value)
        assertTrue(twice.error.value!!.contains("in use"), twice.error.value)
        val d = OnboardingViewModel(root.resolve("dave").toString(), daveKeys)
        d.relay.value = relay
        d.create()
        dave = assertNotNull(d.wallet.value, d.error.value)
    }

    check("view models: add friend by code, and by request") {
        carolAdd = AddFriendViewModel(carol)
        carolAdd.myName.value = "Carol"
        carolAdd.showMyCode()
        val code = assertNotNull(carolAdd.invitation.value, carolAdd.error.value)
        val daveAdd = AddFriendViewModel(dave)
        daveAdd.myName.value = "Dave"
        daveAdd.scanned("not a code")
        assertNotNull(daveAdd.error.value)
        assertNull(daveAdd.added.value)
        daveAdd.scanned(code.uri)
        assertEquals(carol.id(), daveAdd.added.value?.id, daveAdd.error.value)
        until(dave, carol, what = "Dave's request reaches Carol") {
            kotlinx.coroutines.runBlocking { carolAdd.refreshRequests() }
            carolAdd.requests.value.any { it.id == dave.id() }
        }
        carolAdd.accept(carolAdd.requests.value.first { it.id == dave.id() })
        assertEquals(dave.id(), carolAdd.added.value?.id, carolAdd.error.value)
        assertTrue(carolAdd.requests.value.none { it.id == dave.id() })
    }

    check("view models: friend detail sets limits; bad input gets a sentence") {
        val carolOnDave = FriendDetailViewModel(carol, dave.id())
        carolOnDave.setLimit("lots", "EUR")
        assertEquals("lots is not a whole amount", carolOnDave.error.value)
        carolOnDave.setLimit("40", "EUR")
        assertNull(carolOnDave.error.value)
        val line = carolOnDave.detail.value?.friend?.lines?.single()
        assertTrue(line?.theyMayOwe == 40UL || line?.theyMayOwePending == 40UL, "in force or pending: $line")
        FriendDetailViewModel(dave, carol.id()).setLimit("40", "EUR")
        // A limit is a signed move: it shows once the channel has taken it (the friend may
        // hold the turn to move).
        until(carol, dave, what = "limits agreed") {
            kotlinx.coroutines.runBlocking { carolOnDave.load() }
            dave.friends().single().lines.singleOrNull()?.weMayOwe == 40UL &&
                carolOnDave.detail.value?.friend?.lines?.singleOrNull()?.theyMayOwe == 40UL
        }
        val unknown = FriendDetailViewModel(carol, relay.substringBefore('@'))
        unknown.load()
        assertTrue(unknown.error.value!!.contains("not your friend"), unknown.error.value)
    }

    check("view models: request, pay with progress, receipt, the seller hears, home shows it") {
        val req = RequestViewModel(carol)
        req.create("0", "EUR", "tea")
        assertTrue(req.error.value!!.contains("not an amount"), req.error.value)
        req.create("12", "EUR", "tea", 10UL)
        val invoice = assertNotNull(req.invoice.value, req.error.value)
        val pay = PayViewModel(dave)
        pay.scanned(invoice.uri)
        val quoted = pay.stage.value as PayViewModel.Stage.Quoted
        assertEquals(12UL, quoted.quote.request.amount)
        assertEquals("tea", quoted.quote.request.memo)
        pay.confirm()
        val paid = pay.stage.value
        assertTrue(paid is PayViewModel.Stage.Paid, "$paid ${pay.error.value}")
        assertEquals(12UL, paid.receipt.amount)
        val events = Events()
        carol.setEventListener(events)
        req.heard(events.waitFor(EventKind.INVOICE_PAID))
        assertTrue(req.paid.value)
        carol.setEventListener(null)
        val home = HomeViewModel(dave)
        until(carol, dave, what = "Dave's balance") {
            kotlinx.coroutines.runBlocking { home.refresh() }
            home.balances.value == listOf(Balance("EUR", -12L))
        }
        assertEquals(listOf(carol.id()), home.friends.value.map { it.id })
        // Over what the friends allow: the pay screen says why, in a sentence.
        val big = carol.createInvoice(500UL, "EUR", "", 10UL)
        val payBig = PayViewModel(dave)
        payBig.scanned(big.text)
        val failed = payBig.stage.value
        assertTrue(failed is PayViewModel.Stage.Failed && failed.why.contains("500"), "$failed")
        payBig.reset()
        assertEquals(PayViewModel.Stage.Scanning, payBig.stage.value)
    }

    check("view models: an offst: link shows what it asks and acts only when confirmed") {
        val tea = carol.createInvoice(5UL, "EUR", "link tea", 10UL)
        val before = dave.balances()
        val link = LinkViewModel(dave)
        link.opened(tea.uri)
        val ask = link.stage.value
        assertTrue(ask is LinkViewModel.Stage.ConfirmPayment, "$ask ${link.error.value}")
        assertEquals(5UL, ask.request.amount)
        assertEquals("link tea", ask.request.memo)
        // Opening it paid nothing: the payment needs the pay screen's confirm().
        assertEquals(before, dave.balances())
        assertEquals(PaymentStatus.OPEN, carol.payment(tea.id).status)
        link.decline()
        assertEquals(LinkViewModel.Stage.Idle, link.stage.value)
        // An invitation by link: Erin sees who invites, and becomes a friend on yes.
        val erinKeys = TestKeyStore("erin's keystore")
        val erin = createWallet(WalletConfig(root.resolve("erin").toString(), relay, 0UL, 0U), erinKeys)
        val invite = LinkViewModel(erin)
        invite.myName.value = "Erin"
        invite.opened(carol.invite("Carol", 1UL).uri)
        val who = invite.stage.value
        assertTrue(who is LinkViewModel.Stage.ConfirmFriend && who.name == "Carol", "$who")
        assertTrue(erin.friends().isEmpty())
        invite.acceptFriend()
        val added = invite.stage.value
        assertTrue(added is LinkViewModel.Stage.Added && added.friend.id == carol.id(), "$added ${invite.error.value}")
        // Not a link a wallet opens: a sentence, and nothing else.
        invite.opened("offst:nonsense")
        val refused = invite.stage.value
        assertTrue(refused is LinkViewModel.Stage.Refused && refused.why.isNotEmpty(), "$refused")
        erin.shutdown()
    }

    check("view models: settings show the relay, change privacy, back up") {
        val settings = SettingsViewModel(dave)
        settings.load()
        assertEquals(relay, settings.relay.value)
        settings.setPrivacy(ReportPrivacy.OFF)
        assertEquals(ReportPrivacy.OFF, dave.reportPrivacy())
        settings.setRelay("nonsense")
        assertNotNull(settings.error.value)
        assertEquals(relay, dave.relay())
        val file = root.resolve("dave.backup").toString()
        settings.backup(file, daveKeys)
        assertEquals(file, settings.backedUp.value, settings.error.value)
        carol.shutdown(); dave.shutdown()
    }
}
