//! The durable wallet: the protocol node over one SQLite database.
//!
//! Every input (a user action, a message from a friend, the passing of time) is one **durable
//! step**: the node handles it in memory, then one transaction writes what the node changed,
//! the messages it wants sent (the outbox) and the events it reports (history and the event
//! queue). Nothing is sent before that transaction commits, so a crash at any moment either
//! loses the whole input (and its sender sends it again) or keeps all of it. See
//! `docs/architecture.md`.

mod backup;
mod history;
pub mod keys;
mod network;
mod store;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use crate::protocol::amount::{Currency, Rate};
use crate::protocol::channel::Op;
use crate::protocol::identity::{Identity, NodeId};
use crate::protocol::message::Message;
use crate::protocol::node::{
    ArchivedRole, InvoiceStatus, Node, NodeError, Output, PartsError, PaymentStatus, RoutePlan,
    archived_invoice, archived_payment,
};
use crate::protocol::payment::{Invoice, InvoiceId, Receipt};

pub use backup::{BACKUP_FORMAT, BackupError, BackupInfo, inspect as inspect_backup};
pub use history::{EventKind, HistoryEntry};
pub use keys::{KdfCost, KeyFile, KeyStore, KeyStoreError, PassphraseKeys, RawKey, SecretKey};
pub use network::{Contact, Control, DRAIN_PERIOD_MS, FriendRequest, SEEN_PRUNE_EVERY_MS};
pub use store::{
    Durability, MIGRATIONS, SCHEMA_VERSION, profile_statements, tune as tune_connection,
};

use history::NewEntry;
use keys::{SALT_LEN, SealError, Sealed};

/// The database file inside a wallet directory.
pub const DB_FILE: &str = "wallet.db";
/// The lock file inside a wallet directory, held while a wallet is open.
pub const LOCK_FILE: &str = "wallet.lock";

/// Why the wallet refused or failed. Each says what a person can do about it.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Another process (or another `Wallet` in this one) has the directory open.
    #[error("the wallet in {dir} is in use by another process; close it first")]
    InUse {
        /// The directory.
        dir: String,
    },
    /// No wallet in the directory.
    #[error("there is no wallet in {dir}; create one or restore a backup")]
    NotFound {
        /// The directory.
        dir: String,
    },
    /// Creating a wallet where one exists.
    #[error("a wallet already exists in {dir}; open it instead")]
    AlreadyExists {
        /// The directory.
        dir: String,
    },
    /// The database file is damaged.
    #[error("the wallet database is damaged ({detail}); restore it from a backup")]
    Corrupt {
        /// What was found.
        detail: String,
    },
    /// The database was written by a newer version of the app.
    #[error(
        "the wallet was written by a newer version of Offst (schema {found}; this one reads up to {supported}); update the app"
    )]
    NewerSchema {
        /// The database's version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The key store gave a key that does not open this wallet. Nothing was read or written.
    #[error("wrong key: this passphrase or key file does not open this wallet")]
    WrongKey,
    /// The key store failed.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// The disk (or the configured size cap) is full. The step was not taken; nothing was lost.
    #[error(
        "the disk is full: the last action was not saved (nothing else is lost); free some space and try again"
    )]
    DiskFull,
    /// A file could not be read or written.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        detail: String,
    },
    /// Another storage failure.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The protocol refused a user action. Nothing changed.
    #[error(transparent)]
    Refused(#[from] NodeError),
    /// A backup could not be made or restored.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The operating system gave no randomness.
    #[error("no randomness available from the system: {0}")]
    Random(String),
}

impl WalletError {
    fn from_sqlite(e: rusqlite::Error) -> WalletError {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => WalletError::Corrupt {
                detail: e.to_string(),
            },
            Some(ErrorCode::DiskFull) => WalletError::DiskFull,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => WalletError::InUse {
                dir: "this directory".into(),
            },
            _ => WalletError::Storage(e.to_string()),
        }
    }

    fn io(path: &Path, e: impl std::fmt::Display) -> WalletError {
        WalletError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        }
    }

    fn random(e: getrandom::Error) -> WalletError {
        WalletError::Random(e.to_string())
    }
}

impl From<PartsError> for WalletError {
    fn from(e: PartsError) -> Self {
        WalletError::Corrupt {
            detail: e.to_string(),
        }
    }
}

/// Where the wallet's time comes from, in ms since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock moved by hand (tests, simulations).
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }
    /// Move forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    /// Set the time.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a wallet is opened.
#[derive(Clone)]
pub struct WalletOptions {
    /// How hard commits wait for the disk.
    pub durability: Durability,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Cap the database at about this many bytes (rounded to pages): steps that would grow it
    /// further fail with [`WalletError::DiskFull`], as on a full disk.
    pub max_size_bytes: Option<u64>,
    /// The forwarding rate a new wallet starts with.
    pub rate: Rate,
}

impl Default for WalletOptions {
    fn default() -> Self {
        WalletOptions {
            durability: Durability::Full,
            clock: Arc::new(SystemClock),
            max_size_bytes: None,
            rate: Rate { base: 0, ppm: 0 },
        }
    }
}

impl std::fmt::Debug for WalletOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletOptions")
            .field("durability", &self.durability)
            .field("max_size_bytes", &self.max_size_bytes)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// A message waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Its place in the outbox; pass to [`Wallet::outbox_sent`] once a relay holds it.
    pub seq: u64,
    /// The friend it is for.
    pub to: NodeId,
    /// What it is: [`MAIL_PROTOCOL`] (a protocol message), [`MAIL_CONTROL`] (a friend
    /// request or acceptance) or [`MAIL_INTRODUCED`] (a protocol message for a stranger).
    pub kind: u8,
    /// The encoded message.
    pub message: Vec<u8>,
}

/// An outbox entry holding a protocol message.
pub const MAIL_PROTOCOL: u8 = 0;
/// An outbox entry holding a control message (see `network.rs`).
pub const MAIL_CONTROL: u8 = 1;
/// An outbox entry holding a protocol message for someone who is not a friend (a buyer's
/// commit to its seller, the seller's answer), with the sender's mail key and relay so that
/// the recipient can answer (see `network.rs`).
pub const MAIL_INTRODUCED: u8 = 2;

/// What became of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Handled and saved.
    Applied,
    /// Refused by the protocol (a duplicate, a forgery, a stale move...); nothing changed.
    /// Acknowledge it anyway: it will never be accepted.
    Refused(String),
}

/// One currency with one friend, from our side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineView {
    /// The currency.
    pub currency: Currency,
    /// What the friend owes us (negative: what we owe them).
    pub balance: i128,
    /// How much we let them owe us.
    pub our_limit: u64,
    /// How much they let us owe them.
    pub their_limit: u64,
    /// Credit we have frozen toward them in payments under way.
    pub frozen_by_us: u64,
    /// Credit they have frozen toward us.
    pub frozen_by_them: u64,
    /// A new `our_limit` we set that waits for our turn to move (it takes effect then; the
    /// friend may hold the turn while offline).
    pub pending_limit: Option<u64>,
}

/// One friend: name, credit lines and recent history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FriendView {
    /// The friend.
    pub id: NodeId,
    /// The name we gave them.
    pub name: String,
    /// One per currency.
    pub lines: Vec<LineView>,
    /// Their history, newest first (up to the limit asked).
    pub history: Vec<HistoryEntry>,
}

/// Which side of a payment we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentRole {
    /// We pay.
    Buyer,
    /// We are paid.
    Seller,
}

/// One payment or invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentView {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Our side.
    pub role: PaymentRole,
    /// `in_flight`, `completed`, `cancelled` (buyer); `open`, `paid`, `cancelled` (seller).
    pub status: &'static str,
    /// The receipt, once a payment of ours completed.
    pub receipt: Option<Receipt>,
    /// Its history, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// What to read from history: newest first, `limit` rows, before `before` (a `seq`), about one
/// friend or one invoice.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    /// Only rows older than this `seq` (for the next page, the last `seq` of the previous).
    pub before: Option<u64>,
    /// At most this many rows (0: 50).
    pub limit: usize,
    /// Only about this friend.
    pub friend: Option<NodeId>,
    /// Only about this invoice.
    pub invoice: Option<InvoiceId>,
}

