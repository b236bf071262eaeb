package org.offst.app

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.Service
import android.content.Context
import android.content.Intent
import android.content.pm.ServiceInfo
import android.os.Build
import android.os.IBinder
import kotlinx.coroutines.Job
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch

/**
 * Keeps the wallet online while payments are in flight: a payment needs the payer (and each
 * mediator) online until it commits or is cancelled. Started when a payment starts or an
 * invoice is shown; stops itself once nothing is pending and the outbox reached the relay.
 */
class SyncService : Service() {
    private var job: Job? = null

    override fun onBind(intent: Intent?): IBinder? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        val nm = getSystemService(NotificationManager::class.java)
        nm.createNotificationChannel(
            NotificationChannel("sync", getString(R.string.sync_channel), NotificationManager.IMPORTANCE_LOW)
        )
        val n = Notification.Builder(this, "sync")
            .setContentTitle(getString(R.string.app_name))
            .setContentText(getString(R.string.sync_text))
            .setSmallIcon(android.R.drawable.stat_notify_sync)
            .build()
        if (Build.VERSION.SDK_INT >= 29) startForeground(1, n, ServiceInfo.FOREGROUND_SERVICE_TYPE_DATA_SYNC)
        else startForeground(1, n)
        val app = application as OffstApp
        job?.cancel()
        job = app.scope.launch {
            // The wallet's own driver does the work; this keeps the process alive for it.
            // Stay while asked (a payment screen open) and at least until in sync.
            val until = System.currentTimeMillis() + (intent?.getLongExtra("seconds", 120L) ?: 120L) * 1000
            while (System.currentTimeMillis() < until) {
                try { app.wallet.value?.sync(30UL) } catch (_: Exception) {}
                delay(5_000)
            }
            stopSelf()
        }
        return START_NOT_STICKY
    }

    override fun onDestroy() {
        job?.cancel()
        super.onDestroy()
    }

    companion object {
        /** Stay online for [seconds] (a payment in flight, an invoice waiting to be paid). */
        fun keepOnline(context: Context, seconds: Long) {
            context.startForegroundService(Intent(context, SyncService::class.java).putExtra("seconds", seconds))
        }
    }
}
