//! `offst-ffi`: the Offst wallet for the phone apps, through UniFFI (Kotlin and Swift).
//!
//! Thin on purpose: every rule lives in `offst-core`; this crate turns its types into records
//! and enums a foreign language can hold, runs the wallet and its network driver on a tokio
//! runtime of its own, and sorts errors by what the person was doing (opening the wallet,
//! reading an invitation, dealing with a friend, paying, reaching the relay).
//!
//! Threads: every async method runs its work on the library's runtime and the foreign side
//! only awaits the result, so no call blocks the runtime that drives the network. The wallet
//! itself is a SQLite file behind a mutex; each call holds it for one durable step.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use offst_core::invite::{self, PaymentRequest};
use offst_core::net::client::client_endpoint;
use offst_core::net::driver::{Driver, DriverStatus};
use offst_core::net::payer::{self, PayStep};
use offst_core::net::wire::RelayAddress;
use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::NodeId;
use offst_core::protocol::node::NodeError;
use offst_core::routing::Privacy;
use offst_core::wallet as core_wallet;
use offst_core::wallet::EventKind as CoreEventKind;

uniffi::setup_scaffolding!();

mod errors;
mod logging;

pub use errors::{FriendError, InviteError, KeyStoreError, NetworkError, PayError, WalletError};
pub use logging::{LogLevel, Logger, set_logger};

// ------------------------------------------------------------------------------------------
// The runtime

/// The library's own runtime: two workers drive every wallet's network and storage work.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("offst")
                .enable_all()
                .build()
                .map_err(|e| format!("can't start the wallet's threads: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Run `work` on the library's runtime and wait for it from whatever executor the caller uses.
async fn on_runtime<T, E>(
    work: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static + From<errors::Internal>,
{
    let rt = runtime().map_err(|e| E::from(errors::Internal(e)))?;
    match rt.spawn(work).await {
        Ok(r) => r,
        Err(e) => Err(E::from(errors::Internal(format!(
            "the wallet's task failed: {e}"
        )))),
    }
}

// ------------------------------------------------------------------------------------------
// Keys

/// The platform's key store (Android Keystore, iOS Keychain): gives the 32-byte key that seals
/// the wallet's identity on disk. The same `salt` must always give the same key. The wallet
/// never stores the key; the key store never sees the identity.
#[uniffi::export(with_foreign)]
pub trait KeyStore: Send + Sync {
    /// The key for `salt` (16 bytes), exactly 32 bytes.
    fn key(&self, salt: Vec<u8>) -> Result<Vec<u8>, KeyStoreError>;
}

/// A key store that derives the key from a passphrase (Argon2id, 64 MiB, 3 passes): for
/// desktops, tests, and a phone that wants a passphrase on top of the platform's store.
#[uniffi::export]
pub fn passphrase_key_store(passphrase: String) -> Arc<dyn KeyStore> {
    Arc::new(Passphrase(core_wallet::PassphraseKeys::new(passphrase)))
}

struct Passphrase(core_wallet::PassphraseKeys);

impl KeyStore for Passphrase {
    fn key(&self, salt: Vec<u8>) -> Result<Vec<u8>, KeyStoreError> {
        let salt: [u8; core_wallet::keys::SALT_LEN] =
            salt.try_into().map_err(|_| KeyStoreError::Unavailable {
                reason: "a salt must be 16 bytes".into(),
            })?;
        use core_wallet::KeyStore as _;
        self.0
            .key(&salt)
            .map(|k| k.as_bytes().to_vec())
            .map_err(|e| KeyStoreError::Unavailable {
                reason: e.to_string(),
            })
    }
}

/// The foreign key store as the core's.
struct Keys(Arc<dyn KeyStore>);

impl core_wallet::KeyStore for Keys {
    fn key(
        &self,
        salt: &[u8; core_wallet::keys::SALT_LEN],
    ) -> Result<core_wallet::SecretKey, core_wallet::KeyStoreError> {
        let bytes = self
            .0
            .key(salt.to_vec())
            .map_err(|e| core_wallet::KeyStoreError::Unavailable(e.to_string()))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            core_wallet::KeyStoreError::Unavailable(format!(
                "the key store gave {} bytes; a key is 32",
                b.len()
            ))
        })?;
        Ok(core_wallet::SecretKey::from_bytes(bytes))
    }
}

// ------------------------------------------------------------------------------------------
// Records

/// Where a wallet lives and how it starts.
#[derive(uniffi::Record, Clone, Debug)]
pub struct WalletConfig {
    /// The wallet's directory (the app's private files directory).
    pub dir: String,
    /// The relay, `KEY@HOST:PORT`, as its operator gives it out. Needed to be reached by
    /// friends; may be set later with [`Wallet::set_relay`].
    pub relay: Option<String>,
    /// A new wallet's fee for passing payments on: a fixed part...
    pub fee_base: u64,
    /// ... and millionths of the amount.
    pub fee_ppm: u32,
}

/// A credit line with one friend in one currency. Amounts are whole units of the currency.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct CreditLine {
    /// The currency.
    pub currency: String,
    /// What the friend owes us; negative when we owe them.
    pub balance: i64,
    /// How much we let them owe us.
    pub they_may_owe: u64,
    /// How much they let us owe them.
    pub we_may_owe: u64,
    /// Held by payments of ours under way toward them.
    pub frozen_by_us: u64,
    /// Held by payments of theirs under way toward us.
    pub frozen_by_them: u64,
    /// A new `they_may_owe` we set that takes effect at our next turn to move (the friend
    /// may hold the turn while offline): show it as pending.
    pub they_may_owe_pending: Option<u64>,
}