/// A wallet, open. Holds the directory's lock until dropped.
pub struct Wallet {
    dir: PathBuf,
    conn: Connection,
    identity: Identity,
    node: Node,
    clock: Arc<dyn Clock>,
    /// The settings bytes last written, to skip empty steps.
    last_settings: Vec<u8>,
    /// Set when a step failed and the state could not be read back: memory may differ from
    /// the disk, so every further step is refused until the wallet is opened again.
    broken: Option<String>,
    /// Signalled after every committed step, so a network driver sends new mail at once.
    outbox_signal: Arc<tokio::sync::Notify>,
    /// Counts committed steps, so an app waiting for events (or any change) wakes at once.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// How hard steps wait for the disk.
    durability: Durability,
    /// SQLite write transactions committed on this connection (see [`Wallet::disk_commits`]).
    disk_commits: Arc<AtomicU64>,
    /// Set while a group commit is open ([`Wallet::receive_envelopes`]).
    group: Option<Group>,
    /// Who waits on which payment of ours ([`Wallet::watch_payment`]).
    payment_watchers: HashMap<InvoiceId, tokio::sync::watch::Sender<u64>>,
    /// Steps committed without waiting for the disk ([`Wallet::pay_unsynced`]).
    unsynced: Unsynced,
    /// Set while such steps share one open transaction: each writes into it (inside a
    /// savepoint of its own) instead of committing, and the next flush ([`sync`]) or any other
    /// write commits them together ([`Wallet::close_deferred`]). Nothing they send leaves
    /// before their flush either way.
    deferred: bool,
    /// Held while the write-ahead log is flushed for [`sync`], so one flush serves everyone
    /// who waits while it runs.
    sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// When the envelope ids out of the replay window were last forgotten (`None`: not since
    /// the wallet was opened).
    seen_pruned_ms: Option<u64>,
    /// Contacts, the relay and the report privacy, answered from memory while SQLite's hooks
    /// say they are unchanged.
    reads: store::ReadCache,
    _lock: File,
}

impl Drop for Wallet {
    /// Steps still in the shared transaction are committed (not flushed: opening the wallet
    /// again flushes first), so closing a wallet keeps every step it took.
    fn drop(&mut self) {
        let _ = close_deferred(&self.conn, &mut self.deferred, &mut self.broken);
    }
}

/// Steps committed without waiting for the disk, so that several can share one flush
/// ([`sync`]). Their messages are held back until they are on disk.
#[derive(Debug, Default)]
struct Unsynced {
    /// Such steps committed so far.
    written: u64,
    /// How many of them are known to be on disk.
    synced: u64,
    /// For each one not on disk yet that queued messages: its number and its first outbox
    /// seq. The outbox holds back every message from the oldest of these on.
    held: VecDeque<(u64, u64)>,
    /// Steps lost before they reached the disk (their shared transaction was rolled back):
    /// the last one of each such run, the one before it, and why.
    lost: Vec<(u64, u64, String)>,
    /// While some step is not on disk: the history rows up to this seq are, and no row after
    /// it is shown to the app ([`Wallet::next_event`], [`Wallet::history`]), so the app never
    /// acts on an event a power cut could still undo. `None`: every row is on disk.
    shown_up_to: Option<u64>,
}

impl Unsynced {
    /// Everything committed is on disk (a commit that waited for the disk flushed the whole
    /// write-ahead log, with every earlier commit in it).
    fn all_synced(&mut self) {
        self.synced = self.written;
        self.held.clear();
        self.shown_up_to = None;
    }

    /// The steps up to `n` are on disk, and with them the history rows up to `rows` (the last
    /// row when the flush began).
    fn synced_through(&mut self, n: u64, rows: u64) {
        self.synced_to(n);
        self.shown_up_to = if self.synced >= self.written {
            None
        } else {
            Some(self.shown_up_to.map_or(rows, |s| s.max(rows)))
        };
    }

    /// The steps up to `n` are on disk.
    fn synced_to(&mut self, n: u64) {
        self.synced = self.synced.max(n);
        while self
            .held
            .front()
            .is_some_and(|(step, _)| *step <= self.synced)
        {
            self.held.pop_front();
        }
    }

    /// Every step taken and not yet on disk is lost.
    fn lose_pending(&mut self, why: String) {
        if self.written > self.synced {
            self.lost.push((self.synced, self.written, why));
        }
    }

    /// Why step `n` was lost, if it was.
    fn lost(&self, n: u64) -> Option<&str> {
        self.lost
            .iter()
            .find(|(after, through, _)| *after < n && n <= *through)
            .map(|(_, _, why)| why.as_str())
    }

    /// The first outbox seq that must not be sent yet.
    fn hold_from(&self) -> Option<u64> {
        self.held.front().map(|(_, seq)| *seq)
    }
}

/// A wallet shared by the tasks around it (the network driver, payers, the app API's server)
/// and the app's threads. It can be locked only through `lock` and `lock_async`
/// ([`crate::sync::Shared`]): a wallet locked with `Mutex::lock` itself would not wake the
/// tasks waiting for it.
pub type SharedWallet = crate::sync::Shared<Wallet>;

/// A step committed without waiting for the disk: [`sync`] returns once it is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the step is not on disk until `sync` returns"]
pub struct SyncTicket(u64);

/// Wait until the step of `ticket` is on disk. Steps committed while another flush is under
/// way share the next one (a group commit for the app's own steps: a merchant making many
/// invoices, a payer paying many sellers), and the flush runs without holding the wallet, so
/// received mail is handled meanwhile. Until then nothing the step sends leaves.
pub async fn sync(wallet: &SharedWallet, ticket: SyncTicket) -> Result<(), WalletError> {
    let (sync_lock, wal) = {
        let w = wallet.lock_async().await;
        if let Some(why) = w.unsynced.lost(ticket.0) {
            return Err(WalletError::Storage(format!(
                "the step was undone before it reached the disk ({why}); nothing of it was sent"
            )));
        }
        if w.unsynced.synced >= ticket.0 {
            return Ok(());
        }
        (w.sync_lock.clone(), w.wal_path())
    };
    let _flushing = sync_lock.lock().await;
    let target = {
        let mut w = wallet.lock_async().await;
        if w.unsynced.synced >= ticket.0 {
            return Ok(());
        }
        // The steps that share the open transaction are committed now, all at once.
        w.close_deferred()?;
        if let Some(why) = w.unsynced.lost(ticket.0) {
            return Err(WalletError::Storage(format!(
                "the step was undone before it reached the disk ({why}); nothing of it was sent"
            )));
        }
        (w.unsynced.written, w.last_history_seq()?)
    };
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let flushed = if multi {
        tokio::task::block_in_place(|| flush_file(&wal))
    } else {
        tokio::task::spawn_blocking(move || flush_file(&wal))
            .await
            .map_err(|e| WalletError::Storage(format!("the flush to disk did not finish: {e}")))?
    };
    let mut w = wallet.lock_async().await;
    w.check_flushed(flushed)?;
    w.unsynced.synced_through(target.0, target.1);
    w.outbox_signal.notify_one();
    // Events of the flushed steps are shown now: whoever waits for one looks again.
    w.changes.send_modify(|_| {});
    Ok(())
}

/// When `invoice` expires, for the history's index by invoice: from the node while it keeps the
/// payment or invoice, else from the archive (also a record archived by the step being
/// written, whose events are appended after its rows).
fn invoice_expiry(
    node: &Node,
    conn: &Connection,
    invoice: &InvoiceId,
) -> Result<Option<u64>, WalletError> {
    if let Some(e) = node.invoice_expiry(invoice) {
        return Ok(Some(e));
    }
    store::archived_expiry(conn, invoice)
}

/// How a payment's status reads in views.
fn payment_state(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::InFlight => "in_flight",
        PaymentStatus::Completed => "completed",
        PaymentStatus::Cancelled => "cancelled",
    }
}

/// How an invoice's status reads in views.
fn invoice_state(status: &InvoiceStatus) -> &'static str {
    match status {
        InvoiceStatus::Open => "open",
        InvoiceStatus::Paid(_) => "paid",
        InvoiceStatus::Cancelled => "cancelled",
    }
}

/// Run `commit` on `conn`; with `wait` false its commit does not wait for the disk
/// (`synchronous=NORMAL` for it alone, then `FULL` again). If `FULL` cannot be restored, the
/// wallet is marked `broken`: no further step may commit without waiting for the disk.
fn commit_waiting<T>(
    conn: &mut Connection,
    broken: &mut Option<String>,
    wait: bool,
    commit: impl FnOnce(&mut Connection) -> Result<T, WalletError>,
) -> Result<T, WalletError> {
    if !wait {
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(WalletError::from_sqlite)?;
    }
    let result = commit(conn);
    if !wait && let Err(e) = conn.execute_batch("PRAGMA synchronous = FULL") {
        *broken = Some(format!("could not restore synchronous=FULL: {e}"));
        return result.and(Err(WalletError::from_sqlite(e)));
    }
    result
}

