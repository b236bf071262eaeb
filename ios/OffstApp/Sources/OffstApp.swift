import SwiftUI
import OffstKit

/// The app: one wallet, its events for the screens, logs to os_log.
@main
struct OffstApp: App {
    @StateObject private var model = AppModel()

    var body: some Scene {
        WindowGroup {
            Group {
                if let wallet = model.wallet {
                    HomeView(app: model, wallet: wallet)
                        .sheet(item: $model.openedLink) { link in
                            LinkView(app: model, wallet: wallet, uri: link.uri)
                        }
                } else {
                    OnboardingView(app: model)
                }
            }
            // offst: links (the URL scheme in project.yml) open the link sheet, which asks first.
            .onOpenURL { url in model.openedLink = OpenedLink(uri: url.absoluteString) }
        }
    }
}

@MainActor
final class AppModel: ObservableObject {
    @Published var wallet: OffstWallet?
    /// An offst: link waiting to be shown (kept until a wallet is open).
    @Published var openedLink: OpenedLink?
    /// Each event as it happens (screens filter what they care about).
    @Published var lastEvent: HistoryItem?
    let keys = KeychainKeys()
    let dir = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
        .appendingPathComponent("wallet").path

    init() { setLogger(logger: OSLogLogger(), level: .info) }

    func opened(_ w: OffstWallet) {
        wallet = w
        Task {
            for try await e in w.events() { lastEvent = e }
        }
    }
}

/// An offst: link the app was opened with.
struct OpenedLink: Identifiable {
    let uri: String
    var id: String { uri }
}