/// A friend and the credit lines with them.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct Friend {
    /// Their key (52 base32 characters): what every call names them by.
    pub id: String,
    /// Their name, as they gave it.
    pub name: String,
    /// One per currency.
    pub lines: Vec<CreditLine>,
}

/// Someone who accepted our invitation and asks to be friends.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct FriendRequest {
    /// Their key.
    pub id: String,
    /// Their name, as they gave it.
    pub name: String,
    /// When it arrived, ms since the Unix epoch.
    pub received_ms: u64,
}

/// The total of all credit lines in one currency.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    /// The currency.
    pub currency: String,
    /// Owed to us minus owed by us, over all friends.
    pub total: i64,
}

/// An invitation to be friends: its text, its URI, and its QR code.
#[derive(uniffi::Record, Clone, Debug)]
pub struct Invitation {
    /// `OFFSTI1...`, to send as text.
    pub text: String,
    /// `offst:OFFSTI1...`, for links and NFC tags.
    pub uri: String,
    /// Who invites.
    pub inviter: String,
    /// The inviter's name.
    pub name: String,
    /// When it stops working, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// The QR code as an SVG document.
    pub qr_svg: String,
    /// The QR code as a PNG image (8 pixels per module).
    pub qr_png: Vec<u8>,
}

/// An invoice of ours, as a payment request anyone can pay.
#[derive(uniffi::Record, Clone, Debug)]
pub struct Invoice {
    /// The invoice's id.
    pub id: String,
    /// What we ask.
    pub amount: u64,
    /// In which currency.
    pub currency: String,
    /// What it is for.
    pub memo: String,
    /// Nobody can pay it after this (ms since the Unix epoch); nothing stays frozen.
    pub expires_at_ms: u64,
    /// `OFFSTP1...`, to send as text.
    pub text: String,
    /// `offst:OFFSTP1...`.
    pub uri: String,
    /// The QR code as an SVG document.
    pub qr_svg: String,
    /// The QR code as a PNG image (8 pixels per module).
    pub qr_png: Vec<u8>,
}

/// A payment request read from text or a QR code, before paying it.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct PaymentRequestInfo {
    /// The invoice's id.
    pub invoice_id: String,
    /// Who asks.
    pub seller: String,
    /// How much.
    pub amount: u64,
    /// In which currency.
    pub currency: String,
    /// What for.
    pub memo: String,
    /// Until when it can be paid.
    pub expires_at_ms: u64,
}

/// One route of a payment.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// Friends of friends passing it on.
    pub mediators: u32,
    /// What this route delivers to the seller.
    pub amount: u64,
    /// The mediators' fees on it.
    pub fee: u64,
}

/// What paying a request would cost, before confirming.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct PaymentQuote {
    /// The request.
    pub request: PaymentRequestInfo,
    /// The routes the payment would take.
    pub routes: Vec<RouteInfo>,
    /// All fees together, on top of the amount.
    pub total_fee: u64,
}

/// Proof of a payment: the seller's signature and both secrets.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The invoice paid.
    pub invoice_id: String,
    /// Who was paid.
    pub seller: String,
    /// How much the seller received.
    pub amount: u64,
    /// `OFFSTR1...`: anyone can check it offline with [`verify_receipt`].
    pub text: String,
}

/// Which side of a payment we are.
#[derive(uniffi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentRole {
    /// We pay.
    Buyer,
    /// We are paid.
    Seller,
}

/// Where a payment stands.
#[derive(uniffi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Ours, under way.
    InFlight,
    /// Ours, done: the receipt is there.
    Completed,
    /// Cancelled or expired: nothing moved.
    Cancelled,
    /// An invoice of ours, not paid yet.
    Open,
    /// An invoice of ours, paid.
    Paid,
}

/// A payment (ours or to us) by its invoice.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The invoice.
    pub invoice_id: String,
    /// Our side.
    pub role: PaymentRole,
    /// Where it stands.
    pub status: PaymentStatus,
    /// The receipt, once a payment of ours completed.
    pub receipt: Option<Receipt>,
    /// Its history, oldest first.
    pub history: Vec<HistoryItem>,
}

/// What happened (history rows and events).
#[derive(uniffi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// We added a friend.
    FriendAdded,
    /// We set how much a friend may owe us.
    LimitSet,
    /// A friend changed how much it lets us owe it.
    LimitChanged,
    /// A limit change we asked for could not be made.
    LimitNotSet,
    /// We issued an invoice.
    InvoiceCreated,
    /// An invoice of ours was paid.
    InvoicePaid,
    /// An invoice of ours expired unpaid.
    InvoiceCancelled,
    /// We started paying an invoice.
    PaymentStarted,
    /// A payment of ours completed.
    PaymentCompleted,
    /// A payment of ours was cancelled; nothing moved.
    PaymentCancelled,
    /// We asked the seller to call a payment of ours off (it may still complete, if the seller
    /// took it first).
    PaymentAbandoned,
    /// A friend proposes to reset our channel.
    ResetProposed,
    /// A channel was reset by both friends.
    ChannelReset,
    /// A channel recovered from a disagreement.
    Resynced,
    /// The wallet was restored from a backup.
    Restored,
    /// Someone who scanned our invitation asks to be friends.
    FriendRequested,
    /// Someone whose invitation we accepted accepted us back.
    FriendAccepted,
    /// An app did something through the wallet's app interface (desktop `offst serve`).
    AppAction,
    /// An app tried something through the app interface and was refused.
    AppRefused,
}

