// The app's screens as plain Kotlin: state as StateFlows, and suspend actions that change it.
// The Compose screens (android/app) only draw the state and launch the actions; the JVM suite
// (bindings/tests/kotlin, android/viewmodels/src/test) runs these against the real library.
package org.offst.app.viewmodels

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.withContext
import org.offst.ffi.*

/** State every screen has: busy, and the last failure as a sentence for people. */
abstract class BaseViewModel {
    protected val _error = MutableStateFlow<String?>(null)
    val error: StateFlow<String?> = _error
    private val _busy = MutableStateFlow(false)
    val busy: StateFlow<Boolean> = _busy

    /** Run [body] off the main thread; a failure lands in [error]. */
    protected suspend fun <T> run(body: suspend () -> T): T? {
        _busy.value = true
        return try {
            val r = withContext(Dispatchers.IO) { body() }
            _error.value = null
            r
        } catch (e: Exception) {
            _error.value = e.message ?: e.toString()
            null
        } finally {
            _busy.value = false
        }
    }
}

/** A whole amount above 0, as typed by a person; null if it is not one. */
fun parseAmount(text: String): ULong? = text.trim().toULongOrNull()?.takeIf { it > 0UL }

/** Onboarding: create a wallet or restore one, with a relay. */
class OnboardingViewModel(private val dir: String, private val keys: KeyStore) : BaseViewModel() {
    val relay = MutableStateFlow("")
    private val _wallet = MutableStateFlow<Wallet?>(null)
    val wallet: StateFlow<Wallet?> = _wallet

    suspend fun openExisting() {
        _wallet.value = run { openWallet(WalletConfig(dir, null, 0UL, 0U), keys) }
    }

    suspend fun create() {
        if (relay.value.isBlank()) {
            _error.value = "pick a relay first: paste or scan its KEY@HOST:PORT"
            return
        }
        _wallet.value = run { createWallet(WalletConfig(dir, relay.value.trim(), 0UL, 0U), keys) }
    }

    suspend fun restore(backupPath: String) {
        _wallet.value = run { restoreWallet(WalletConfig(dir, null, 0UL, 0U), backupPath, keys) }
    }
}

/** Home: the total balance per currency and the friends. */
class HomeViewModel(private val wallet: Wallet) : BaseViewModel() {
    private val _balances = MutableStateFlow<List<Balance>>(emptyList())
    val balances: StateFlow<List<Balance>> = _balances
    private val _friends = MutableStateFlow<List<Friend>>(emptyList())
    val friends: StateFlow<List<Friend>> = _friends

    suspend fun refresh() {
        run { wallet.balances() to wallet.friends() }?.let { (b, f) ->
            _balances.value = b
            _friends.value = f
        }
    }
}

/** Add a friend: show my code, accept a scanned one, or a request that came in. */
class AddFriendViewModel(private val wallet: Wallet) : BaseViewModel() {
    val myName = MutableStateFlow("")
    private val _invitation = MutableStateFlow<Invitation?>(null)
    val invitation: StateFlow<Invitation?> = _invitation
    private val _requests = MutableStateFlow<List<FriendRequest>>(emptyList())
    val requests: StateFlow<List<FriendRequest>> = _requests
    private val _added = MutableStateFlow<Friend?>(null)
    val added: StateFlow<Friend?> = _added

    suspend fun showMyCode(hours: ULong = 72UL) {
        _invitation.value = run { wallet.invite(myName.value, hours) }
    }

    /** A QR code was scanned (or text pasted, or an offst: link opened). */
    suspend fun scanned(text: String) {
        _added.value = run { wallet.acceptInvitation(text, myName.value) }
    }

    suspend fun refreshRequests() {
        run { wallet.friendRequests() }?.let { _requests.value = it }
    }

    suspend fun accept(request: FriendRequest) {
        _added.value = run { wallet.acceptFriendRequest(request.id, myName.value) }
        refreshRequests()
    }
}

/** One friend: the limits both ways, the balance, history; change how much they may owe. */
class FriendDetailViewModel(private val wallet: Wallet, private val friendId: String) : BaseViewModel() {
    private val _detail = MutableStateFlow<FriendDetail?>(null)
    val detail: StateFlow<FriendDetail?> = _detail

    suspend fun load() {
        run { wallet.friend(friendId, 20U) }?.let { _detail.value = it }
    }

    /** [amount] as typed. */
    suspend fun setLimit(amount: String, currency: String) {
        val a = amount.trim().toULongOrNull()
        if (a == null) {
            _error.value = "$amount is not a whole amount"
            return
        }
        if (run { wallet.setLimit(friendId, currency, a) } != null) load()
    }
}

/** Request a payment: an invoice with its QR code; says when it is paid. */
class RequestViewModel(private val wallet: Wallet) : BaseViewModel() {
    private val _invoice = MutableStateFlow<Invoice?>(null)
    val invoice: StateFlow<Invoice?> = _invoice
    private val _paid = MutableStateFlow(false)
    val paid: StateFlow<Boolean> = _paid

