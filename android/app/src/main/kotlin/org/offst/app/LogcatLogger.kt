package org.offst.app

import android.util.Log
import org.offst.ffi.LogLevel
import org.offst.ffi.Logger

/** The library's logs in logcat, tagged "offst". */
class LogcatLogger : Logger {
    override fun log(level: LogLevel, target: String, message: String) {
        val line = "$target: $message"
        when (level) {
            LogLevel.ERROR -> Log.e("offst", line)
            LogLevel.WARN -> Log.w("offst", line)
            LogLevel.INFO -> Log.i("offst", line)
            LogLevel.DEBUG -> Log.d("offst", line)
        }
    }
}