impl From<CoreEventKind> for EventKind {
    fn from(k: CoreEventKind) -> EventKind {
        match k {
            CoreEventKind::FriendAdded => EventKind::FriendAdded,
            CoreEventKind::LimitSet => EventKind::LimitSet,
            CoreEventKind::LimitChanged => EventKind::LimitChanged,
            CoreEventKind::LimitNotSet => EventKind::LimitNotSet,
            CoreEventKind::InvoiceCreated => EventKind::InvoiceCreated,
            CoreEventKind::InvoicePaid => EventKind::InvoicePaid,
            CoreEventKind::InvoiceCancelled => EventKind::InvoiceCancelled,
            CoreEventKind::PaymentStarted => EventKind::PaymentStarted,
            CoreEventKind::PaymentCompleted => EventKind::PaymentCompleted,
            CoreEventKind::PaymentCancelled => EventKind::PaymentCancelled,
            CoreEventKind::PaymentAbandoned => EventKind::PaymentAbandoned,
            CoreEventKind::ResetProposed => EventKind::ResetProposed,
            CoreEventKind::ChannelReset => EventKind::ChannelReset,
            CoreEventKind::Resynced => EventKind::Resynced,
            CoreEventKind::Restored => EventKind::Restored,
            CoreEventKind::FriendRequested => EventKind::FriendRequested,
            CoreEventKind::FriendAccepted => EventKind::FriendAccepted,
            CoreEventKind::AppAction => EventKind::AppAction,
            CoreEventKind::AppRefused => EventKind::AppRefused,
        }
    }
}

/// One row of history; also what [`Wallet::next_event`] gives.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    /// Its place in history (increasing); acknowledge events by it.
    pub seq: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// What.
    pub kind: EventKind,
    /// The friend concerned.
    pub friend: Option<String>,
    /// The invoice concerned.
    pub invoice_id: Option<String>,
    /// The currency of `amount`.
    pub currency: Option<String>,
    /// An amount, signed from our side.
    pub amount: Option<i64>,
    /// A sentence for people.
    pub detail: String,
}

impl From<core_wallet::HistoryEntry> for HistoryItem {
    fn from(h: core_wallet::HistoryEntry) -> HistoryItem {
        HistoryItem {
            seq: h.seq,
            at_ms: h.at_ms,
            kind: h.kind.into(),
            friend: h.friend.map(|f| f.to_string()),
            invoice_id: h.invoice.map(|i| i.to_string()),
            currency: h.currency.map(|c| c.as_str().to_string()),
            amount: h.amount,
            detail: h.detail,
        }
    }
}

/// A friend with recent history, for a detail screen.
#[derive(uniffi::Record, Clone, Debug, PartialEq, Eq)]
pub struct FriendDetail {
    /// The friend and the credit lines.
    pub friend: Friend,
    /// Their history, newest first.
    pub history: Vec<HistoryItem>,
}

/// Whether the wallet is connected to its relay.
#[derive(uniffi::Enum, Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// No relay chosen yet.
    NoRelay,
    /// Trying; `last_error` says why the last try failed (empty at first).
    Connecting {
        /// Tries so far.
        attempt: u32,
        /// Why the last one failed.
        last_error: String,
    },
    /// Connected: friends' mail arrives at once.
    Connected,
    /// Closed.
    Closed,
}

/// What the wallet tells its relay's index about its channels, for routing.
#[derive(uniffi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportPrivacy {
    /// Exact capacities (best routes).
    Exact,
    /// Rounded down to powers of two.
    Buckets,
    /// Nothing: the wallet is not offered as a mediator.
    Off,
}

/// A step of a payment under way.
#[derive(uniffi::Enum, Clone, Debug, PartialEq, Eq)]
pub enum PayProgress {
    /// Sent over these routes; waiting for the seller.
    Sent {
        /// Routes.
        routes: u32,
        /// Fees in all.
        total_fee: u64,
    },
    /// Some routes were refused; the missing part went again over others.
    Retried {
        /// Routes of the retry.
        routes: u32,
    },
    /// Still waiting after this many seconds.
    Waiting {
        /// Seconds so far.
        seconds: u64,
    },
}

/// Hears of each step of [`Wallet::pay`] (on a library thread: hand it to the UI thread).
#[uniffi::export(with_foreign)]
pub trait PayListener: Send + Sync {
    /// A step.
    fn on_progress(&self, progress: PayProgress);
}

/// Hears of each event as it happens (on a library thread). Events it has heard are marked
/// handled; events that arrive while no listener is set wait for [`Wallet::next_event`].
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    /// An event.
    fn on_event(&self, event: HistoryItem);
}

