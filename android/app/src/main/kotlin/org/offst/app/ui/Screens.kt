package org.offst.app.ui

import android.graphics.BitmapFactory
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.Image
import androidx.compose.foundation.clickable
import androidx.compose.foundation.layout.*
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.*
import androidx.compose.runtime.*
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.unit.dp
import androidx.navigation.NavController
import kotlinx.coroutines.launch
import org.offst.app.OffstApp
import org.offst.app.SyncService
import org.offst.app.viewmodels.*
import org.offst.ffi.*

@Composable
private fun ErrorLine(vm: BaseViewModel) {
    val error by vm.error.collectAsState()
    error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
}

@Composable
fun QrImage(png: ByteArray, modifier: Modifier = Modifier.size(260.dp)) {
    val bitmap = remember(png) { BitmapFactory.decodeByteArray(png, 0, png.size).asImageBitmap() }
    Image(bitmap, contentDescription = "QR code", modifier = modifier)
}

@Composable
fun OnboardingScreen(app: OffstApp) {
    val vm = remember { OnboardingViewModel(app.walletDir, app.keys) }
    val scope = rememberCoroutineScope()
    val relay by vm.relay.collectAsState()
    val wallet by vm.wallet.collectAsState()
    var scanning by remember { mutableStateOf(false) }
    LaunchedEffect(Unit) { vm.openExisting() }
    LaunchedEffect(wallet) { wallet?.let { app.opened(it) } }
    Column(Modifier.padding(24.dp), verticalArrangement = Arrangement.spacedBy(12.dp)) {
        Text("Offst", style = MaterialTheme.typography.headlineLarge)
        Text("Pay friends, and friends of friends, on the credit you give each other.")
        OutlinedTextField(relay, { vm.relay.value = it }, label = { Text("Relay (KEY@HOST:PORT)") })
        if (scanning) QrScanner { vm.relay.value = it; scanning = false }
        TextButton({ scanning = true }) { Text("Scan the relay's code") }
        Button({ scope.launch { vm.create() } }) { Text("Create my wallet") }
        // Restore: a backup chosen with the system picker, copied into the cache first.
        val pick = rememberLauncherForActivityResult(ActivityResultContracts.OpenDocument()) { uri ->
            if (uri == null) return@rememberLauncherForActivityResult
            val copy = app.cacheDir.resolve("restore.backup")
            app.contentResolver.openInputStream(uri)?.use { input -> copy.outputStream().use { input.copyTo(it) } }
            scope.launch { vm.restore(copy.path) }
        }
        OutlinedButton({ pick.launch(arrayOf("*/*")) }) { Text("Restore a backup") }
        ErrorLine(vm)
    }
}

@Composable
fun HomeScreen(wallet: Wallet, nav: NavController) {
    val vm = remember { HomeViewModel(wallet) }
    val balances by vm.balances.collectAsState()
    val friends by vm.friends.collectAsState()
    LaunchedEffect(Unit) { vm.refresh() }
    Column(Modifier.padding(16.dp)) {
        if (balances.isEmpty()) Text("Balance 0", style = MaterialTheme.typography.headlineMedium)
        balances.forEach { Text("${it.total} ${it.currency}", style = MaterialTheme.typography.headlineMedium) }
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button({ nav.navigate("pay") }) { Text("Pay") }
            Button({ nav.navigate("request") }) { Text("Request") }
            OutlinedButton({ nav.navigate("add") }) { Text("Add friend") }
            TextButton({ nav.navigate("settings") }) { Text("Settings") }
        }
        LazyColumn {
            items(friends) { f ->
                ListItem(
                    headlineContent = { Text(f.name.ifEmpty { f.id.take(8) }) },
                    supportingContent = { Text(f.lines.joinToString { "${it.balance} ${it.currency}" }) },
                    modifier = Modifier.clickable { nav.navigate("friend/${f.id}") },
                )
            }
        }
        ErrorLine(vm)
    }
}

