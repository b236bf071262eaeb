package org.offst.app

import android.app.Application
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.launch
import org.offst.ffi.HistoryItem
import org.offst.ffi.LogLevel
import org.offst.ffi.Wallet
import org.offst.ffi.setLogger
import kotlinx.coroutines.flow.MutableSharedFlow

/** The process: one wallet, its events for the screens, logs to logcat. */
class OffstApp : Application() {
    val scope = CoroutineScope(SupervisorJob())
    val wallet = MutableStateFlow<Wallet?>(null)
    /** Every event as it happens (the screens filter what they care about). */
    val events = MutableSharedFlow<HistoryItem>(extraBufferCapacity = 64)
    val keys by lazy { AndroidKeystoreKeys() }
    val walletDir: String get() = filesDir.resolve("wallet").path

    override fun onCreate() {
        super.onCreate()
        setLogger(LogcatLogger(), LogLevel.INFO)
    }

    /** The wallet is open: hand its events to the screens, one at a time, each marked handled. */
    fun opened(w: Wallet) {
        wallet.value = w
        scope.launch {
            while (true) {
                val e = try { w.nextEvent() } catch (_: Exception) { return@launch }
                events.emit(e)
                w.eventHandled(e.seq)
            }
        }
    }
}