// ------------------------------------------------------------------------------------------
// Parsing without a wallet

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn request_info(req: &PaymentRequest) -> PaymentRequestInfo {
    let t = &req.invoice.terms;
    PaymentRequestInfo {
        invoice_id: t.id.to_string(),
        seller: t.seller.to_string(),
        amount: t.amount,
        currency: t.currency.as_str().to_string(),
        memo: t.memo.clone(),
        expires_at_ms: t.expires_at_ms,
    }
}

/// Read a payment request (text, `offst:` URI or a scanned QR code) and check it: signatures
/// and expiry. For the confirmation screen before [`Wallet::quote`].
#[uniffi::export]
pub fn read_payment_request(text: String) -> Result<PaymentRequestInfo, InviteError> {
    Ok(request_info(&PaymentRequest::parse(&text, now_ms())?))
}

/// What an `offst:` link holds (see [`read_link`]). Not `Link`: SwiftUI has a view by that name.
#[derive(uniffi::Enum, Clone, Debug, PartialEq, Eq)]
pub enum OffstLink {
    /// An invitation: show who invites, and accept only when the person says so
    /// ([`Wallet::accept_invitation`] with the same text).
    Invitation {
        /// The inviter's id.
        inviter: String,
        /// The inviter's name.
        name: String,
        /// When it stops working, ms since the Unix epoch.
        expires_at_ms: u64,
    },
    /// A payment request: show it, then [`Wallet::quote`] and pay only when the person
    /// confirms.
    PaymentRequest {
        /// What it asks.
        request: PaymentRequestInfo,
    },
}

/// Read an `offst:` link opened from another app, a web page or an NFC tag (or a scanned
/// code, or pasted text), and check it: signature and expiry. Reading never acts on it.
#[uniffi::export]
pub fn read_link(text: String) -> Result<OffstLink, InviteError> {
    Ok(match invite::Link::parse(&text, now_ms())? {
        invite::Link::Invitation(inv) => OffstLink::Invitation {
            inviter: inv.terms.inviter.to_string(),
            name: inv.terms.name.clone(),
            expires_at_ms: inv.terms.expires_ms,
        },
        invite::Link::PaymentRequest(req) => OffstLink::PaymentRequest {
            request: request_info(&req),
        },
    })
}

/// Check a receipt offline: the seller's signature and both secrets.
#[uniffi::export]
pub fn verify_receipt(text: String) -> Result<Receipt, InviteError> {
    let r = invite::parse_receipt(&text)?;
    Ok(receipt(&r))
}

fn receipt(r: &offst_core::protocol::payment::Receipt) -> Receipt {
    Receipt {
        invoice_id: r.invoice_id().to_string(),
        seller: r.seller.to_string(),
        amount: r.amount(),
        text: invite::receipt_to_text(r),
    }
}

/// The library's version.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

// ------------------------------------------------------------------------------------------
// Opening

/// The relay in `config`, read (none given: `None`).
fn config_relay(config: &WalletConfig) -> Result<Option<RelayAddress>, WalletError> {
    config
        .relay
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(WalletError::BadConfig)
}

/// Run a blocking wallet call (Argon2, SQLite) on the runtime's blocking threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, core_wallet::WalletError> + Send + 'static,
) -> Result<T, WalletError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WalletError::Internal(e.to_string()))?
        .map_err(WalletError::from)
}

fn rate(config: &WalletConfig) -> Rate {
    Rate {
        base: config.fee_base,
        ppm: config.fee_ppm,
    }
}

/// Create a new wallet in `config.dir` (made if missing), sealed with `keys`, and take it
/// online.
#[uniffi::export]
pub async fn create_wallet(
    config: WalletConfig,
    keys: Arc<dyn KeyStore>,
) -> Result<Arc<Wallet>, WalletError> {
    on_runtime(async move {
        let relay = config_relay(&config)?;
        let dir = std::path::PathBuf::from(&config.dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| WalletError::Storage(format!("{}: {e}", dir.display())))?;
        let options = core_wallet::WalletOptions {
            rate: rate(&config),
            ..Default::default()
        };
        let mut w =
            blocking(move || core_wallet::Wallet::create(&dir, &Keys(keys), options)).await?;
        if let Some(r) = relay {
            w.set_relay(r)?;
        }
        Wallet::start(w)
    })
    .await
}

/// Open the wallet in `config.dir` with `keys` and take it online. (`config.relay`, when
/// given, replaces the relay; the fee settings are only for new wallets.)
#[uniffi::export]
pub async fn open_wallet(
    config: WalletConfig,
    keys: Arc<dyn KeyStore>,
) -> Result<Arc<Wallet>, WalletError> {
    on_runtime(async move {
        let relay = config_relay(&config)?;
        let dir = std::path::PathBuf::from(&config.dir);
        let mut w = blocking(move || {
            core_wallet::Wallet::open(&dir, &Keys(keys), core_wallet::WalletOptions::default())
        })
        .await?;
        if let Some(r) = relay
            && w.relay()?.as_ref() != Some(&r)
        {
            w.move_relay(r)?;
        }
        Wallet::start(w)
    })
    .await
}