@Composable
fun AddFriendScreen(wallet: Wallet, nav: NavController) {
    val vm = remember { AddFriendViewModel(wallet) }
    val scope = rememberCoroutineScope()
    val invitation by vm.invitation.collectAsState()
    val requests by vm.requests.collectAsState()
    val added by vm.added.collectAsState()
    val name by vm.myName.collectAsState()
    var scanning by remember { mutableStateOf(false) }
    LaunchedEffect(Unit) { vm.refreshRequests() }
    LaunchedEffect(added) { added?.let { nav.navigate("friend/${it.id}") } }
    Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        OutlinedTextField(name, { vm.myName.value = it }, label = { Text("Your name, as they will see it") })
        Button({ scope.launch { vm.showMyCode() } }) { Text("Show my code") }
        invitation?.let { QrImage(it.qrPng) }
        Button({ scanning = true }) { Text("Scan their code") }
        if (scanning) QrScanner { text -> scanning = false; scope.launch { vm.scanned(text) } }
        requests.forEach { r ->
            ListItem(
                headlineContent = { Text("${r.name} asks to be friends") },
                trailingContent = { TextButton({ scope.launch { vm.accept(r) } }) { Text("Accept") } },
            )
        }
        ErrorLine(vm)
    }
}

@Composable
fun FriendScreen(wallet: Wallet, id: String) {
    val vm = remember { FriendDetailViewModel(wallet, id) }
    val scope = rememberCoroutineScope()
    val detail by vm.detail.collectAsState()
    var limit by remember { mutableStateOf("") }
    var currency by remember { mutableStateOf("EUR") }
    LaunchedEffect(Unit) { vm.load() }
    Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        detail?.let { d ->
            Text(d.friend.name, style = MaterialTheme.typography.headlineMedium)
            d.friend.lines.forEach { l ->
                Text("${l.currency}: balance ${l.balance}")
                val pending = l.theyMayOwePending?.let { " ($it once your friend is online)" } ?: ""
                Text("They may owe you ${l.theyMayOwe}$pending; you may owe them ${l.weMayOwe}")
            }
            OutlinedTextField(limit, { limit = it }, label = { Text("They may owe you up to") })
            OutlinedTextField(currency, { currency = it }, label = { Text("Currency") })
            Button({ scope.launch { vm.setLimit(limit, currency) } }) { Text("Set limit") }
            LazyColumn { items(d.history) { h -> Text(h.detail) } }
        }
        ErrorLine(vm)
    }
}

@Composable
fun RequestScreen(app: OffstApp, wallet: Wallet) {
    val vm = remember { RequestViewModel(wallet) }
    val scope = rememberCoroutineScope()
    val invoice by vm.invoice.collectAsState()
    val paid by vm.paid.collectAsState()
    var amount by remember { mutableStateOf("") }
    var memo by remember { mutableStateOf("") }
    LaunchedEffect(Unit) { app.events.collect { vm.heard(it) } }
    Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        OutlinedTextField(amount, { amount = it }, label = { Text("Amount") })
        OutlinedTextField(memo, { memo = it }, label = { Text("What for") })
        Button({
            scope.launch {
                vm.create(amount, "EUR", memo)
                SyncService.keepOnline(app, 3_600)
            }
        }) { Text("Show the code") }
        invoice?.let { QrImage(it.qrPng) }
        if (paid) Text("Paid", style = MaterialTheme.typography.headlineMedium)
        ErrorLine(vm)
    }
}

/** Pay: scan a code, or (with [link]) the payment request an offst: link opened. Either way it
 *  pays only when the person presses Pay on the quote. */