    suspend fun create(amount: String, currency: String, memo: String, minutes: ULong = 60UL) {
        val a = parseAmount(amount)
        if (a == null) {
            _error.value = "$amount is not an amount: type a whole number above 0"
            return
        }
        _paid.value = false
        _invoice.value = run { wallet.createInvoice(a, currency, memo, minutes) }
    }

    /** An event arrived (from the app's event loop): is it our invoice, paid? */
    fun heard(event: HistoryItem) {
        if (event.kind == EventKind.INVOICE_PAID && event.invoiceId != null && event.invoiceId == _invoice.value?.id) {
            _paid.value = true
        }
    }
}

/** Pay: scan, see routes and fees, confirm, follow the progress, get the receipt. */
class PayViewModel(private val wallet: Wallet) : BaseViewModel() {
    sealed class Stage {
        object Scanning : Stage()
        data class Quoted(val quote: PaymentQuote) : Stage()
        data class Paying(val steps: List<PayProgress>) : Stage()
        data class Paid(val receipt: Receipt) : Stage()
        data class Failed(val why: String) : Stage()
    }

    private val _stage = MutableStateFlow<Stage>(Stage.Scanning)
    val stage: StateFlow<Stage> = _stage
    private var request = ""

    /** A code was scanned: read it, then ask for the routes and fees. */
    suspend fun scanned(text: String) {
        request = text
        val q = run { wallet.quote(text, 8U.toUByte()) }
        _stage.value = if (q != null) Stage.Quoted(q) else Stage.Failed(error.value ?: "")
    }

    /** The person confirmed. */
    suspend fun confirm() {
        if (_stage.value !is Stage.Quoted) return
        val steps = java.util.concurrent.CopyOnWriteArrayList<PayProgress>()
        _stage.value = Stage.Paying(emptyList())
        val listener = object : PayListener {
            override fun onProgress(progress: PayProgress) {
                steps.add(progress)
                _stage.value = Stage.Paying(steps.toList())
            }
        }
        val r = run { wallet.pay(request, 8U.toUByte(), 120UL, listener) }
        _stage.value = if (r != null) Stage.Paid(r) else Stage.Failed(error.value ?: "")
    }

    fun reset() {
        _stage.value = Stage.Scanning
        _error.value = null
    }
}

/**
 * An offst: link opened from another app, a web page or an NFC tag (the Android intent
 * filter): read it, show what it asks, and act only when the person confirms. A payment
 * request goes on to [PayViewModel], which shows the routes and fees and pays on confirm();
 * an invitation is accepted by [acceptFriend]. Nothing happens on opening alone.
 */
class LinkViewModel(private val wallet: Wallet) : BaseViewModel() {
    sealed class Stage {
        object Idle : Stage()
        data class ConfirmFriend(val uri: String, val inviter: String, val name: String) : Stage()
        data class ConfirmPayment(val uri: String, val request: PaymentRequestInfo) : Stage()
        data class Added(val friend: Friend) : Stage()
        data class Refused(val why: String) : Stage()
    }

    val myName = MutableStateFlow("")
    private val _stage = MutableStateFlow<Stage>(Stage.Idle)
    val stage: StateFlow<Stage> = _stage

    suspend fun opened(uri: String) {
        _stage.value = when (val link = run { readLink(uri) }) {
            is OffstLink.Invitation -> Stage.ConfirmFriend(uri, link.inviter, link.name)
            is OffstLink.PaymentRequest -> Stage.ConfirmPayment(uri, link.request)
            null -> Stage.Refused(error.value ?: "")
        }
    }

    /** The person said yes to the invitation. */
    suspend fun acceptFriend() {
        val s = _stage.value as? Stage.ConfirmFriend ?: return
        val f = run { wallet.acceptInvitation(s.uri, myName.value) }
        _stage.value = if (f != null) Stage.Added(f) else Stage.Refused(error.value ?: "")
    }

    /** The person said no (or went back). */
    fun decline() {
        _stage.value = Stage.Idle
        _error.value = null
    }
}

/** Settings: the relay, what the index is told, backup. */
class SettingsViewModel(private val wallet: Wallet) : BaseViewModel() {
    private val _relay = MutableStateFlow<String?>(null)
    val relay: StateFlow<String?> = _relay
    private val _privacy = MutableStateFlow(ReportPrivacy.EXACT)
    val privacy: StateFlow<ReportPrivacy> = _privacy
    private val _backedUp = MutableStateFlow<String?>(null)
    val backedUp: StateFlow<String?> = _backedUp

    suspend fun load() {
        run { wallet.relay() to wallet.reportPrivacy() }?.let { (r, p) ->
            _relay.value = r
            _privacy.value = p
        }
    }

    suspend fun setRelay(text: String) {
        if (run { wallet.setRelay(text) } != null) load()
    }

    suspend fun setPrivacy(p: ReportPrivacy) {
        if (run { wallet.setReportPrivacy(p) } != null) _privacy.value = p
    }

    suspend fun backup(path: String, keys: KeyStore) {
        if (run { wallet.backup(path, keys) } != null) _backedUp.value = path
    }
}
