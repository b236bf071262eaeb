import SwiftUI
import UIKit
import OffstKit

/// A QR code from the library's PNG bytes.
struct QRImage: View {
    let png: Data
    var body: some View {
        if let image = UIImage(data: png) {
            Image(uiImage: image).interpolation(.none).resizable().scaledToFit().frame(width: 260, height: 260)
        }
    }
}

struct ErrorLine: View {
    let error: String?
    var body: some View { if let e = error { Text(e).foregroundColor(.red) } }
}

struct OnboardingView: View {
    @ObservedObject var app: AppModel
    @StateObject private var m: Observed<OnboardingViewModel>
    @State private var scanning = false
    @State private var restoring = false

    init(app: AppModel) {
        self.app = app
        _m = StateObject(wrappedValue: Observed(OnboardingViewModel(dir: app.dir, keys: app.keys)))
    }

    var body: some View {
        Form {
            Section {
                Text("Pay friends, and friends of friends, on the credit you give each other.")
                TextField("Relay (KEY@HOST:PORT)", text: Binding(get: { m.vm.relay }, set: { m.vm.relay = $0 }))
                Button("Scan the relay's code") { scanning = true }
                Button("Create my wallet") { Task { await m.vm.create(); done() } }
                Button("Restore a backup") { restoring = true }
            }
            ErrorLine(error: m.vm.error)
        }
        .task { await m.vm.openExisting(); done() }
        .sheet(isPresented: $scanning) { QRScannerView { m.vm.relay = $0; scanning = false } }
        .fileImporter(isPresented: $restoring, allowedContentTypes: [.data]) { result in
            guard case .success(let url) = result else { return }
            Task { await m.vm.restore(backup: url.path); done() }
        }
    }

    private func done() { if let w = m.vm.wallet { app.opened(w) } }
}

struct HomeView: View {
    @ObservedObject var app: AppModel
    let wallet: OffstWallet
    @StateObject private var m: Observed<HomeViewModel>

    init(app: AppModel, wallet: OffstWallet) {
        self.app = app
        self.wallet = wallet
        _m = StateObject(wrappedValue: Observed(HomeViewModel(wallet: wallet)))
    }

    var body: some View {
        NavigationView {
            List {
                Section {
                    if m.vm.balances.isEmpty { Text("Balance 0").font(.largeTitle) }
                    ForEach(m.vm.balances, id: \.currency) { Text("\($0.total) \($0.currency)").font(.largeTitle) }
                }
                Section("Friends") {
                    ForEach(m.vm.friends, id: \.id) { f in
                        NavigationLink(destination: FriendView(wallet: wallet, id: f.id)) {
                            VStack(alignment: .leading) {
                                Text(f.name.isEmpty ? String(f.id.prefix(8)) : f.name)
                                Text(f.lines.map { "\($0.balance) \($0.currency)" }.joined(separator: ", ")).font(.caption)
                            }
                        }
                    }
                }
                ErrorLine(error: m.vm.error)
            }
            .navigationTitle("Offst")
            .toolbar {
                NavigationLink("Pay", destination: PayView(wallet: wallet))
                NavigationLink("Request", destination: RequestView(app: app, wallet: wallet))
                NavigationLink("Add friend", destination: AddFriendView(wallet: wallet))
                NavigationLink("Settings", destination: SettingsView(app: app, wallet: wallet))
            }
            .refreshable { await m.vm.refresh() }
            .task { await m.vm.refresh() }
            .onChange(of: app.lastEvent) { _ in Task { await m.vm.refresh() } }
        }
    }
}

struct AddFriendView: View {
    @StateObject private var m: Observed<AddFriendViewModel>
    @State private var scanning = false
    init(wallet: OffstWallet) { _m = StateObject(wrappedValue: Observed(AddFriendViewModel(wallet: wallet))) }

    var body: some View {
        Form {
            TextField("Your name, as they will see it", text: Binding(get: { m.vm.myName }, set: { m.vm.myName = $0 }))
            Button("Show my code") { Task { await m.vm.showMyCode() } }
            if let inv = m.vm.invitation { QRImage(png: inv.qrPng) }
            Button("Scan their code") { scanning = true }
            ForEach(m.vm.requests, id: \.id) { r in
                HStack {
                    Text("\(r.name) asks to be friends")
                    Button("Accept") { Task { await m.vm.accept(request: r) } }
                }
            }
            if let f = m.vm.added { Text("\(f.name) is your friend") }
            ErrorLine(error: m.vm.error)
        }
        .task { await m.vm.refreshRequests() }
        .sheet(isPresented: $scanning) {
            QRScannerView { text in scanning = false; Task { await m.vm.scanned(text) } }
        }
    }
}

struct FriendView: View {
    @StateObject private var m: Observed<FriendDetailViewModel>
    @State private var limit = ""
    @State private var currency = "EUR"
    init(wallet: OffstWallet, id: String) {
        _m = StateObject(wrappedValue: Observed(FriendDetailViewModel(wallet: wallet, friendId: id)))
    }

    var body: some View {
        Form {
            if let d = m.vm.detail {
                Section(d.friend.name) {
                    ForEach(d.friend.lines, id: \.currency) { l in
                        Text("\(l.currency): balance \(l.balance)")
                        Text("They may owe you \(l.theyMayOwe)\(l.theyMayOwePending.map { " (\($0) once your friend is online)" } ?? ""); you may owe them \(l.weMayOwe)").font(.caption)
                    }
                }
                Section("Limit") {
                    TextField("They may owe you up to", text: $limit).keyboardType(.numberPad)
                    TextField("Currency", text: $currency)
                    Button("Set") { Task { await m.vm.setLimit(limit, currency: currency) } }
                }
                Section("History") { ForEach(d.history, id: \.seq) { Text($0.detail) } }
            }
            ErrorLine(error: m.vm.error)
        }
        .task { await m.vm.load() }
    }
}