@Composable
fun PayScreen(app: OffstApp, wallet: Wallet, link: String? = null) {
    val vm = remember { PayViewModel(wallet) }
    val scope = rememberCoroutineScope()
    val stage by vm.stage.collectAsState()
    LaunchedEffect(link) { if (link != null) vm.scanned(link) }
    Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        when (val s = stage) {
            is PayViewModel.Stage.Scanning -> QrScanner { text -> scope.launch { vm.scanned(text) } }
            is PayViewModel.Stage.Quoted -> {
                val q = s.quote
                Text("Pay ${q.request.amount} ${q.request.currency}", style = MaterialTheme.typography.headlineMedium)
                if (q.request.memo.isNotEmpty()) Text(q.request.memo)
                Text("Fees ${q.totalFee} over ${q.routes.size} route(s)")
                Button({
                    SyncService.keepOnline(app, 180)
                    scope.launch { vm.confirm() }
                }) { Text("Pay") }
                TextButton({ vm.reset() }) { Text("Cancel") }
            }
            is PayViewModel.Stage.Paying -> {
                CircularProgressIndicator()
                Text(
                    when (val last = s.steps.lastOrNull()) {
                        null -> "Finding routes"
                        is PayProgress.Sent -> "Sent over ${last.routes} route(s); waiting for the seller"
                        is PayProgress.Retried -> "A route was refused; trying ${last.routes} other route(s)"
                        is PayProgress.Waiting -> "Waiting for the seller and the mediators (${last.seconds} s)"
                    }
                )
            }
            is PayViewModel.Stage.Paid -> {
                Text("Paid ${s.receipt.amount}", style = MaterialTheme.typography.headlineMedium)
                SelectionContainerText("Receipt: ${s.receipt.text}")
                Button({ vm.reset() }) { Text("Done") }
            }
            is PayViewModel.Stage.Failed -> {
                Text(s.why, color = MaterialTheme.colorScheme.error)
                Button({ vm.reset() }) { Text("Scan again") }
            }
        }
    }
}

@Composable
private fun SelectionContainerText(text: String) {
    androidx.compose.foundation.text.selection.SelectionContainer { Text(text) }
}

@Composable
fun SettingsScreen(app: OffstApp, wallet: Wallet) {
    val vm = remember { SettingsViewModel(wallet) }
    val scope = rememberCoroutineScope()
    val relay by vm.relay.collectAsState()
    val privacy by vm.privacy.collectAsState()
    val backedUp by vm.backedUp.collectAsState()
    var newRelay by remember { mutableStateOf("") }
    LaunchedEffect(Unit) { vm.load() }
    Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        Text("Relay: ${relay ?: "none"}")
        OutlinedTextField(newRelay, { newRelay = it }, label = { Text("New relay (KEY@HOST:PORT)") })
        Button({ scope.launch { vm.setRelay(newRelay) } }) { Text("Move to this relay") }
        Text("What the relay's index is told about your channels")
        Row {
            ReportPrivacy.entries.forEach { p ->
                FilterChip(privacy == p, { scope.launch { vm.setPrivacy(p) } }, label = { Text(p.name.lowercase()) })
            }
        }
        Button({
            val file = app.getExternalFilesDir(null)?.resolve("offst.backup")?.path ?: return@Button
            scope.launch { vm.backup(file, app.keys) }
        }) { Text("Back up") }
        backedUp?.let { Text("Backup written to $it. Keep it somewhere else; it opens only with this phone's key.") }
        ErrorLine(vm)
    }
}

/** An offst: link from another app, a web page or an NFC tag: what it asks, then yes or no. */
@Composable
fun LinkScreen(app: OffstApp, wallet: Wallet, uri: String, nav: NavController) {
    val vm = remember(uri) { LinkViewModel(wallet) }
    val scope = rememberCoroutineScope()
    val stage by vm.stage.collectAsState()
    val name by vm.myName.collectAsState()
    LaunchedEffect(uri) { vm.opened(uri) }
    when (val s = stage) {
        is LinkViewModel.Stage.Idle -> CircularProgressIndicator(Modifier.padding(16.dp))
        is LinkViewModel.Stage.ConfirmPayment -> PayScreen(app, wallet, link = s.uri)
        is LinkViewModel.Stage.ConfirmFriend -> Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
            Text("${s.name} invites you to be friends", style = MaterialTheme.typography.headlineMedium)
            Text(s.inviter)
            OutlinedTextField(name, { vm.myName.value = it }, label = { Text("Your name, as they will see it") })
            Button({ scope.launch { vm.acceptFriend() } }) { Text("Accept") }
            TextButton({ vm.decline(); nav.navigate("home") }) { Text("No, thanks") }
        }
        is LinkViewModel.Stage.Added -> Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
            Text("You and ${s.friend.name} are friends", style = MaterialTheme.typography.headlineMedium)
            Button({ nav.navigate("friend/${s.friend.id}") }) { Text("Set how much they may owe you") }
        }
        is LinkViewModel.Stage.Refused -> Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
            Text(s.why, color = MaterialTheme.colorScheme.error)
            Button({ nav.navigate("home") }) { Text("Back") }
        }
    }
}
