package org.offst.app

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.material3.MaterialTheme
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.navigation.compose.NavHost
import androidx.navigation.compose.composable
import androidx.navigation.compose.rememberNavController
import org.offst.app.ui.*

/** One activity; each screen draws a view model from android/viewmodels. */
class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val app = application as OffstApp
        setContent {
            MaterialTheme {
                val wallet by app.wallet.collectAsState()
                val nav = rememberNavController()
                val w = wallet
                if (w == null) {
                    OnboardingScreen(app)
                } else {
                    NavHost(nav, startDestination = "home") {
                        composable("home") { HomeScreen(w, nav) }
                        composable("add") { AddFriendScreen(w, nav) }
                        composable("friend/{id}") { FriendScreen(w, it.arguments?.getString("id") ?: "") }
                        composable("request") { RequestScreen(app, w) }
                        composable("pay") { PayScreen(app, w) }
                        composable("settings") { SettingsScreen(app, w) }
                    }
                }
            }
        }
    }
}
