package org.offst.app

import android.content.Intent
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.material3.MaterialTheme
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.navigation.compose.NavHost
import androidx.navigation.compose.composable
import androidx.navigation.compose.rememberNavController
import kotlinx.coroutines.flow.MutableStateFlow
import org.offst.app.ui.*

/** One activity; each screen draws a view model from android/viewmodels. An offst: link (the
 *  intent filter in the manifest) opens the link screen, which asks before it acts. */
class MainActivity : ComponentActivity() {
    /** The offst: link this activity was opened with, until it is shown. */
    private val link = MutableStateFlow<String?>(null)

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val app = application as OffstApp
        link.value = intent?.data?.toString()
        setContent {
            MaterialTheme {
                val wallet by app.wallet.collectAsState()
                val opened by link.collectAsState()
                val nav = rememberNavController()
                val w = wallet
                if (w == null) {
                    OnboardingScreen(app)
                } else {
                    NavHost(nav, startDestination = "home") {
                        composable("link") { opened?.let { LinkScreen(app, w, it, nav) } }
                        composable("home") { HomeScreen(w, nav) }
                        composable("add") { AddFriendScreen(w, nav) }
                        composable("friend/{id}") { FriendScreen(w, it.arguments?.getString("id") ?: "") }
                        composable("request") { RequestScreen(app, w) }
                        composable("pay") { PayScreen(app, w) }
                        composable("settings") { SettingsScreen(app, w) }
                    }
                    LaunchedEffect(opened) { if (opened != null) nav.navigate("link") }
                }
            }
        }
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        intent.data?.let { link.value = it.toString() }
    }
}