/// Restore the backup at `backup_path` (sealed with `keys`) into the new directory
/// `config.dir`, and take it online: it then resyncs with its friends.
#[uniffi::export]
pub async fn restore_wallet(
    config: WalletConfig,
    backup_path: String,
    keys: Arc<dyn KeyStore>,
) -> Result<Arc<Wallet>, WalletError> {
    on_runtime(async move {
        let dir = std::path::PathBuf::from(&config.dir);
        let w = blocking(move || {
            let keys = Keys(keys);
            core_wallet::Wallet::restore(
                std::path::Path::new(&backup_path),
                &dir,
                &keys,
                &keys,
                None,
                core_wallet::WalletOptions::default(),
            )
        })
        .await?;
        Wallet::start(w)
    })
    .await
}

// ------------------------------------------------------------------------------------------
// The wallet

/// An open wallet, online: its network driver keeps it connected to its relay, sends what it
/// queues and takes in what friends send, until [`Wallet::shutdown`].
#[derive(uniffi::Object)]
pub struct Wallet {
    id: NodeId,
    inner: Arc<core_wallet::SharedWallet>,
    driver: tokio::sync::RwLock<Option<Driver>>,
    listener: RwLock<Option<tokio::task::JoinHandle<()>>>,
}

impl Wallet {
    fn start(w: core_wallet::Wallet) -> Result<Arc<Wallet>, WalletError> {
        let id = w.id();
        let inner = Arc::new(core_wallet::SharedWallet::new(w));
        let endpoint = client_endpoint().map_err(|e| WalletError::Storage(e.to_string()))?;
        let driver = Driver::spawn(inner.clone(), endpoint);
        Ok(Arc::new(Wallet {
            id,
            inner,
            driver: tokio::sync::RwLock::new(Some(driver)),
            listener: RwLock::new(None),
        }))
    }

    fn lock(&self) -> offst_core::sync::Guard<'_, core_wallet::Wallet> {
        self.inner.lock()
    }

    fn friend_of(&self, id: &str) -> Result<NodeId, FriendError> {
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|e| FriendError::BadId(format!("{id:?} is not a friend's key: {e}")))?;
        if self.lock().node().friends().any(|f| *f == id) {
            Ok(id)
        } else {
            Err(FriendError::UnknownFriend(format!(
                "{id} is not your friend; add them by invitation first"
            )))
        }
    }

    fn friend_record(w: &core_wallet::Wallet, id: NodeId) -> Result<Friend, WalletError> {
        let v = w.friend_view(id, 0)?;
        Ok(friend_of_view(&v))
    }
}

fn line(l: &core_wallet::LineView) -> CreditLine {
    CreditLine {
        currency: l.currency.as_str().to_string(),
        balance: i64::try_from(l.balance).unwrap_or(if l.balance < 0 {
            i64::MIN
        } else {
            i64::MAX
        }),
        they_may_owe: l.our_limit,
        we_may_owe: l.their_limit,
        frozen_by_us: l.frozen_by_us,
        frozen_by_them: l.frozen_by_them,
        they_may_owe_pending: l.pending_limit,
    }
}

fn friend_of_view(v: &core_wallet::FriendView) -> Friend {
    Friend {
        id: v.id.to_string(),
        name: v.name.clone(),
        lines: v.lines.iter().map(line).collect(),
    }
}

fn currency(name: &str) -> Result<Currency, String> {
    Currency::new(name.trim()).map_err(|e| e.to_string())
}

#[uniffi::export]
impl Wallet {
    /// The wallet's key (52 base32 characters): who it is to friends.
    pub fn id(&self) -> String {
        self.id.to_string()
    }

    /// The relay, `KEY@HOST:PORT`, if one is chosen.
    pub fn relay(&self) -> Result<Option<String>, WalletError> {
        Ok(self.lock().relay()?.map(|r| r.to_string()))
    }

    /// Whether the wallet is connected to its relay.
    pub async fn connection(self: Arc<Self>) -> Connection {
        match self.driver.read().await.as_ref().map(Driver::status) {
            None | Some(DriverStatus::Stopped) => Connection::Closed,
            Some(DriverStatus::NoRelay) => Connection::NoRelay,
            Some(DriverStatus::Connected) => Connection::Connected,
            Some(DriverStatus::Connecting {
                attempt,
                last_error,
                ..
            }) => Connection::Connecting {
                attempt,
                last_error,
            },
        }
    }

    /// Use the relay `KEY@HOST:PORT` from now on; friends are told, and mail still at the old
    /// relay is fetched.
    pub fn set_relay(&self, relay: String) -> Result<(), WalletError> {
        let r: RelayAddress = relay.parse().map_err(WalletError::BadConfig)?;
        let mut w = self.lock();
        if w.relay()?.is_none() {
            w.set_relay(r)?;
        } else {
            w.move_relay(r)?;
        }
        Ok(())
    }

    /// Wait until everything queued reached the relay and its mailbox was read, at most
    /// `timeout_secs`.
    pub async fn sync(self: Arc<Self>, timeout_secs: u64) -> Result<(), NetworkError> {
        on_runtime(async move {
            let driver = self.driver.read().await;
            let driver = driver
                .as_ref()
                .ok_or_else(|| NetworkError::Closed("the wallet is closed".into()))?;
            driver
                .synced(&self.inner, Duration::from_secs(timeout_secs), |_| {})
                .await
                .map_err(NetworkError::from)
        })
        .await
    }