struct RequestView: View {
    @ObservedObject var app: AppModel
    @StateObject private var m: Observed<RequestViewModel>
    @State private var amount = ""
    @State private var memo = ""
    init(app: AppModel, wallet: OffstWallet) {
        self.app = app
        _m = StateObject(wrappedValue: Observed(RequestViewModel(wallet: wallet)))
    }

    var body: some View {
        Form {
            TextField("Amount", text: $amount).keyboardType(.numberPad)
            TextField("What for", text: $memo)
            Button("Show the code") { Task { await m.vm.create(amount: amount, currency: "EUR", memo: memo) } }
            if let inv = m.vm.invoice { QRImage(png: inv.qrPng) }
            if m.vm.paid { Text("Paid").font(.largeTitle) }
            ErrorLine(error: m.vm.error)
        }
        .onChange(of: app.lastEvent) { e in if let e { m.vm.heard(e) } }
    }
}

struct PayView: View {
    @StateObject private var m: Observed<PayViewModel>
    /// A payment request an offst: link opened: quoted at once, paid only on "Pay".
    let link: String?
    init(wallet: OffstWallet, link: String? = nil) {
        self.link = link
        _m = StateObject(wrappedValue: Observed(PayViewModel(wallet: wallet)))
    }

    var body: some View {
        VStack(spacing: 12) {
            switch m.vm.stage {
            case .scanning:
                QRScannerView { text in Task { await m.vm.scanned(text) } }
            case .quoted(let q):
                Text("Pay \(q.request.amount) \(q.request.currency)").font(.largeTitle)
                if !q.request.memo.isEmpty { Text(q.request.memo) }
                Text("Fees \(q.totalFee) over \(q.routes.count) route(s)")
                Button("Pay") { Task { await m.vm.confirm() } }.buttonStyle(.borderedProminent)
                Button("Cancel") { m.vm.reset() }
            case .paying(let steps):
                ProgressView()
                Text(describe(steps.last))
            case .paid(let r):
                Text("Paid \(r.amount)").font(.largeTitle)
                Text(r.text).font(.caption).textSelection(.enabled)
                Button("Done") { m.vm.reset() }
            case .failed(let why):
                Text(why).foregroundColor(.red)
                Button("Scan again") { m.vm.reset() }
            }
        }
        .padding()
        .task { if let link { await m.vm.scanned(link) } }
    }

    private func describe(_ step: PayProgress?) -> String {
        switch step {
        case nil: return "Finding routes"
        case .sent(let routes, _): return "Sent over \(routes) route(s); waiting for the seller"
        case .retried(let routes): return "A route was refused; trying \(routes) other route(s)"
        case .waiting(let seconds): return "Waiting for the seller and the mediators (\(seconds) s)"
        }
    }
}

struct SettingsView: View {
    @ObservedObject var app: AppModel
    @StateObject private var m: Observed<SettingsViewModel>
    @State private var newRelay = ""
    init(app: AppModel, wallet: OffstWallet) {
        self.app = app
        _m = StateObject(wrappedValue: Observed(SettingsViewModel(wallet: wallet)))
    }

    var body: some View {
        Form {
            Section("Relay") {
                Text(m.vm.relay ?? "none")
                TextField("New relay (KEY@HOST:PORT)", text: $newRelay)
                Button("Move to this relay") { Task { await m.vm.setRelay(newRelay) } }
            }
            Section("What the relay's index is told about your channels") {
                Picker("Reports", selection: Binding(get: { m.vm.privacy }, set: { p in Task { await m.vm.setPrivacy(p) } })) {
                    Text("exact").tag(ReportPrivacy.exact)
                    Text("buckets").tag(ReportPrivacy.buckets)
                    Text("off").tag(ReportPrivacy.off)
                }
            }
            Section("Backup") {
                Button("Back up") {
                    let file = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
                        .appendingPathComponent("offst.backup").path
                    Task { await m.vm.backup(to: file, keys: app.keys) }
                }
                if let f = m.vm.backedUp { Text("Written to \(f). Keep it elsewhere; it opens only with this phone's key.") }
            }
            ErrorLine(error: m.vm.error)
        }
        .task { await m.vm.load() }
    }
}

/// An offst: link from another app, a web page or an NFC tag: what it asks, then yes or no.
struct LinkView: View {
    @ObservedObject var app: AppModel
    let wallet: OffstWallet
    let uri: String
    @StateObject private var m: Observed<LinkViewModel>
    @State private var name = ""
    init(app: AppModel, wallet: OffstWallet, uri: String) {
        self.app = app
        self.wallet = wallet
        self.uri = uri
        _m = StateObject(wrappedValue: Observed(LinkViewModel(wallet: wallet)))
    }

    var body: some View {
        VStack(spacing: 12) {
            switch m.vm.stage {
            case .idle:
                ProgressView()
            case .confirmPayment(let uri, _):
                PayView(wallet: wallet, link: uri)
            case .confirmFriend(_, let inviter, let who):
                Text("\(who) invites you to be friends").font(.title)
                Text(inviter).font(.caption)
                TextField("Your name, as they will see it", text: $name)
                Button("Accept") { m.vm.myName = name; Task { await m.vm.acceptFriend() } }
                    .buttonStyle(.borderedProminent)
                Button("No, thanks") { m.vm.decline(); app.openedLink = nil }
            case .added(let f):
                Text("You and \(f.name) are friends").font(.title)
                Button("Done") { app.openedLink = nil }
            case .refused(let why):
                Text(why).foregroundColor(.red)
                Button("Back") { app.openedLink = nil }
            }
        }
        .padding()
        .task { await m.vm.opened(uri) }
    }
}