/// Open the transaction that steps not waiting for the disk share, unless it is open. Its
/// commit does not wait for the disk (`synchronous=NORMAL` until it is committed): [`sync`]
/// flushes it.
fn open_deferred(
    conn: &Connection,
    deferred: &mut bool,
    broken: &mut Option<String>,
) -> Result<(), WalletError> {
    if *deferred {
        return Ok(());
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(WalletError::from_sqlite)?;
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Later commits must wait for the disk again.
        if let Err(again) = conn.execute_batch("PRAGMA synchronous = FULL") {
            *broken = Some(format!("could not restore synchronous=FULL: {again}"));
        }
        return Err(WalletError::from_sqlite(e));
    }
    *deferred = true;
    Ok(())
}

/// Commit the shared transaction, if one is open, and wait for the disk again on later
/// commits. On an error the transaction is rolled back (if SQLite has not already done so)
/// and every step in it is lost: the caller reads the node back from the disk and fails
/// their [`sync`] ([`Wallet::close_deferred`]).
fn close_deferred(
    conn: &Connection,
    deferred: &mut bool,
    broken: &mut Option<String>,
) -> Result<(), WalletError> {
    if !std::mem::take(deferred) {
        return Ok(());
    }
    let committed = conn.execute_batch("COMMIT");
    if committed.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    restore_full(conn, broken);
    committed.map_err(WalletError::from_sqlite)
}

/// Commits wait for the disk again; if that cannot be set, the wallet takes no further step.
fn restore_full(conn: &Connection, broken: &mut Option<String>) {
    if let Err(e) = conn.execute_batch("PRAGMA synchronous = FULL") {
        *broken = Some(format!("could not restore synchronous=FULL: {e}"));
    }
}

/// Run `write` inside a savepoint of the open transaction: if it fails, what it wrote is
/// undone and the rest of the transaction (the other steps in it) stays. `reads` forgets what
/// it read meanwhile (SQLite's hooks do not see a rollback to a savepoint).
fn in_savepoint(
    conn: &Connection,
    reads: &store::ReadCache,
    write: impl FnOnce() -> Result<(), WalletError>,
) -> Result<(), WalletError> {
    conn.execute_batch("SAVEPOINT step")
        .map_err(WalletError::from_sqlite)?;
    match write() {
        Ok(()) => conn
            .execute_batch("RELEASE step")
            .map_err(WalletError::from_sqlite),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO step; RELEASE step");
            reads.forget();
            Err(e)
        }
    }
}

/// Flush a file's data to the disk (`fdatasync`; on Apple systems `F_FULLFSYNC`).
fn flush_file(path: &Path) -> Result<(), WalletError> {
    File::open(path)
        .and_then(|f| f.sync_data())
        .map_err(|e| WalletError::io(path, e))
}

/// A group commit in progress.
#[derive(Debug, Default)]
struct Group {
    /// Steps written into the group's transaction.
    steps: u64,
    /// The first outbox seq they queued, if they queued any.
    first_sent: Option<i64>,
    /// Payments of ours those steps changed.
    payments: Vec<InvoiceId>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("dir", &self.dir)
            .field("id", &self.identity.id())
            .finish_non_exhaustive()
    }
}

fn lock_dir(dir: &Path) -> Result<File, WalletError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WalletError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(WalletError::InUse {
            dir: dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(WalletError::io(&path, e)),
    }
}

/// The associated data that binds a sealed identity to its wallet id.
fn identity_aad(id: &NodeId) -> Vec<u8> {
    let mut aad = b"offst wallet identity v1".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}

fn set_size_cap(conn: &Connection, cap: Option<u64>) -> Result<(), WalletError> {
    if let Some(bytes) = cap {
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(WalletError::from_sqlite)?;
        let pages = (bytes / u64::try_from(page.max(512)).unwrap_or(4096)).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(WalletError::from_sqlite)?;
    }
    Ok(())
}

/// Seal `identity` under a fresh key from `keys` and write it into `conn`'s meta.
fn store_identity(
    conn: &Connection,
    identity: &Identity,
    keys: &dyn KeyStore,
) -> Result<(), WalletError> {
    let salt: [u8; SALT_LEN] = keys::random().map_err(WalletError::random)?;
    let key = keys.key(&salt)?;
    let seed = zeroize::Zeroizing::new(identity.seed());
    let sealed = keys::seal(&key, &identity_aad(&identity.id()), seed.as_ref())
        .map_err(WalletError::random)?;
    store::put_meta(conn, "node_id", identity.id().as_bytes())?;
    store::put_meta(conn, "key_salt", &salt)?;
    store::put_meta(conn, "identity_nonce", &sealed.nonce)?;
    store::put_meta(conn, "identity_check", &sealed.check)?;
    store::put_meta(conn, "identity_sealed", &sealed.ciphertext)?;
    Ok(())
}

/// The wallet id stored in `conn`.
fn stored_id(conn: &Connection) -> Result<Option<NodeId>, WalletError> {
    match store::get_meta(conn, "node_id")? {
        None => Ok(None),
        Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map(|b| Some(NodeId::from_bytes(b)))
            .map_err(|_| WalletError::Corrupt {
                detail: "the stored wallet id is not 32 bytes".into(),
            }),
    }
}

/// Open the sealed identity in `conn` with `keys`. Reads only.
fn load_identity(conn: &Connection, keys: &dyn KeyStore) -> Result<Identity, WalletError> {
    let missing = |what: &str| WalletError::Corrupt {
        detail: format!("the wallet's {what} is missing"),
    };
    let id = stored_id(conn)?.ok_or_else(|| missing("id"))?;
    let arr = |what: &str, v: Vec<u8>| -> Result<Vec<u8>, WalletError> {
        if v.is_empty() {
            Err(missing(what))
        } else {
            Ok(v)
        }
    };
    let salt: [u8; SALT_LEN] = store::get_meta(conn, "key_salt")?
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| missing("key salt"))?;
    let sealed = Sealed {
        nonce: store::get_meta(conn, "identity_nonce")?
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| missing("identity nonce"))?,
        check: store::get_meta(conn, "identity_check")?
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| missing("key check"))?,
        ciphertext: arr(
            "sealed identity",
            store::get_meta(conn, "identity_sealed")?.unwrap_or_default(),
        )?,
    };
    let key = keys.key(&salt)?;
    let seed = keys::open(&key, &identity_aad(&id), &sealed).map_err(|e| match e {
        SealError::WrongKey => WalletError::WrongKey,
        SealError::Damaged => WalletError::Corrupt {
            detail: "the sealed identity does not authenticate".into(),
        },
    })?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| WalletError::Corrupt {
            detail: "the identity is not 32 bytes".into(),
        })?;
    let identity = Identity::from_seed(seed);
    if identity.id() != id {
        return Err(WalletError::Corrupt {
            detail: "the identity does not match the wallet id".into(),
        });
    }
    Ok(identity)
}

impl Wallet {
    /// Create a new wallet, with a fresh identity, in `dir` (created if missing).
    pub fn create(
        dir: &Path,
        keys: &dyn KeyStore,
        options: WalletOptions,
    ) -> Result<Wallet, WalletError> {
        let seed: [u8; 32] = keys::random().map_err(WalletError::random)?;
        Wallet::create_with_identity(dir, Identity::from_seed(seed), keys, options)
    }

    /// Create a new wallet in `dir` holding `identity` (for tests and imports).
    pub fn create_with_identity(
        dir: &Path,
        identity: Identity,
        keys: &dyn KeyStore,
        options: WalletOptions,
    ) -> Result<Wallet, WalletError> {
        std::fs::create_dir_all(dir).map_err(|e| WalletError::io(dir, e))?;
        let lock = lock_dir(dir)?;
        let mut conn = store::connect(&dir.join(DB_FILE), options.durability)?;
        store::migrate(&mut conn)?;
        if stored_id(&conn)?.is_some() {
            return Err(WalletError::AlreadyExists {
                dir: dir.display().to_string(),
            });
        }
        let mut node = Node::new(identity.clone(), options.rate);
        node.mark_all_changed();
        let changes = node.take_changes();
        let tx = conn.transaction().map_err(WalletError::from_sqlite)?;
        store_identity(&tx, &identity, keys)?;
        store::apply_changes(&tx, &changes, true)?;
        store::put_meta(&tx, "created_ms", &options.clock.now_ms().to_le_bytes())?;
        tx.commit().map_err(WalletError::from_sqlite)?;
        set_size_cap(&conn, options.max_size_bytes)?;
        let disk_commits = store::count_commits(&mut conn)?;
        let reads = store::ReadCache::install(&mut conn)?;
        Ok(Wallet {
            dir: dir.to_path_buf(),
            conn,
            identity,
            node,
            clock: options.clock,
            last_settings: changes.settings,
            broken: None,
            durability: options.durability,
            disk_commits,
            group: None,
            payment_watchers: HashMap::new(),
            unsynced: Unsynced::default(),
            deferred: false,
            sync_lock: Arc::default(),
            seen_pruned_ms: None,
            reads,
            outbox_signal: Arc::new(tokio::sync::Notify::new()),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            _lock: lock,
        })
    }