    /// An invitation for a friend to scan, valid `hours`; `name` is how they will see us.
    pub fn invite(&self, name: String, hours: u64) -> Result<Invitation, InviteError> {
        let inv = self
            .lock()
            .invite(&name, hours.saturating_mul(3_600_000))
            .map_err(|e| InviteError::Invalid(e.to_string()))?;
        Ok(Invitation {
            text: inv.to_text(),
            uri: inv.to_uri(),
            inviter: inv.terms.inviter.to_string(),
            name: inv.terms.name.clone(),
            expires_at_ms: inv.terms.expires_ms,
            qr_svg: inv.qr_svg()?,
            qr_png: inv.qr_png(8)?,
        })
    }

    /// Accept a friend's invitation (text, URI or scanned QR code): they become our friend
    /// and are asked to add us back. `name` is how they will see us.
    pub fn accept_invitation(&self, text: String, name: String) -> Result<Friend, InviteError> {
        let inv = offst_core::invite::Invitation::parse(&text, now_ms())?;
        let mut w = self.lock();
        w.accept_invitation(&inv, &name).map_err(|e| match e {
            core_wallet::WalletError::Refused(NodeError::AlreadyFriend(_)) => {
                InviteError::Invalid(format!("{} is already your friend", inv.terms.name))
            }
            core_wallet::WalletError::Refused(NodeError::SelfFriend) => {
                InviteError::Invalid("this is your own invitation".into())
            }
            e => InviteError::Invalid(e.to_string()),
        })?;
        Self::friend_record(&w, inv.terms.inviter).map_err(|e| InviteError::Invalid(e.to_string()))
    }

    /// People who accepted our invitations and wait for us to accept them.
    pub fn friend_requests(&self) -> Result<Vec<FriendRequest>, WalletError> {
        Ok(self
            .lock()
            .friend_requests()?
            .into_iter()
            .map(|r| FriendRequest {
                id: r.from.id.to_string(),
                name: r.from.name,
                received_ms: r.received_ms,
            })
            .collect())
    }

    /// Accept the friend request from `id`.
    pub fn accept_friend_request(&self, id: String, name: String) -> Result<Friend, FriendError> {
        let from: NodeId = id
            .trim()
            .parse()
            .map_err(|e| FriendError::BadId(format!("{id:?} is not a key: {e}")))?;
        let mut w = self.lock();
        w.accept_friend_request(from, &name).map_err(|e| match e {
            core_wallet::WalletError::Refused(NodeError::UnknownFriend(_)) => {
                FriendError::UnknownFriend(format!(
                    "no friend request from {from}: they ask by accepting your invitation"
                ))
            }
            e => FriendError::from(e),
        })?;
        Ok(Self::friend_record(&w, from)?)
    }

    /// Our friends and the credit lines with each.
    pub fn friends(&self) -> Result<Vec<Friend>, WalletError> {
        let w = self.lock();
        let ids: Vec<NodeId> = w.node().friends().copied().collect();
        ids.into_iter()
            .map(|f| Self::friend_record(&w, f))
            .collect()
    }

    /// One friend with its `recent` latest history rows.
    pub fn friend(&self, id: String, recent: u32) -> Result<FriendDetail, FriendError> {
        let f = self.friend_of(&id)?;
        let v = self.lock().friend_view(f, recent as usize)?;
        Ok(FriendDetail {
            friend: friend_of_view(&v),
            history: v.history.into_iter().map(HistoryItem::from).collect(),
        })
    }

    /// Let the friend `id` owe us up to `amount` of `currency` (the friend is told).
    pub fn set_limit(&self, id: String, currency: String, amount: u64) -> Result<(), FriendError> {
        let f = self.friend_of(&id)?;
        let c = self::currency(&currency).map_err(FriendError::Refused)?;
        Ok(self.lock().set_limit(f, c, amount)?)
    }

    /// The total per currency over all friends.
    pub fn balances(&self) -> Result<Vec<Balance>, WalletError> {
        let mut totals: std::collections::BTreeMap<String, i128> = Default::default();
        let w = self.lock();
        for f in w.node().friends().copied().collect::<Vec<_>>() {
            for l in w.friend_view(f, 0)?.lines {
                let t = totals.entry(l.currency.as_str().to_string()).or_default();
                *t = t.saturating_add(l.balance);
            }
        }
        Ok(totals
            .into_iter()
            .map(|(currency, t)| Balance {
                currency,
                total: i64::try_from(t).unwrap_or(if t < 0 { i64::MIN } else { i64::MAX }),
            })
            .collect())
    }