    /// Open the wallet in `dir`. A wrong key is refused before anything is written; an older
    /// schema is migrated; a newer one is refused.
    pub fn open(
        dir: &Path,
        keys: &dyn KeyStore,
        options: WalletOptions,
    ) -> Result<Wallet, WalletError> {
        let db = dir.join(DB_FILE);
        if !db.exists() {
            return Err(WalletError::NotFound {
                dir: dir.display().to_string(),
            });
        }
        let lock = lock_dir(dir)?;
        let mut conn = store::connect(&db, options.durability)?;
        let found = store::version(&conn)?;
        if found > SCHEMA_VERSION {
            return Err(WalletError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == 0 || stored_id(&conn)?.is_none() {
            return Err(WalletError::NotFound {
                dir: dir.display().to_string(),
            });
        }
        let identity = load_identity(&conn, keys)?;
        store::migrate(&mut conn)?;
        let parts = store::load_parts(&conn)?;
        let node = Node::from_parts(identity.clone(), &parts)?;
        set_size_cap(&conn, options.max_size_bytes)?;
        let disk_commits = store::count_commits(&mut conn)?;
        let reads = store::ReadCache::install(&mut conn)?;
        let mut wallet = Wallet {
            dir: dir.to_path_buf(),
            conn,
            identity,
            node,
            clock: options.clock,
            last_settings: parts.settings,
            broken: None,
            durability: options.durability,
            disk_commits,
            group: None,
            payment_watchers: HashMap::new(),
            unsynced: Unsynced::default(),
            deferred: false,
            sync_lock: Arc::default(),
            seen_pruned_ms: None,
            reads,
            outbox_signal: Arc::new(tokio::sync::Notify::new()),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            _lock: lock,
        };
        if wallet.durability == Durability::Full {
            // A process that ended between a step that did not wait for the disk and its
            // flush left that step in the system's cache only: flush it before any of its
            // messages can leave.
            let wal = wallet.wal_path();
            if wal.exists() {
                flush_file(&wal)?;
            }
        }
        if store::get_meta(&wallet.conn, "restore_pending")?.is_some() {
            wallet.finish_restore()?;
        }
        Ok(wallet)
    }

    /// After a restore: every channel resyncs with its friend (one durable step, which also
    /// clears the mark, so it happens exactly once).
    fn finish_restore(&mut self) -> Result<(), WalletError> {
        let friends = self.node.friends().count();
        self.step(
            |node, _| {
                let entry = NewEntry::new(
                    EventKind::Restored,
                    format!("restored from a backup; resyncing with {friends} friends"),
                );
                ((), node.restored(), vec![entry])
            },
            |tx, _| store::delete_meta(tx, "restore_pending"),
        )
    }

    /// This wallet's id.
    pub fn id(&self) -> NodeId {
        self.identity.id()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The protocol state, read-only.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Notified after each committed step (new mail may be in the outbox).
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_signal.clone()
    }

    /// Changes each time a step is committed (a new event, a new balance, ...): wait on it
    /// instead of polling, then read what is new.
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Durable steps committed since this wallet was opened (the steps of a group commit share
    /// one SQLite transaction; [`Wallet::disk_commits`] counts transactions).
    pub fn commits(&self) -> u64 {
        *self.changes.borrow()
    }

    /// SQLite write transactions committed since this wallet was opened: steps (one per step,
    /// or one per group commit), outbox bookkeeping, settings. What the disk sees.
    pub fn disk_commits(&self) -> u64 {
        self.disk_commits.load(Ordering::Relaxed)
    }

    /// The clock's time now.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// One durable step: run `f` on the node, then write in one transaction what it changed,
    /// the messages it sends, the events it reports (its own history rows too) and `extra`.
    /// If the transaction fails, the node is reloaded from the database (which the failed step
    /// did not touch) and the error returned: memory never runs ahead of the disk.
    ///
    /// Inside a group commit ([`Wallet::receive_envelopes`]) the step writes into the group's
    /// one transaction instead; nothing leaves (no signal, no outbox read by anyone else: the
    /// caller holds the wallet) until the group commits.
    fn step<T>(
        &mut self,
        f: impl FnOnce(&mut Node, u64) -> (T, Vec<Output>, Vec<NewEntry>),
        extra: impl FnOnce(&Connection, &T) -> Result<(), WalletError>,
    ) -> Result<T, WalletError> {
        self.step_with(false, f, extra)
    }

    /// [`Wallet::step`]; with `later`, the commit does not wait for the disk (the caller gets
    /// a [`SyncTicket`] from `unsynced_ticket` and waits in [`sync`]), and the messages the
    /// step queued are held back until it is on disk.
    fn step_with<T>(
        &mut self,
        later: bool,
        f: impl FnOnce(&mut Node, u64) -> (T, Vec<Output>, Vec<NewEntry>),
        extra: impl FnOnce(&Connection, &T) -> Result<(), WalletError>,
    ) -> Result<T, WalletError> {
        self.usable()?;
        let relax = later && self.durability == Durability::Full;
        if relax {
            self.hide_events_from_here()?;
        }
        if !relax && self.group.is_none() {
            // A step that waits for the disk commits the shared transaction first.
            self.close_deferred()?;
        }
        let now = self.clock.now_ms();
        let (value, outputs, mut entries) = f(&mut self.node, now);
        let changes = self.node.take_changes();
        let mut sends = Vec::new();
        for out in outputs {
            match out {
                Output::Send { to, message } => sends.push((to, message)),
                Output::Event(e) => entries.push(NewEntry::from_event(&e)),
            }
        }
        let touched: Vec<InvoiceId> = if self.payment_watchers.is_empty() {
            Vec::new()
        } else {
            changes.payments_reached.clone()
        };
        // The settings change seldom (the node stores its clock once a minute and reserves
        // places in blocks): most steps leave their row, and its page, alone.
        let settings_changed = changes.settings != self.last_settings;
        let unchanged = changes.channels.is_empty()
            && changes.pending.is_empty()
            && changes.queued.is_empty()
            && changes.payments.is_empty()
            && changes.invoices.is_empty()
            && changes.outcomes.is_empty()
            && changes.archived.is_empty()
            && !settings_changed;
        // Messages for someone who is not a friend carry our mail key and relay.
        let stranger = |to: &NodeId| self.node.channel(to).is_none();
        let me = if sends.iter().any(|(to, _)| stranger(to)) {
            self.introduction().ok().flatten()
        } else {
            None
        };
        let first_sent = std::cell::Cell::new(None::<i64>);
        let write = |conn: &Connection| -> Result<(), WalletError> {
            if !unchanged {
                store::apply_changes(conn, &changes, settings_changed)?;
            }
            if !sends.is_empty() {
                let mut put = conn
                    .prepare_cached(
                        "INSERT INTO outbox (recipient, message, created_ms, kind)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(WalletError::from_sqlite)?;
                for (to, message) in &sends {
                    let mut bytes = message
                        .encode()
                        .map_err(|e| WalletError::Storage(e.to_string()))?;
                    let mut kind = MAIL_PROTOCOL;
                    if let Some(me) = me.as_ref().filter(|_| stranger(to)) {
                        bytes = network::introduce(me, bytes)?;
                        kind = MAIL_INTRODUCED;
                    }
                    put.execute(params![
                        to.as_bytes(),
                        bytes,
                        history::clamp(now),
                        i64::from(kind)
                    ])
                    .map_err(WalletError::from_sqlite)?;
                    if first_sent.get().is_none() {
                        first_sent.set(Some(conn.last_insert_rowid()));
                    }
                }
            }
            for e in &entries {
                let expires = match e.invoice {
                    Some(i) => invoice_expiry(&self.node, conn, &i)?,
                    None => None,
                };
                history::append(conn, now, e, expires)?;
            }
            extra(conn, &value)
        };
        if let Some(group) = &mut self.group {
            // On an error the group's transaction is rolled back by whoever opened it.
            write(&self.conn)?;
            group.steps += 1;
            if group.first_sent.is_none() {
                group.first_sent = first_sent.get();
            }
            group.payments.extend(touched);
            self.last_settings = changes.settings;
            return Ok(value);
        }
        let result = if relax {
            // Into the transaction the steps waiting for the next flush share.
            open_deferred(&self.conn, &mut self.deferred, &mut self.broken)
                .and_then(|()| in_savepoint(&self.conn, &self.reads, || write(&self.conn)))
        } else {
            // The shared transaction was committed before this step began.
            commit_waiting(&mut self.conn, &mut self.broken, true, |conn| {
                let tx = conn.transaction().map_err(WalletError::from_sqlite)?;
                write(&tx)?;
                // An empty transaction commits without touching the disk.
                tx.commit().map_err(WalletError::from_sqlite)
            })
        };
        match result {
            Ok(()) => {
                self.last_settings = changes.settings;
                if later {
                    self.unsynced.written += 1;
                }
                if !relax {
                    // This commit waited for the disk (or this wallet's never do): everything
                    // before it is as durable as it gets.
                    self.unsynced.all_synced();
                } else if let Some(seq) = first_sent.get() {
                    // Its messages wait for the flush.
                    let seq = u64::try_from(seq).unwrap_or_default();
                    self.unsynced.held.push_back((self.unsynced.written, seq));
                }
                self.committed(1, &touched);
                Ok(value)
            }
            Err(e) => {
                self.check_deferred(&e);
                self.recover();
                Err(e)
            }
        }
    }

    /// After a commit of `steps` steps that changed `payments`: wake the driver, whoever
    /// watches for any change, and whoever waits on one of those payments.
    fn committed(&mut self, steps: u64, payments: &[InvoiceId]) {
        self.outbox_signal.notify_one();
        self.changes.send_modify(|n| *n = n.wrapping_add(steps));
        for id in payments {
            if let Some(w) = self.payment_watchers.get(id) {
                if w.receiver_count() == 0 {
                    self.payment_watchers.remove(id);
                } else {
                    w.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        }
    }

    /// Changes each time a step that changed our payment `invoice` is committed: a payer waits
    /// on this rather than on every change of the wallet, so a thousand payments under way do
    /// not each wake for every step of the others.
    pub fn watch_payment(&mut self, invoice: InvoiceId) -> tokio::sync::watch::Receiver<u64> {
        if self.payment_watchers.len() >= 64 {
            // Forget the payments nobody waits on any more.
            self.payment_watchers.retain(|_, w| w.receiver_count() > 0);
        }
        self.payment_watchers
            .entry(invoice)
            .or_insert_with(|| tokio::sync::watch::Sender::new(0))
            .subscribe()
    }

    /// Commit the steps that share the open transaction ([`Wallet::deferred`]) before anything
    /// else writes. If that fails they are lost: the node is read back from the disk and their
    /// [`sync`] fails.
    pub(crate) fn close_deferred(&mut self) -> Result<(), WalletError> {
        let result = close_deferred(&self.conn, &mut self.deferred, &mut self.broken);
        if let Err(e) = &result {
            self.unsynced.lose_pending(e.to_string());
            self.recover();
        }
        result
    }

    /// After a step failed inside the shared transaction: its savepoint undid it, but some
    /// errors (a full disk, an I/O error) make SQLite roll back the whole transaction, and
    /// with it every step that waited there for the next flush. Those are lost: their
    /// [`sync`] fails, and the caller reads the node back from the disk.
    fn check_deferred(&mut self, error: &WalletError) {
        if self.deferred && self.conn.is_autocommit() {
            self.deferred = false;
            restore_full(&self.conn, &mut self.broken);
            self.unsynced.lose_pending(error.to_string());
        }
    }

    /// Refuse to work once a failed step left memory that could not be read back from disk.
    fn usable(&self) -> Result<(), WalletError> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(WalletError::Storage(format!(
                "a step failed and the wallet could not read its state back ({why}); open it again"
            ))),
        }
    }

    /// After a failed transaction: read the state back from the disk, or refuse further steps.
    fn recover(&mut self) {
        if let Err(again) = self.reload() {
            self.broken = Some(again.to_string());
        }
    }

    /// Handle several envelopes from the relay as one group commit: each is its own step in
    /// memory, in order, and all of them reach the disk in one transaction (one fsync). Nothing
    /// leaves before that commit, and the caller acknowledges the envelopes only after it.
    ///
    /// If any step's storage fails, or the commit does, the whole group is rolled back, the node
    /// is read back from the disk and the error returned: none of the envelopes counts as
    /// received, and the relay delivers them all again.
    pub fn receive_envelopes<E: AsRef<[u8]>>(
        &mut self,
        envelopes: &[E],
    ) -> Result<Vec<Delivery>, WalletError> {
        if let [one] = envelopes {
            return Ok(vec![self.receive_envelope(one.as_ref())?]);
        }
        self.receive_group(envelopes, false).map(|(d, _)| d)
    }

    /// [`Wallet::receive_envelopes`] (also for a single envelope), but the group's commit does
    /// not wait for the disk: [`sync`] with the returned ticket flushes it without holding the
    /// wallet, so the wallet's other work goes on meanwhile and no thread waits for the disk
    /// while it holds the wallet. Until that flush nothing the group sends leaves (the outbox
    /// holds it back) and its events are not shown to the app ([`Wallet::next_event`]); the
    /// caller must not acknowledge the envelopes before it either. A power cut before the flush
    /// undoes the group, and the relay, which still holds the envelopes, delivers them again.
    pub fn receive_envelopes_unsynced<E: AsRef<[u8]>>(
        &mut self,
        envelopes: &[E],
    ) -> Result<(Vec<Delivery>, SyncTicket), WalletError> {
        self.receive_group(envelopes, true)
    }

    fn receive_group<E: AsRef<[u8]>>(
        &mut self,
        envelopes: &[E],
        later: bool,
    ) -> Result<(Vec<Delivery>, SyncTicket), WalletError> {
        self.usable()?;
        self.close_deferred()?;
        let relax = later && self.durability == Durability::Full;
        if relax {
            self.hide_events_from_here()?;
            self.conn
                .execute_batch("PRAGMA synchronous = NORMAL")
                .map_err(WalletError::from_sqlite)?;
        }
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            if relax {
                restore_full(&self.conn, &mut self.broken);
            }
            return Err(WalletError::from_sqlite(e));
        }
        self.group = Some(Group::default());
        let mut out = Vec::with_capacity(envelopes.len());
        // Forgetting the ids out of the replay window, when due, is part of the group.
        let pruned_before = self.seen_pruned_ms;
        let mut failed = self.prune_seen_if_due().err();
        if failed.is_none() {
            // Opening is pure (no state): all at once, with one batch of signature checks.
            for e in crate::net::envelope::open_all(&self.identity, envelopes) {
                match self.receive_opened(e) {
                    Ok(d) => out.push(d),
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
        }
        let group = self.group.take().unwrap_or_default();
        let result = match failed {
            Some(err) => Err(err),
            None => self
                .conn
                .execute_batch("COMMIT")
                .map_err(WalletError::from_sqlite),
        };
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if relax {
            // Later commits wait for the disk again (else the wallet takes no further step).
            restore_full(&self.conn, &mut self.broken);
        }
        match result {
            Ok(()) => {
                if relax {
                    self.unsynced.written += 1;
                    if let Some(seq) = group.first_sent {
                        // Its messages wait for the flush.
                        let seq = u64::try_from(seq).unwrap_or_default();
                        self.unsynced.held.push_back((self.unsynced.written, seq));
                    }
                } else {
                    self.unsynced.all_synced();
                }
                self.committed(group.steps, &group.payments);
                Ok((out, self.unsynced_ticket()))
            }
            Err(e) => {
                self.seen_pruned_ms = pruned_before;
                self.recover();
                Err(e)
            }
        }
    }

    /// Before a step that does not wait for the disk: if every step so far is on disk, so is
    /// every history row so far, and the rows from here on stay hidden until their flush.
    fn hide_events_from_here(&mut self) -> Result<(), WalletError> {
        let u = &self.unsynced;
        if u.synced >= u.written || u.shown_up_to.is_none() {
            let last = self.last_history_seq()?;
            self.unsynced.shown_up_to = Some(last);
        }
        Ok(())
    }

    /// Every step committed so far on disk now, waiting for the disk here, with the wallet held
    /// (for the app's views; the network's steps use [`sync`], which does not hold it). At once
    /// if nothing waits for a flush.
    pub fn flush_now(&mut self) -> Result<(), WalletError> {
        if self.unsynced.synced >= self.unsynced.written {
            return Ok(());
        }
        self.close_deferred()?;
        self.check_flushed(flush_file(&self.wal_path()))?;
        // Nobody else wrote meanwhile: everything committed is on disk.
        self.unsynced.all_synced();
        self.outbox_signal.notify_one();
        self.changes.send_modify(|_| {});
        Ok(())
    }

    /// After a flush of the log: if the disk refused, what was committed may not survive a
    /// power cut, so the wallet takes no further step (and sends none of it) until it is opened
    /// again, which flushes first.
    fn check_flushed(&mut self, flushed: Result<(), WalletError>) -> Result<(), WalletError> {
        flushed.inspect_err(|e| {
            self.broken = Some(format!("the disk refused to flush the wallet's log ({e})"));
        })
    }

    /// The last history row's seq (0 for none). Read at every step that does not wait for the
    /// disk and at every flush, so through a cached statement.
    fn last_history_seq(&self) -> Result<u64, WalletError> {
        self.conn
            .prepare_cached("SELECT MAX(seq) FROM history")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, Option<i64>>(0)))
            .map(|n| n.and_then(|n| u64::try_from(n).ok()).unwrap_or_default())
            .map_err(WalletError::from_sqlite)
    }

    /// The last history row the app may see: every row after it belongs to a step not on disk
    /// yet ([`Unsynced::shown_up_to`]).
    fn shown_up_to(&self) -> i64 {
        let u = &self.unsynced;
        match u.shown_up_to {
            Some(last) if u.synced < u.written => history::clamp(last),
            _ => i64::MAX,
        }
    }

    /// Rebuild the node from the database.
    fn reload(&mut self) -> Result<(), WalletError> {
        let parts = store::load_parts(&self.conn)?;
        self.node = Node::from_parts(self.identity.clone(), &parts)?;
        self.last_settings = parts.settings;
        Ok(())
    }

    /// A step for a user action the node may refuse: the history rows in `entries` are written
    /// only if it is accepted, in the same transaction as its effects.
    fn action<T>(
        &mut self,
        f: impl FnOnce(&mut Node, u64) -> Result<(T, Vec<Output>), NodeError>,
        entries: impl FnOnce(&T) -> Vec<NewEntry>,
        extra: impl FnOnce(&Connection, &T) -> Result<(), WalletError>,
    ) -> Result<T, WalletError> {
        self.action_with(false, f, entries, extra)
    }

    /// [`Wallet::action`], not waiting for the disk with `later` (see [`Wallet::step_with`]).
    fn action_with<T>(
        &mut self,
        later: bool,
        f: impl FnOnce(&mut Node, u64) -> Result<(T, Vec<Output>), NodeError>,
        entries: impl FnOnce(&T) -> Vec<NewEntry>,
        extra: impl FnOnce(&Connection, &T) -> Result<(), WalletError>,
    ) -> Result<T, WalletError> {
        self.step_with(
            later,
            |node, now| match f(node, now) {
                Ok((value, out)) => {
                    let rows = entries(&value);
                    (Ok(value), out, rows)
                }
                Err(e) => (Err(e), Vec::new(), Vec::new()),
            },
            |tx, value| match value {
                Ok(v) => extra(tx, v),
                Err(_) => Ok(()),
            },
        )?
        .map_err(WalletError::Refused)
    }

    /// Record in history what an app did through `offst serve`, under the app's name;
    /// `refused`: what it tried and was refused.
    pub fn record_app(
        &mut self,
        refused: bool,
        app: &str,
        what: &str,
        invoice: Option<InvoiceId>,
    ) -> Result<(), WalletError> {
        let kind = if refused {
            EventKind::AppRefused
        } else {
            EventKind::AppAction
        };
        let mut entry = NewEntry::new(kind, format!("app {app:?}: {what}"));
        if let Some(i) = invoice {
            entry = entry.invoice(i);
        }
        self.step(|_, _| ((), Vec::new(), vec![entry]), |_, _| Ok(()))
    }

    /// Add a friend, under `name`. Both must add each other.
    pub fn add_friend(&mut self, friend: NodeId, name: &str) -> Result<(), WalletError> {
        let name = name.trim().to_string();
        let added = history::clamp(self.clock.now_ms());
        let shown = if name.is_empty() {
            friend.short()
        } else {
            name.clone()
        };
        self.action(
            |node, _| node.add_friend(friend).map(|()| ((), Vec::new())),
            |_| {
                vec![
                    NewEntry::new(EventKind::FriendAdded, format!("added {shown} as a friend"))
                        .friend(friend),
                ]
            },
            |tx, _| {
                tx.execute(
                    "INSERT OR REPLACE INTO friends (friend, name, added_ms) VALUES (?1, ?2, ?3)",
                    params![friend.as_bytes(), name, added],
                )
                .map(|_| ())
                .map_err(WalletError::from_sqlite)
            },
        )
    }

    /// Set how much `friend` may owe us in `currency` (the friend sees it).
    pub fn set_limit(
        &mut self,
        friend: NodeId,
        currency: Currency,
        limit: u64,
    ) -> Result<(), WalletError> {
        let entry = NewEntry::new(
            EventKind::LimitSet,
            format!(
                "you let {} owe you up to {limit} {currency}",
                friend.short()
            ),
        )
        .friend(friend)
        .amount(currency, history::clamp(limit));
        self.action(
            |node, _| node.set_limit(friend, currency, limit).map(|out| ((), out)),
            |_| vec![entry],
            |_, _| Ok(()),
        )
    }

    /// Change the rate we charge for forwarding payments.
    pub fn set_rate(&mut self, rate: Rate) -> Result<(), WalletError> {
        self.step(
            |node, _| {
                node.set_rate(rate);
                ((), Vec::new(), Vec::new())
            },
            |_, _| Ok(()),
        )
    }

    /// Issue an invoice for `amount` of `currency`, open for `ttl_ms` from now.
    pub fn create_invoice(
        &mut self,
        currency: Currency,
        amount: u64,
        ttl_ms: u64,
        memo: &str,
    ) -> Result<Invoice, WalletError> {
        self.create_invoice_with(false, currency, amount, ttl_ms, memo)
    }

    /// [`Wallet::create_invoice`], without waiting for the disk: the invoice is on disk once
    /// [`sync`] returned for the ticket, and must not be handed out before.
    pub fn create_invoice_unsynced(
        &mut self,
        currency: Currency,
        amount: u64,
        ttl_ms: u64,
        memo: &str,
    ) -> Result<(Invoice, SyncTicket), WalletError> {
        let invoice = self.create_invoice_with(true, currency, amount, ttl_ms, memo)?;
        Ok((invoice, self.unsynced_ticket()))
    }

    fn create_invoice_with(
        &mut self,
        later: bool,
        currency: Currency,
        amount: u64,
        ttl_ms: u64,
        memo: &str,
    ) -> Result<Invoice, WalletError> {
        let entropy: [u8; 32] = keys::random().map_err(WalletError::random)?;
        let memo = memo.to_string();
        self.action_with(
            later,
            |node, now| {
                let expires = now.saturating_add(ttl_ms);
                node.create_invoice(currency, amount, expires, memo, entropy)
                    .map(|inv| (inv, Vec::new()))
            },
            |inv: &Invoice| {
                let t = &inv.terms;
                vec![
                    NewEntry::new(
                        EventKind::InvoiceCreated,
                        format!("invoice for {} {}", t.amount, t.currency),
                    )
                    .invoice(t.id)
                    .amount(t.currency, history::clamp(t.amount)),
                ]
            },
            |_, _| Ok(()),
        )
    }

    /// Pay `invoice` over `routes` (see [`RoutePlan`]).
    pub fn pay(&mut self, invoice: &Invoice, routes: Vec<RoutePlan>) -> Result<(), WalletError> {
        self.pay_with(false, invoice, routes)
    }

    /// [`Wallet::pay`], without waiting for the disk: the payment is on disk once [`sync`]
    /// returned for the ticket, and nothing it sends leaves before.
    pub fn pay_unsynced(
        &mut self,
        invoice: &Invoice,
        routes: Vec<RoutePlan>,
    ) -> Result<SyncTicket, WalletError> {
        self.pay_with(true, invoice, routes)?;
        Ok(self.unsynced_ticket())
    }

    /// A ticket for every step committed so far: [`sync`] with it returns once they are all on
    /// disk (at once if they are). Whoever tells the app of something a received message did
    /// (a payment's receipt, say) waits for this first, since a power cut could still undo it.
    pub fn ticket_now(&self) -> SyncTicket {
        self.unsynced_ticket()
    }

    /// The ticket of the last step committed without waiting for the disk.
    fn unsynced_ticket(&self) -> SyncTicket {
        SyncTicket(self.unsynced.written)
    }

    /// The write-ahead log of the wallet's database, which [`sync`] flushes.
    fn wal_path(&self) -> PathBuf {
        self.dir.join(format!("{DB_FILE}-wal"))
    }

    fn pay_with(
        &mut self,
        later: bool,
        invoice: &Invoice,
        routes: Vec<RoutePlan>,
    ) -> Result<(), WalletError> {
        invoice.verify().map_err(NodeError::from)?;
        self.pay_checked(later, invoice, routes)
    }

    /// [`Wallet::pay_with`] for an invoice whose bounds and signature the caller checked
    /// (with a payment request's, in one batch).
    pub(crate) fn pay_checked(
        &mut self,
        later: bool,
        invoice: &Invoice,
        routes: Vec<RoutePlan>,
    ) -> Result<(), WalletError> {
        let entropy: [u8; 32] = keys::random().map_err(WalletError::random)?;
        let t = &invoice.terms;
        let total: u64 = routes
            .iter()
            .map(|r| {
                r.fees
                    .iter()
                    .fold(r.dest_payment, |a, f| a.saturating_add(*f))
            })
            .fold(0u64, |a, b| a.saturating_add(b));
        let entry = NewEntry::new(
            EventKind::PaymentStarted,
            format!(
                "paying {} {} to {} ({} in fees) over {} route(s)",
                t.amount,
                t.currency,
                t.seller.short(),
                total.saturating_sub(t.amount),
                routes.len()
            ),
        )
        .invoice(t.id)
        .friend(t.seller)
        .amount(t.currency, -history::clamp(total));
        self.action_with(
            later,
            |node, now| {
                node.pay_checked(now, invoice, routes, entropy)
                    .map(|out| ((), out))
            },
            |_| vec![entry],
            |_, _| Ok(()),
        )
    }

    /// Add routes to a payment of ours still under way, after some of its routes were
    /// cancelled (see [`Node::add_routes`]).
    pub fn add_routes(
        &mut self,
        invoice: InvoiceId,
        routes: Vec<RoutePlan>,
    ) -> Result<(), WalletError> {
        let entropy: [u8; 32] = keys::random().map_err(WalletError::random)?;
        let entry = NewEntry::new(
            EventKind::PaymentStarted,
            format!("retrying the rest over {} more route(s)", routes.len()),
        )
        .invoice(invoice);
        self.action(
            |node, _| {
                node.add_routes(invoice, routes, entropy)
                    .map(|out| ((), out))
            },
            |_| vec![entry],
            |_, _| Ok(()),
        )
    }

    /// Ask the seller to call off a payment of ours that has no receipt yet (see
    /// [`Node::abandon_payment`]: the seller decides, and a payment it already took completes).
    pub fn abandon_payment(&mut self, invoice: InvoiceId) -> Result<(), WalletError> {
        self.action(
            |node, _| node.abandon_payment(invoice).map(|out| ((), out)),
            |_| {
                vec![
                    NewEntry::new(
                        EventKind::PaymentAbandoned,
                        "you asked the seller to call this payment off".into(),
                    )
                    .invoice(invoice),
                ]
            },
            |_, _| Ok(()),
        )
    }

    /// Propose to reset the channel with `friend` to our view of it.
    pub fn propose_reset(&mut self, friend: NodeId) -> Result<(), WalletError> {
        self.action(
            |node, _| node.propose_reset(friend).map(|out| ((), out)),
            |_| Vec::new(),
            |_, _| Ok(()),
        )
    }

    /// Accept the reset `friend` proposed.
    pub fn accept_reset(&mut self, friend: NodeId) -> Result<(), WalletError> {
        self.action(
            |node, _| node.accept_reset(friend).map(|out| ((), out)),
            |_| Vec::new(),
            |_, _| Ok(()),
        )
    }

    /// Decline the reset `friend` proposed.
    pub fn decline_reset(&mut self, friend: NodeId) -> Result<(), WalletError> {
        self.action(
            |node, _| node.decline_reset(friend).map(|()| ((), Vec::new())),
            |_| Vec::new(),
            |_, _| Ok(()),
        )
    }

    /// Handle a message from `from`. Storage failures are errors (do not acknowledge the
    /// message: it must be delivered again); protocol refusals are a [`Delivery::Refused`]
    /// (acknowledge it: it will never be accepted).
    pub fn receive(&mut self, from: NodeId, bytes: &[u8]) -> Result<Delivery, WalletError> {
        match Message::decode(bytes) {
            Ok(message) => self.handle_protocol(from, message, |_, _| Ok(())),
            Err(e) => Ok(Delivery::Refused(e.to_string())),
        }
    }

    /// The durable step for a protocol message from `from`, writing `extra` with it (which sees
    /// whether the node applied the message).
    pub(crate) fn handle_protocol(
        &mut self,
        from: NodeId,
        message: Message,
        extra: impl FnOnce(&Connection, &Delivery) -> Result<(), WalletError>,
    ) -> Result<Delivery, WalletError> {
        self.step(
            |node, now| match node.handle_message(now, from, message) {
                Ok(out) => (Delivery::Applied, out, Vec::new()),
                Err(e) => (Delivery::Refused(e.to_string()), Vec::new(), Vec::new()),
            },
            extra,
        )
    }

    /// Let time pass: expired invoices of ours are cancelled.
    pub fn tick(&mut self) -> Result<(), WalletError> {
        self.step(|node, now| ((), node.tick(now), Vec::new()), |_, _| Ok(()))
    }

    /// Queue again whatever friends may not have received (after reconnecting). Duplicates are
    /// dropped by the receivers.
    pub fn resend(&mut self) -> Result<(), WalletError> {
        self.step(|node, _| ((), node.resend(), Vec::new()), |_, _| Ok(()))
    }

    /// The oldest `limit` messages waiting to be sent.
    pub fn outbox(&self, limit: usize) -> Result<Vec<Outgoing>, WalletError> {
        self.outbox_after(0, limit)
    }

    /// The oldest `limit` messages waiting to be sent whose seq is above `after` (a sender
    /// that has sent everything up to `after` reads only what is new). Messages of a step
    /// that is not on disk yet ([`Wallet::pay_unsynced`]), and all after them, are held back
    /// until it is.
    pub fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<Outgoing>, WalletError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, recipient, message, kind FROM outbox WHERE seq > ?1 AND seq < ?3
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(WalletError::from_sqlite)?;
        let before = self.unsynced.hold_from().map_or(i64::MAX, history::clamp);
        let rows = stmt
            .query_map(
                params![
                    history::clamp(after),
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    before
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .map_err(WalletError::from_sqlite)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, to, message, kind) = row.map_err(WalletError::from_sqlite)?;
            let to: [u8; 32] = to.try_into().map_err(|_| WalletError::Corrupt {
                detail: "an outbox recipient is not 32 bytes".into(),
            })?;
            out.push(Outgoing {
                seq: u64::try_from(seq).unwrap_or_default(),
                to: NodeId::from_bytes(to),
                kind: u8::try_from(kind).unwrap_or(u8::MAX),
                message,
            });
        }
        Ok(out)
    }

    /// Messages waiting to be sent.
    pub fn outbox_len(&self) -> Result<u64, WalletError> {
        self.count("SELECT COUNT(*) FROM outbox")
    }

    /// A message left: a relay holds it now. Idempotent.
    pub fn outbox_sent(&mut self, seq: u64) -> Result<(), WalletError> {
        self.outbox_sent_all(&[seq])
    }

    /// Several messages left: relays hold them now. One transaction; idempotent.
    ///
    /// This commit does not wait for the disk even when the wallet's steps do
    /// (`synchronous=NORMAL` for this one transaction): the next step's commit makes it
    /// durable. Losing it in a power cut costs nothing but a resend, which the friend's
    /// channel recognises as a copy and ignores.
    pub fn outbox_sent_all(&mut self, seqs: &[u64]) -> Result<(), WalletError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let delete = |conn: &Connection| -> Result<(), WalletError> {
            let mut del = conn
                .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                .map_err(WalletError::from_sqlite)?;
            for seq in seqs {
                del.execute([history::clamp(*seq)])
                    .map_err(WalletError::from_sqlite)?;
            }
            Ok(())
        };
        if self.deferred {
            // Joins the open transaction: it commits with the steps there, without waiting
            // for the disk either, and losing it costs only a resend as above.
            return in_savepoint(&self.conn, &self.reads, || delete(&self.conn));
        }
        let relax = self.durability == Durability::Full;
        commit_waiting(&mut self.conn, &mut self.broken, !relax, |conn| {
            let tx = conn.transaction().map_err(WalletError::from_sqlite)?;
            delete(&tx)?;
            tx.commit().map_err(WalletError::from_sqlite)
        })
    }

    fn count(&self, sql: &str) -> Result<u64, WalletError> {
        self.conn
            .query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or_default())
            .map_err(WalletError::from_sqlite)
    }