    /// Ask to be paid `amount` of `currency` for `memo`, within `minutes` (after that nobody
    /// can pay it and nothing stays frozen). Stay online to be paid.
    pub fn create_invoice(
        &self,
        amount: u64,
        currency: String,
        memo: String,
        minutes: u64,
    ) -> Result<Invoice, InviteError> {
        let c = self::currency(&currency).map_err(InviteError::Invalid)?;
        let mut w = self.lock();
        let inv = w
            .create_invoice(c, amount, minutes.saturating_mul(60_000), &memo)
            .map_err(|e| InviteError::Invalid(e.to_string()))?;
        let req = w
            .payment_request(&inv)
            .map_err(|e| InviteError::Invalid(e.to_string()))?;
        let t = &inv.terms;
        Ok(Invoice {
            id: t.id.to_string(),
            amount: t.amount,
            currency: t.currency.as_str().to_string(),
            memo: t.memo.clone(),
            expires_at_ms: t.expires_at_ms,
            text: req.to_text(),
            uri: req.to_uri(),
            qr_svg: req.qr_svg()?,
            qr_png: req.qr_png(8)?,
        })
    }

    /// The routes and fees for paying `request`, split over at most `max_routes`, from the
    /// relay's index. Pays nothing.
    pub async fn quote(
        self: Arc<Self>,
        request: String,
        max_routes: u8,
    ) -> Result<PaymentQuote, PayError> {
        on_runtime(async move {
            let req = PaymentRequest::parse(&request, now_ms())?;
            let query = self.lock().route_query(&req, max_routes.max(1));
            let driver = self.connected_driver().await?;
            let driver = driver.as_ref().ok_or_else(closed)?;
            let set = payer::routes(driver, query)
                .await
                .map_err(|e| no_routes(&req, e))?;
            Ok(PaymentQuote {
                request: request_info(&req),
                routes: set
                    .routes
                    .iter()
                    .map(|r| RouteInfo {
                        mediators: u32::try_from(r.route.len().saturating_sub(2))
                            .unwrap_or(u32::MAX),
                        amount: r.dest_payment,
                        fee: r.total_fee,
                    })
                    .collect(),
                total_fee: set.total_fee,
            })
        })
        .await
    }

    /// Pay `request` over at most `max_routes` routes and follow it to the receipt, at most
    /// `timeout_secs` (after that the payment goes on, and ends by the invoice's expiry).
    /// Routes refused on the way are replaced; if it cannot complete, nothing moves.
    pub async fn pay(
        self: Arc<Self>,
        request: String,
        max_routes: u8,
        timeout_secs: u64,
        progress: Option<Arc<dyn PayListener>>,
    ) -> Result<Receipt, PayError> {
        on_runtime(async move {
            let req = PaymentRequest::parse(&request, now_ms())?;
            let driver = self.connected_driver().await?;
            let driver = driver.as_ref().ok_or_else(closed)?;
            let r = payer::pay(
                &self.inner,
                driver,
                &req,
                max_routes.max(1),
                Duration::from_secs(timeout_secs),
                |step| {
                    if let Some(p) = &progress {
                        p.on_progress(match step {
                            PayStep::Sent(set) => PayProgress::Sent {
                                routes: u32::try_from(set.routes.len()).unwrap_or(u32::MAX),
                                total_fee: set.total_fee,
                            },
                            PayStep::Retried(set) => PayProgress::Retried {
                                routes: u32::try_from(set.routes.len()).unwrap_or(u32::MAX),
                            },
                            PayStep::Waiting(t) => PayProgress::Waiting {
                                seconds: t.as_secs(),
                            },
                        });
                    }
                },
            )
            .await
            .map_err(|e| errors::pay_error(&req, e))?;
            Ok(receipt(&r))
        })
        .await
    }

    /// A payment of ours, or an invoice of ours, by the invoice's id.
    pub fn payment(&self, invoice_id: String) -> Result<Payment, PayError> {
        let id: offst_core::protocol::payment::InvoiceId = invoice_id
            .parse()
            .map_err(|e| PayError::BadRequest(format!("not an invoice id: {e}")))?;
        let v = self.lock().payment_view(id).map_err(|e| match e {
            core_wallet::WalletError::Refused(NodeError::UnknownPayment(_)) => {
                PayError::Refused(format!("no payment or invoice {invoice_id} in this wallet"))
            }
            e => PayError::Refused(e.to_string()),
        })?;
        Ok(Payment {
            invoice_id: v.invoice.to_string(),
            role: match v.role {
                core_wallet::PaymentRole::Buyer => PaymentRole::Buyer,
                core_wallet::PaymentRole::Seller => PaymentRole::Seller,
            },
            status: match v.status {
                "in_flight" => PaymentStatus::InFlight,
                "completed" => PaymentStatus::Completed,
                "open" => PaymentStatus::Open,
                "paid" => PaymentStatus::Paid,
                _ => PaymentStatus::Cancelled,
            },
            receipt: v.receipt.as_ref().map(receipt),
            history: v.history.into_iter().map(HistoryItem::from).collect(),
        })
    }

    /// Ask the seller to call off a payment of ours that has no receipt yet: if the seller had
    /// not taken it, the credit it holds is freed at once and nothing moves; if it had (its
    /// commit goes with the requests, so that can be as soon as they arrive), the payment
    /// completes. Refused once the receipt is in hand.
    pub fn abandon_payment(&self, invoice_id: String) -> Result<(), PayError> {
        let id: offst_core::protocol::payment::InvoiceId = invoice_id
            .parse()
            .map_err(|e| PayError::BadRequest(format!("not an invoice id: {e}")))?;
        self.lock()
            .abandon_payment(id)
            .map_err(|e| PayError::Refused(e.to_string()))
    }

    /// History, newest first: `limit` rows older than `before` (a `seq`; none: the newest).
    pub fn history(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<HistoryItem>, WalletError> {
        Ok(self
            .lock()
            .history(&core_wallet::HistoryQuery {
                before,
                limit: limit.max(1) as usize,
                ..Default::default()
            })?
            .into_iter()
            .map(HistoryItem::from)
            .collect())
    }

    /// The oldest event not handled yet, waiting for one if there is none. Call
    /// [`Wallet::event_handled`] once it is shown; until then it is given again (also after a
    /// restart).
    pub async fn next_event(self: Arc<Self>) -> Result<HistoryItem, WalletError> {
        on_runtime(self.next_event_here()).await
    }

    /// The event `seq` was shown: it leaves the queue, with every event before it (they stay
    /// in history).
    pub fn event_handled(&self, seq: u64) -> Result<(), WalletError> {
        Ok(self.lock().event_handled(seq)?)
    }

    /// Events not handled yet.
    pub fn pending_events(&self) -> Result<u64, WalletError> {
        Ok(self.lock().pending_events()?)
    }

    /// Hand every event to `listener` as it happens (and those waiting now), marking each
    /// handled after the listener returns; `None` stops.
    pub fn set_event_listener(
        self: Arc<Self>,
        listener: Option<Arc<dyn EventListener>>,
    ) -> Result<(), WalletError> {
        let rt = runtime().map_err(WalletError::Internal)?;
        let mut slot = self.listener.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            old.abort();
        }
        if let Some(listener) = listener {
            let me = Arc::downgrade(&self);
            *slot = Some(rt.spawn(async move {
                loop {
                    let Some(w) = me.upgrade() else { return };
                    let Ok(e) = w.clone().next_event_here().await else {
                        return;
                    };
                    listener.on_event(e.clone());
                    if w.event_handled(e.seq).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok(())
    }

    /// How much the wallet tells its relay's index.
    pub fn report_privacy(&self) -> Result<ReportPrivacy, WalletError> {
        Ok(match self.lock().report_privacy()? {
            Privacy::Exact => ReportPrivacy::Exact,
            Privacy::Buckets => ReportPrivacy::Buckets,
            Privacy::Off => ReportPrivacy::Off,
        })
    }

    /// Set how much the wallet tells its relay's index.
    pub fn set_report_privacy(&self, privacy: ReportPrivacy) -> Result<(), WalletError> {
        Ok(self.lock().set_report_privacy(match privacy {
            ReportPrivacy::Exact => Privacy::Exact,
            ReportPrivacy::Buckets => Privacy::Buckets,
            ReportPrivacy::Off => Privacy::Off,
        })?)
    }

    /// Write an encrypted backup to `path`, sealed with `keys` (keep them apart from it).
    pub async fn backup(
        self: Arc<Self>,
        path: String,
        keys: Arc<dyn KeyStore>,
    ) -> Result<(), WalletError> {
        on_runtime(async move {
            blocking(move || {
                self.lock()
                    .backup(std::path::Path::new(&path), &Keys(keys))
                    .map(|_| ())
            })
            .await
        })
        .await
    }

    /// Go offline: stop the network driver after its current step (every step is durable).
    /// The wallet's files are released when the last reference to it goes.
    pub async fn shutdown(self: Arc<Self>) {
        let _ = on_runtime(async move {
            if let Some(l) = self
                .listener
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                l.abort();
            }
            if let Some(d) = self.driver.write().await.take() {
                d.stop().await;
            }
            Ok::<(), errors::Internal>(())
        })
        .await;
    }
}

fn closed() -> PayError {
    PayError::Offline("the wallet is closed".into())
}

impl Wallet {
    /// The driver, once connected to the relay (at most 30 s), for paying.
    async fn connected_driver(
        &self,
    ) -> Result<tokio::sync::RwLockReadGuard<'_, Option<Driver>>, PayError> {
        let guard = self.driver.read().await;
        guard
            .as_ref()
            .ok_or_else(closed)?
            .connected(Duration::from_secs(30), |_| {})
            .await
            .map_err(|e| PayError::Offline(e.to_string()))?;
        Ok(guard)
    }

    /// [`Wallet::next_event`] when already on the runtime.
    async fn next_event_here(self: Arc<Self>) -> Result<HistoryItem, WalletError> {
        let mut changes = self.lock().watch_changes();
        loop {
            if let Some(e) = self.lock().next_event()? {
                return Ok(e.into());
            }
            if changes.changed().await.is_err() {
                return Err(WalletError::Storage("the wallet was closed".into()));
            }
        }
    }
}

impl Drop for Wallet {
    fn drop(&mut self) {
        if let Some(l) = self
            .listener
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            l.abort();
        }
        if let (Some(d), Ok(rt)) = (self.driver.get_mut().take(), runtime()) {
            rt.spawn(d.stop());
        }
    }
}

fn no_routes(req: &PaymentRequest, e: offst_core::net::client::ClientError) -> PayError {
    let t = &req.invoice.terms;
    match e {
        offst_core::net::client::ClientError::Route(r) => {
            PayError::NoRoute(format!("can't pay {} {}: {r}", t.amount, t.currency))
        }
        e => PayError::Offline(e.to_string()),
    }
}