    /// The oldest event the app has not handled yet.
    pub fn next_event(&self) -> Result<Option<HistoryEntry>, WalletError> {
        let sql = format!(
            "SELECT {} FROM history WHERE seq > (SELECT up_to FROM events_handled)
             AND seq <= ?1 ORDER BY seq LIMIT 1",
            history::COLUMNS
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_row([self.shown_up_to()], history::read_row)
                    .optional()
            })
            .map_err(WalletError::from_sqlite)?
            .transpose()
            .map_err(|detail| WalletError::Corrupt { detail })
    }

    /// The app handled event `seq`, and so every event before it: they leave the queue (they
    /// stay in history). Idempotent; an older `seq` than one handled before changes nothing,
    /// and one past the newest event handles only those there are.
    pub fn event_handled(&mut self, seq: u64) -> Result<(), WalletError> {
        self.close_deferred()?;
        self.conn
            .prepare_cached(
                "UPDATE events_handled SET up_to = MAX(up_to,
                     MIN(?1, ?2, (SELECT COALESCE(MAX(seq), 0) FROM history)))",
            )
            .and_then(|mut s| s.execute([history::clamp(seq), self.shown_up_to()]))
            .map(|_| ())
            .map_err(WalletError::from_sqlite)
    }

    /// Events not handled yet.
    pub fn pending_events(&self) -> Result<u64, WalletError> {
        self.conn
            .prepare_cached(
                "SELECT COUNT(*) FROM history WHERE seq > (SELECT up_to FROM events_handled)
                 AND seq <= ?1",
            )
            .and_then(|mut s| s.query_row([self.shown_up_to()], |r| r.get::<_, i64>(0)))
            .map(|n| u64::try_from(n).unwrap_or_default())
            .map_err(WalletError::from_sqlite)
    }

    /// Rows of history, newest first (see [`HistoryQuery`]).
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, WalletError> {
        let limit = if q.limit == 0 {
            50
        } else {
            q.limit.min(10_000)
        };
        let sql = history::query_sql(q.friend.is_some(), q.invoice.is_some());
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(WalletError::from_sqlite)?;
        // Rows of steps not on disk yet are not shown.
        let before = q
            .before
            .map_or(i64::MAX, history::clamp)
            .min(self.shown_up_to().saturating_add(1));
        let friend = q.friend.map(|f| f.as_bytes().to_vec());
        let invoice = match q.invoice {
            Some(i) => {
                let expires = invoice_expiry(&self.node, &self.conn, &i)?;
                Some((i.0.to_vec(), expires.map_or(0, history::clamp)))
            }
            None => None,
        };
        let limit = i64::try_from(limit).unwrap_or(50);
        let mut params: Vec<(&str, &dyn rusqlite::ToSql)> = vec![("?1", &before), ("?4", &limit)];
        if let Some(f) = &friend {
            params.push(("?2", f));
        }
        if let Some((i, expires)) = &invoice {
            params.push(("?3", i));
            params.push(("?5", expires));
        }
        let rows = stmt
            .query_map(params.as_slice(), history::read_row)
            .map_err(WalletError::from_sqlite)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(
                row.map_err(WalletError::from_sqlite)?
                    .map_err(|detail| WalletError::Corrupt { detail })?,
            );
        }
        Ok(out)
    }

    /// Rows of history in all.
    pub fn history_len(&self) -> Result<u64, WalletError> {
        self.count("SELECT COUNT(*) FROM history")
    }

    /// One friend: name, credit lines, and the latest `recent` rows of their history.
    pub fn friend_view(&self, friend: NodeId, recent: usize) -> Result<FriendView, WalletError> {
        let ch = self
            .node
            .channel(&friend)
            .ok_or(WalletError::Refused(NodeError::UnknownFriend(friend)))?;
        let side = ch.local_side();
        let mut lines: Vec<LineView> = ch
            .state()
            .lines
            .iter()
            .map(|(c, l)| LineView {
                currency: *c,
                balance: l.balance_of(side),
                our_limit: l.limit_of(side),
                their_limit: l.limit_of(side.other()),
                frozen_by_us: l.frozen_by(side),
                frozen_by_them: l.frozen_by(side.other()),
                pending_limit: None,
            })
            .collect();
        // Limits set but not yet sent (the last one of each currency is what will hold).
        for op in ch.queue() {
            if let Op::SetLimit { currency, limit } = op {
                match lines.iter_mut().find(|l| l.currency == *currency) {
                    Some(l) => l.pending_limit = Some(*limit),
                    None => lines.push(LineView {
                        currency: *currency,
                        balance: 0,
                        our_limit: 0,
                        their_limit: 0,
                        frozen_by_us: 0,
                        frozen_by_them: 0,
                        pending_limit: Some(*limit),
                    }),
                }
            }
        }
        let name: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM friends WHERE friend = ?1",
                [friend.as_bytes()],
                |r| r.get(0),
            )
            .optional()
            .map_err(WalletError::from_sqlite)?;
        Ok(FriendView {
            id: friend,
            name: name.unwrap_or_default(),
            lines,
            history: self.history(&HistoryQuery {
                friend: Some(friend),
                limit: recent,
                ..HistoryQuery::default()
            })?,
        })
    }

    /// One payment (ours) or invoice (ours), with its whole history; also one the node no longer
    /// keeps in memory, from the archive. What it shows is on disk: an app acts on it (a shop
    /// hands over the goods once an invoice reads paid), so steps not flushed yet are flushed
    /// first ([`Wallet::flush_now`]).
    pub fn payment_view(&mut self, invoice: InvoiceId) -> Result<PaymentView, WalletError> {
        self.flush_now()?;
        let (role, status, receipt) = if let Some((status, receipt)) = self.node.payment(&invoice) {
            (PaymentRole::Buyer, payment_state(status), receipt.cloned())
        } else if let Some(status) = self.node.invoice_status(&invoice) {
            (PaymentRole::Seller, invoice_state(status), None)
        } else if let Some(bytes) = store::archived(&self.conn, ArchivedRole::Payment, &invoice)? {
            let p = archived_payment(&bytes)?;
            (PaymentRole::Buyer, payment_state(p.status), p.receipt)
        } else if let Some((_, status)) = self.archived_invoice(&invoice)? {
            (PaymentRole::Seller, invoice_state(&status), None)
        } else {
            return Err(WalletError::Refused(NodeError::UnknownPayment(invoice)));
        };
        let mut history = self.history(&HistoryQuery {
            invoice: Some(invoice),
            limit: 10_000,
            ..HistoryQuery::default()
        })?;
        history.reverse();
        Ok(PaymentView {
            invoice,
            role,
            status,
            receipt,
            history,
        })
    }

    /// An invoice we issued and how it stands: from memory while the node keeps it, else from
    /// the archive of finished ones ([`crate::protocol::bounds::ARCHIVE_AFTER_EXPIRY_MS`]).
    pub fn issued_invoice(
        &self,
        invoice: &InvoiceId,
    ) -> Result<Option<(Invoice, InvoiceStatus)>, WalletError> {
        if let (Some(i), Some(status)) = (
            self.node.issued_invoice(invoice),
            self.node.invoice_status(invoice),
        ) {
            return Ok(Some((i.clone(), status.clone())));
        }
        self.archived_invoice(invoice)
    }

    /// An archived invoice of ours and how it ended.
    fn archived_invoice(
        &self,
        invoice: &InvoiceId,
    ) -> Result<Option<(Invoice, InvoiceStatus)>, WalletError> {
        match store::archived(&self.conn, ArchivedRole::Invoice, invoice)? {
            Some(bytes) => Ok(Some(archived_invoice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Check the whole database file (slow on big wallets: run it now and then, not at every
    /// start). A damaged file is a [`WalletError::Corrupt`].
    pub fn check_integrity(&self) -> Result<(), WalletError> {
        let result: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(WalletError::from_sqlite)?;
        if result == "ok" {
            Ok(())
        } else {
            Err(WalletError::Corrupt { detail: result })
        }
    }
}
