//! Mailboxes on disk (SQLite, WAL). One writer thread commits inserts and deletions in batches
//! (group commit): an envelope is "accepted" only once the transaction holding it committed.
//! Reads go through their own connection.
//!
//! A connected recipient's mail is also handed out before its commit: once its `INSERT` has
//! run, the writer puts it in that recipient's [`Tail`] in memory, and [`Store::fetch`] serves
//! the tail when it holds everything after the reader's position (see
//! `docs/proposals/relay-delivery-before-commit.md`). A sequence number names one envelope for
//! ever: the writer numbers mail itself and never lowers the next number, so a commit that
//! fails never hands one of its numbers out again (an acknowledgement of the lost envelope
//! would otherwise delete its successor unread).
//!
//! Mail for a connected recipient is also *held*: kept in memory and not written at all for up
//! to [`HOLD_FOR`], since the recipient usually acknowledges it sooner (after its own durable
//! step), and then it never touches the disk. Its sender's answer waits until the mail is
//! acknowledged or committed, so an answered envelope is always on this relay's disk or in
//! its recipient's. Held mail is written when it is due, before any later mail for the same
//! recipient (the disk holds each mailbox in order), and when the store closes
//! (`docs/proposals/relay-hold-until-acknowledged.md`). The same goes for an envelope for
//! another relay that cut-through already sent on: held until the next relay's answer
//! ([`SentOn`]), never written if it took it, and written in order before any later envelope
//! for that relay otherwise.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use offst_core::net::wire::{Refusal, RelayAddress};
use offst_core::protocol::identity::NodeId;
use rusqlite::{Connection, params};
use tokio::sync::{oneshot, watch};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Most envelopes a connected recipient's tail keeps in memory; older ones are read from disk.
const MAX_TAIL_MESSAGES: usize = 1024;
/// Most bytes a connected recipient's tail keeps in memory.
const MAX_TAIL_BYTES: usize = 4 << 20;
/// Most bytes all tails together keep in memory (by default): without it, every connection
/// the relay allows could hold `MAX_TAIL_BYTES`. Over it, a recipient reads its new mail from
/// disk once committed, as without a tail.
pub const MAX_TAILS_BYTES: usize = 64 << 20;

/// How long mail for a connected recipient is held in memory, unwritten, waiting for the
/// recipient's acknowledgement (by default): acknowledged in time, it is never written.
pub const HOLD_FOR: Duration = Duration::from_millis(20);
/// Most envelope bytes held unwritten at once; over it, mail is written at once.
const MAX_HELD_BYTES: usize = 16 << 20;

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("mail store: {0}")]
    Sqlite(String),
    /// The writer stopped (shutting down).
    #[error("the mail store is shut down")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

/// Per-mailbox totals, kept by the writer for the quotas.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    /// Held and written.
    messages: u64,
    bytes: u64,
    /// Of them, rows on disk: an acknowledgement with none to delete reads nothing.
    disk: u64,
}

/// Mailbox bounds.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Most messages waiting in one mailbox.
    pub max_messages: u64,
    /// Most bytes waiting in one mailbox.
    pub max_bytes: u64,
}

enum Op {
    Insert {
        recipient: NodeId,
        envelope: Vec<u8>,
        now_ms: u64,
        reply: oneshot::Sender<Result<Result<u64, Refusal>, StoreError>>,
    },
    Delete {
        recipient: NodeId,
        up_to: u64,
    },
    Purge {
        older_than_ms: u64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    InsertForward {
        relay: RelayAddress,
        recipient: NodeId,
        envelope: Vec<u8>,
        now_ms: u64,
        reply: oneshot::Sender<Result<Result<u64, Refusal>, StoreError>>,
        /// Sent on by cut-through: what the next relay answered, once it did.
        sent_on: Option<SentOn>,
    },
    DeleteForward {
        seq: u64,
    },
}

/// One envelope waiting to be forwarded to another relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// Its position.
    pub seq: u64,
    /// The recipient.
    pub recipient: NodeId,
    /// The envelope.
    pub envelope: Vec<u8>,
}

/// The answer to a queued insert: its seq once committed, or the quota it breaks.
pub type Pending = oneshot::Receiver<Result<Result<u64, Refusal>, StoreError>>;

/// One stored envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// Its position (increasing over the whole store).
    pub seq: u64,
    /// When it was stored.
    pub received_ms: u64,
    /// The envelope.
    pub envelope: Vec<u8>,
}

/// The mail store.
pub struct Store {
    /// Transactions committed by the writer (each holds a batch: group commit).
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// Held envelopes answered for before they were written.
    never_written: Arc<std::sync::atomic::AtomicU64>,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
    tails: Arc<Mutex<Tails>>,
    faults: Arc<Faults>,
}

/// Commits held back or failed on purpose, for tests of what a commit that is slow or fails
/// must not break. Unused, it costs the writer one uncontended lock per commit.
#[derive(Default)]
struct Faults {
    state: Mutex<FaultState>,
    released: std::sync::Condvar,
}

#[derive(Default)]
struct FaultState {
    /// Commits wait while this is set.
    hold: bool,
    /// Commits still to fail.
    fail: u32,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wait while commits are held; then whether this one is to fail.
    fn before_commit(&self) -> bool {
        let mut state = self.lock();
        while state.hold {
            state = self
                .released
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.fail.checked_sub(1).map(|n| state.fail = n).is_some()
    }
}

/// The mail numbering, and the mail of connected recipients not yet read from disk.
struct Tails {
    /// The next mail seq. Never lowered, also when a commit fails.
    next_seq: u64,
    boxes: HashMap<NodeId, Tail>,
    /// The envelope bytes in all tails: the sum of their `bytes`.
    bytes: usize,
    /// Most `bytes` may reach.
    budget: usize,
    /// Mail held unwritten (or being written, until its commit), by recipient and seq: every
    /// reader sees it as if it were on disk.
    held: HashMap<NodeId, BTreeMap<u64, Mail>>,
    /// The envelope bytes in `held`.
    held_bytes: usize,
    /// How long mail for a connected recipient is held ([`HOLD_FOR`]; zero: never).
    hold_for: Duration,
    /// Envelopes held for the forward queue, by next relay.
    held_forward: HashMap<NodeId, usize>,
}

/// What the next relay answered to an envelope cut-through sent on: not yet, taken, or not
/// taken. Shared by the connection that sent it and the store's writer.
#[derive(Clone, Debug, Default)]
pub struct SentOn(Arc<std::sync::atomic::AtomicU8>);

impl SentOn {
    /// Not answered yet.
    pub fn new() -> SentOn {
        SentOn::default()
    }

    /// The next relay answered: it took the envelope, or not.
    pub fn set(&self, taken: bool) {
        self.0.store(
            if taken { 1 } else { 2 },
            std::sync::atomic::Ordering::Release,
        );
    }

    /// The answer, once there is one.
    fn get(&self) -> Option<bool> {
        match self.0.load(std::sync::atomic::Ordering::Acquire) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }
}

impl Tails {
    /// Change `recipient`'s tail, if subscribed, keeping the sum of the tails' bytes.
    fn update<R>(
        &mut self,
        recipient: &NodeId,
        f: impl FnOnce(&mut Tail, usize) -> R,
    ) -> Option<R> {
        let tail = self.boxes.get_mut(recipient)?;
        let others = self.bytes.saturating_sub(tail.bytes);
        let r = f(tail, self.budget.saturating_sub(others));
        self.bytes = others + tail.bytes;
        Some(r)
    }

    /// Hand `mail` out to its recipient's tail, if subscribed, within the bounds of one tail
    /// and of all of them.
    fn push(&mut self, recipient: &NodeId, mail: Mail) {
        self.update(recipient, |tail, room| {
            tail.push(mail, room.min(MAX_TAIL_BYTES));
        });
    }

    fn trim_to(&mut self, recipient: &NodeId, up_to: u64) {
        self.update(recipient, |tail, _| tail.trim_to(up_to));
    }

    /// Forget the held mail `seq` of `recipient` (acknowledged, committed or lost).
    fn unhold(&mut self, recipient: &NodeId, seq: u64) -> Option<Mail> {
        let mailbox = self.held.get_mut(recipient)?;
        let mail = mailbox.remove(&seq)?;
        if mailbox.is_empty() {
            self.held.remove(recipient);
        }
        self.held_bytes = self.held_bytes.saturating_sub(mail.envelope.len());
        Some(mail)
    }

    /// The held mail of `recipient` after `after`.
    fn held_after(&self, recipient: &NodeId, after: u64) -> Vec<Mail> {
        self.held
            .get(recipient)
            .map(|m| {
                m.range(after.saturating_add(1)..)
                    .map(|(_, mail)| mail.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One connected recipient's newest mail, in memory from the moment its `INSERT` ran.
struct Tail {
    /// Every envelope for this recipient with a seq above this one is in `entries` (until
    /// trimmed, which raises it): a reader at or past it may read the tail alone.
    complete_after: u64,
    entries: VecDeque<Mail>,
    bytes: usize,
    /// The latest seq stored or handed out for this recipient (deliveries wait on changes).
    notify: watch::Sender<u64>,
}

impl Tail {
    /// Forget entries up to and including `up_to` (the reader will find them on disk, or
    /// they were acknowledged).
    fn trim_to(&mut self, up_to: u64) {
        while self.entries.front().is_some_and(|m| m.seq <= up_to) {
            if let Some(m) = self.entries.pop_front() {
                self.bytes = self.bytes.saturating_sub(m.envelope.len());
            }
        }
        self.complete_after = self.complete_after.max(up_to);
    }

    /// Take back the entry `seq`, if it is still here (its commit failed).
    fn remove(&mut self, seq: u64) {
        if let Some(i) = self.entries.iter().position(|m| m.seq == seq)
            && let Some(m) = self.entries.remove(i)
        {
            self.bytes = self.bytes.saturating_sub(m.envelope.len());
        }
    }

    /// Add `mail`, dropping the oldest entries (raising `complete_after`) while there are more
    /// than `MAX_TAIL_MESSAGES` or more than `max_bytes` bytes: possibly `mail` itself, which
    /// the reader then reads from disk once committed.
    fn push(&mut self, mail: Mail, max_bytes: usize) {
        let seq = mail.seq;
        self.bytes += mail.envelope.len();
        self.entries.push_back(mail);
        while self.entries.len() > MAX_TAIL_MESSAGES || self.bytes > max_bytes {
            let Some(old) = self.entries.front().map(|m| m.seq) else {
                break;
            };
            self.trim_to(old);
        }
        self.notify.send_replace(seq);
    }
}

/// What a recipient's deliveries wait on: it changes when mail for it is stored or handed out.
pub struct Subscription(pub watch::Receiver<u64>);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS mail (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient BLOB NOT NULL,
        received_ms INTEGER NOT NULL,
        envelope BLOB NOT NULL
    ) STRICT;
    CREATE INDEX IF NOT EXISTS mail_by_recipient ON mail(recipient, seq);
    CREATE INDEX IF NOT EXISTS mail_by_age ON mail(received_ms);
    CREATE TABLE IF NOT EXISTS forward (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        relay_key BLOB NOT NULL,
        relay_addr TEXT NOT NULL,
        recipient BLOB NOT NULL,
        received_ms INTEGER NOT NULL,
        envelope BLOB NOT NULL
    ) STRICT;
    CREATE INDEX IF NOT EXISTS forward_by_relay ON forward(relay_key, seq);
";

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path, bounds: Bounds) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sqlite(e.to_string()))?;
        let path = dir.join("mail.db");
        let mut writer = Connection::open(&path)?;
        writer.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        offst_core::wallet::tune_connection(&mut writer)?;
        writer.execute_batch(SCHEMA)?;
        let usage = recount(&writer)?;
        // Above every number ever committed: the highest row, and the highest AUTOINCREMENT
        // handed out (rows since deleted).
        let last_seq: i64 = writer.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM mail), 0),
                        COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'mail'), 0))",
            [],
            |r| r.get(0),
        )?;
        let tails = Arc::new(Mutex::new(Tails {
            next_seq: u64::try_from(last_seq).unwrap_or(0) + 1,
            boxes: HashMap::new(),
            bytes: 0,
            budget: MAX_TAILS_BYTES,
            held: HashMap::new(),
            held_bytes: 0,
            hold_for: HOLD_FOR,
            held_forward: HashMap::new(),
        }));
        let mut reader = Connection::open(&path)?;
        reader.execute_batch("PRAGMA query_only = ON;")?;
        offst_core::wallet::tune_connection(&mut reader)?;
        let (tx, rx) = mpsc::channel::<Op>();
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = commits.clone();
        let never_written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let faults = Arc::new(Faults::default());
        let writer_state = Writer {
            usage,
            bounds,
            commits: counted,
            tails: tails.clone(),
            faults: faults.clone(),
            waiting: BTreeMap::new(),
            forwards: VecDeque::new(),
            never_written: never_written.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("mail-writer".into())
            .spawn(move || writer_loop(&mut writer, rx, writer_state))
            .map_err(|e| StoreError::Sqlite(e.to_string()))?;
        Ok(Store {
            commits,
            never_written,
            ops: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            reader: Arc::new(Mutex::new(reader)),
            tails,
            faults,
        })
    }

    /// Make the next `n` commits fail after their statements ran (as a full disk would). For
    /// tests of what a failed commit must not break.
    #[doc(hidden)]
    pub fn fail_next_commits(&self, n: u32) {
        self.faults.lock().fail = n;
    }

    /// Hold every commit back (after its statements ran) while `hold` is set. For tests of
    /// what happens before a commit.
    #[doc(hidden)]
    pub fn hold_commits(&self, hold: bool) {
        self.faults.lock().hold = hold;
        self.faults.released.notify_all();
    }

    /// Hand `recipient`'s new mail out as it is inserted, until [`Store::unsubscribe`], and
    /// wake the returned receiver when mail for it is stored or handed out.
    pub fn subscribe(&self, recipient: NodeId) -> Subscription {
        let mut tails = lock_tails(&self.tails);
        let complete_after = tails.next_seq.saturating_sub(1);
        let tail = tails.boxes.entry(recipient).or_insert_with(|| Tail {
            complete_after,
            entries: VecDeque::new(),
            bytes: 0,
            notify: watch::channel(0).0,
        });
        Subscription(tail.notify.subscribe())
    }

    /// Stop handing out `recipient`'s mail before its commit once nobody is subscribed.
    pub fn unsubscribe(&self, recipient: &NodeId) {
        let mut tails = lock_tails(&self.tails);
        if tails
            .boxes
            .get(recipient)
            .is_some_and(|t| t.notify.receiver_count() == 0)
            && let Some(tail) = tails.boxes.remove(recipient)
        {
            tails.bytes = tails.bytes.saturating_sub(tail.bytes);
        }
    }

    /// The envelope bytes all tails hold now.
    pub fn tail_bytes(&self) -> usize {
        lock_tails(&self.tails).bytes
    }

    /// Set the most bytes all tails may hold (by default [`MAX_TAILS_BYTES`]). For tests.
    #[doc(hidden)]
    pub fn set_tails_budget(&self, bytes: usize) {
        lock_tails(&self.tails).budget = bytes;
    }

    /// Hold mail for connected recipients this long before writing it (by default
    /// [`HOLD_FOR`]; zero writes all mail at once): the relay's `hold_ms` setting.
    pub fn set_hold(&self, hold_for: Duration) {
        lock_tails(&self.tails).hold_for = hold_for;
    }

    /// How long mail is held unwritten ([`Store::set_hold`]).
    pub fn hold_for(&self) -> Duration {
        lock_tails(&self.tails).hold_for
    }

    /// Envelopes held in memory, not written (yet).
    pub fn held(&self) -> usize {
        lock_tails(&self.tails)
            .held
            .values()
            .map(BTreeMap::len)
            .sum()
    }

    /// Held envelopes answered for before they were written (acknowledged by their
    /// recipient, or taken by the next relay), so far.
    pub fn never_written(&self) -> u64 {
        self.never_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Transactions committed so far that wrote something (one per batch of operations).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let guard = self.ops.lock().map_err(|_| StoreError::Closed)?;
        guard
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(op)
            .map_err(|_| StoreError::Closed)
    }

    /// Store `envelope` for `recipient`; its seq once committed, or the quota it breaks.
    pub async fn insert(
        &self,
        recipient: NodeId,
        envelope: Vec<u8>,
        now_ms: u64,
    ) -> Result<Result<u64, Refusal>, StoreError> {
        self.enqueue(None, recipient, envelope, now_ms)?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Queue an insert now (so inserts keep the order they were queued in) and get its answer
    /// later: lets one connection have many envelopes in flight. With `relay`, the envelope is
    /// for a user of that relay and waits in the forward queue.
    pub fn enqueue(
        &self,
        relay: Option<RelayAddress>,
        recipient: NodeId,
        envelope: Vec<u8>,
        now_ms: u64,
    ) -> Result<Pending, StoreError> {
        if let Some(relay) = relay {
            return self.queue_forward(relay, recipient, envelope, now_ms, None);
        }
        let (reply, rx) = oneshot::channel();
        self.send(Op::Insert {
            recipient,
            envelope,
            now_ms,
            reply,
        })?;
        Ok(rx)
    }

    /// Queue an envelope for `recipient` at the relay `relay` that cut-through already sent on:
    /// held unwritten (like mail for a connected recipient) until `sent_on` says the next
    /// relay took it, then answered without ever being written (its seq is then 0, never a
    /// row's); written if the next relay did not take it, or had not answered when it was due.
    pub fn enqueue_sent_on(
        &self,
        relay: RelayAddress,
        recipient: NodeId,
        envelope: Vec<u8>,
        now_ms: u64,
        sent_on: SentOn,
    ) -> Result<Pending, StoreError> {
        self.queue_forward(relay, recipient, envelope, now_ms, Some(sent_on))
    }

    /// Queue an insert into the forward queue (held first, with `sent_on`).
    fn queue_forward(
        &self,
        relay: RelayAddress,
        recipient: NodeId,
        envelope: Vec<u8>,
        now_ms: u64,
        sent_on: Option<SentOn>,
    ) -> Result<Pending, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::InsertForward {
            relay,
            recipient,
            envelope,
            now_ms,
            reply,
            sent_on,
        })?;
        Ok(rx)
    }

    /// Envelopes for `relay` held unwritten while cut-through's answer is awaited. Cut-through
    /// to a relay resumes only when none is left, and the queue on disk is empty: a held one
    /// that the next relay refuses is written and forwarded from disk, before newer ones.
    pub fn held_forward(&self, relay: &NodeId) -> usize {
        lock_tails(&self.tails)
            .held_forward
            .get(relay)
            .copied()
            .unwrap_or(0)
    }

    /// Delete `recipient`'s mail up to and including `up_to` (after the recipient handled it).
    pub fn delete(&self, recipient: NodeId, up_to: u64) -> Result<(), StoreError> {
        lock_tails(&self.tails).trim_to(&recipient, up_to);
        self.send(Op::Delete { recipient, up_to })
    }

    /// Delete mail stored before `older_than_ms`; how many.
    pub async fn purge(&self, older_than_ms: u64) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Purge {
            older_than_ms,
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// `recipient`'s mail after `after`, oldest first, at most `limit`: committed, or (for a
    /// subscribed recipient) handed out before its commit, which may then fail.
    pub async fn fetch(
        &self,
        recipient: NodeId,
        after: u64,
        limit: u64,
    ) -> Result<Vec<Mail>, StoreError> {
        if let Some(tail) = lock_tails(&self.tails).boxes.get(&recipient)
            && after >= tail.complete_after
        {
            return Ok(tail
                .entries
                .iter()
                .filter(|m| m.seq > after)
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .cloned()
                .collect());
        }
        // Held mail first, then the disk: mail leaves `held` only once committed, so each
        // envelope is in one or the other (or both, counted once).
        let held = lock_tails(&self.tails).held_after(&recipient, after);
        let reader = self.reader.clone();
        let disk = tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            let mut stmt = conn.prepare_cached(
                "SELECT seq, received_ms, envelope FROM mail
                 WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![recipient.as_bytes(), i64_of(after), i64_of(limit)],
                |r| {
                    Ok(Mail {
                        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        received_ms: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        envelope: r.get(2)?,
                    })
                },
            )?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Sqlite(e.to_string()))??;
        if held.is_empty() {
            return Ok(disk);
        }
        // Every disk row past the last one read is above it, so the first `limit` of the two
        // together are right.
        let mut all: BTreeMap<u64, Mail> = disk.into_iter().map(|m| (m.seq, m)).collect();
        for m in held {
            all.entry(m.seq).or_insert(m);
        }
        Ok(all
            .into_values()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }

    /// Keep `envelope` for `recipient` at the relay `relay`, until forwarded.
    pub async fn insert_forward(
        &self,
        relay: RelayAddress,
        recipient: NodeId,
        envelope: Vec<u8>,
        now_ms: u64,
    ) -> Result<Result<u64, Refusal>, StoreError> {
        self.queue_forward(relay, recipient, envelope, now_ms, None)?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// The next relay stored the envelope `seq`: forget it.
    pub fn delete_forward(&self, seq: u64) -> Result<(), StoreError> {
        self.send(Op::DeleteForward { seq })
    }

    /// Envelopes waiting for `relay` after `after`, oldest first.
    pub async fn fetch_forward(
        &self,
        relay: NodeId,
        after: u64,
        limit: u64,
    ) -> Result<Vec<Outbound>, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            let mut stmt = conn.prepare_cached(
                "SELECT seq, recipient, envelope FROM forward
                 WHERE relay_key = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![relay.as_bytes(), i64_of(after), i64_of(limit)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, recipient, envelope) = row?;
                let Ok(recipient) = <[u8; 32]>::try_from(recipient.as_slice()) else {
                    continue;
                };
                out.push(Outbound {
                    seq: u64::try_from(seq).unwrap_or(0),
                    recipient: NodeId::from_bytes(recipient),
                    envelope,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Sqlite(e.to_string()))?
    }

    /// The relays with envelopes waiting to be forwarded (at start-up).
    pub async fn forward_destinations(&self) -> Result<Vec<RelayAddress>, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            let mut stmt =
                conn.prepare("SELECT relay_key, relay_addr FROM forward GROUP BY relay_key")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (k, addr) = row?;
                if let Ok(k) = <[u8; 32]>::try_from(k.as_slice()) {
                    out.push(RelayAddress {
                        addr,
                        key: NodeId::from_bytes(k),
                    });
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Sqlite(e.to_string()))?
    }

    /// Messages waiting, in all mailboxes: on disk or held.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let tails = self.tails.clone();
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            // The writer commits held mail and forgets it under this lock: nothing counts twice.
            let tails = lock_tails(&tails);
            let held: usize = tails.held.values().map(BTreeMap::len).sum();
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM mail", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0) + held as u64)
        })
        .await
        .map_err(|e| StoreError::Sqlite(e.to_string()))?
    }

    /// Envelopes waiting (committed) to be forwarded to other relays.
    pub async fn count_forward(&self) -> Result<u64, StoreError> {
        self.count_rows("SELECT COUNT(*) FROM forward").await
    }

    async fn count_rows(&self, sql: &'static str) -> Result<u64, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
        .map_err(|e| StoreError::Sqlite(e.to_string()))?
    }

    /// Stop the writer after it committed everything sent to it.
    pub fn close(&self) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.take();
        }
        // A commit held by a test must not keep the writer from finishing.
        self.hold_commits(false);
        if let Ok(mut w) = self.writer.lock()
            && let Some(handle) = w.take()
        {
            let _ = handle.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's own state.
struct Writer {
    usage: HashMap<NodeId, Usage>,
    bounds: Bounds,
    commits: Arc<std::sync::atomic::AtomicU64>,
    never_written: Arc<std::sync::atomic::AtomicU64>,
    tails: Arc<Mutex<Tails>>,
    faults: Arc<Faults>,
    /// Held mail not yet written or acknowledged, by seq; each was held for the same time, so
    /// the first is due first.
    waiting: BTreeMap<u64, Waiting>,
    /// Envelopes for other relays held while cut-through's answer is awaited, in the order
    /// they arrived; each was held for the same time, so the first is due first.
    forwards: VecDeque<HeldForward>,
}

/// An envelope for another relay, held unwritten.
struct HeldForward {
    relay: RelayAddress,
    recipient: NodeId,
    envelope: Vec<u8>,
    now_ms: u64,
    due: Instant,
    sent_on: SentOn,
    reply: oneshot::Sender<Result<Result<u64, Refusal>, StoreError>>,
}

/// Held mail waiting for its recipient's acknowledgement, and its sender's answer.
struct Waiting {
    recipient: NodeId,
    size: u64,
    due: Instant,
    reply: oneshot::Sender<Result<Result<u64, Refusal>, StoreError>>,
}

fn lock_tails(tails: &Mutex<Tails>) -> std::sync::MutexGuard<'_, Tails> {
    // A panic while holding it leaves the tails consistent enough: every entry is also on its
    // way to disk, and a reader falls back to the disk below `complete_after`.
    tails
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn writer_loop(conn: &mut Connection, rx: mpsc::Receiver<Op>, mut w: Writer) {
    loop {
        // Wait for work, or until the first held mail is due.
        let due = [
            w.waiting.values().next().map(|h| h.due),
            w.forwards.front().map(|h| h.due),
        ]
        .into_iter()
        .flatten()
        .min();
        let first = match due {
            None => match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => break,
            },
            Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut batch: Vec<Op> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        run_batch(conn, &mut w, batch, Some(Instant::now()));
    }
    // Closing: everything still held is written.
    if !w.waiting.is_empty() || !w.forwards.is_empty() {
        run_batch(conn, &mut w, Vec::new(), None);
    }
}

/// A batch's write transaction, begun by the first statement that needs one: a batch that
/// only held mail, or took acknowledgements of mail that was never written, does not touch
/// the database at all (no `BEGIN`, no `COMMIT`). Rolled back when dropped uncommitted, as a
/// `rusqlite::Transaction` is.
struct Lazy<'c> {
    conn: &'c Connection,
    begun: std::cell::Cell<bool>,
}

impl<'c> Lazy<'c> {
    fn new(conn: &'c Connection) -> Lazy<'c> {
        Lazy {
            conn,
            begun: std::cell::Cell::new(false),
        }
    }

    /// The connection, inside the batch's transaction.
    fn begun(&self) -> Result<&'c Connection, StoreError> {
        if !self.begun.get() {
            self.conn.execute_batch("BEGIN")?;
            self.begun.set(true);
        }
        Ok(self.conn)
    }

    /// Commit what the batch wrote, if it wrote anything.
    fn commit(&self) -> Result<(), StoreError> {
        if self.begun.get() {
            self.conn.execute_batch("COMMIT")?;
            self.begun.set(false);
        }
        Ok(())
    }

    /// Undo what the batch wrote, if it wrote anything.
    fn rollback(&self) {
        if self.begun.replace(false) {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl Drop for Lazy<'_> {
    fn drop(&mut self) {
        self.rollback();
    }
}

/// The statement that writes one envelope into a mailbox.
fn insert_mail(tx: &Connection) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
    Ok(tx.prepare_cached(
        "INSERT INTO mail (seq, recipient, received_ms, envelope) VALUES (?1, ?2, ?3, ?4)",
    )?)
}

/// Note what `recipient`'s mailbox counted before this batch first touched it.
fn remember(undo: &mut HashMap<NodeId, Usage>, usage: &HashMap<NodeId, Usage>, recipient: NodeId) {
    undo.entry(recipient)
        .or_insert_with(|| usage.get(&recipient).copied().unwrap_or_default());
}

/// Mail written to disk in a batch: (recipient, seq, handed out before its commit, held).
type Written = Vec<(NodeId, u64, bool, bool)>;

/// Write `recipient`'s held mail up to `up_to` (all of it that is neither acknowledged nor
/// already written), in order, so that the disk holds each mailbox in order.
fn write_held(
    db: &Lazy<'_>,
    w: &mut Writer,
    undo: &mut HashMap<NodeId, Usage>,
    recipient: &NodeId,
    up_to: u64,
    written: &mut Written,
    replies: &mut Vec<Reply>,
) -> Result<(), StoreError> {
    let due: Vec<Mail> = {
        let tails = lock_tails(&w.tails);
        let Some(held) = tails.held.get(recipient) else {
            return Ok(());
        };
        held.range(..=up_to)
            .filter(|(seq, _)| w.waiting.contains_key(seq))
            .map(|(_, m)| m.clone())
            .collect()
    };
    for mail in due {
        let Some(h) = w.waiting.remove(&mail.seq) else {
            continue;
        };
        insert_mail(db.begun()?)?.execute(params![
            i64_of(mail.seq),
            recipient.as_bytes(),
            i64_of(mail.received_ms),
            mail.envelope
        ])?;
        remember(undo, &w.usage, *recipient);
        w.usage.entry(*recipient).or_default().disk += 1;
        written.push((*recipient, mail.seq, true, true));
        replies.push(Reply::Insert(h.reply, Ok(Ok(mail.seq))));
    }
    Ok(())
}

/// Most envelopes for other relays held at once; over it, they are written at once.
const MAX_HELD_FORWARDS: usize = 4096;

/// Insert an envelope into the forward queue; its seq.
fn insert_forward(
    tx: &Connection,
    relay: &RelayAddress,
    recipient: &NodeId,
    now_ms: u64,
    envelope: &[u8],
) -> Result<u64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO forward (relay_key, relay_addr, recipient, received_ms, envelope)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        relay.key.as_bytes(),
        relay.addr,
        recipient.as_bytes(),
        i64_of(now_ms),
        envelope
    ])?;
    Ok(u64::try_from(tx.last_insert_rowid()).unwrap_or(0))
}

/// Settle the envelopes held for other relays: those the next relay took are answered and
/// never written (seq 0); those it did not take, those due by `now` (`None`: all) and, with
/// `force`, every one for that relay are written, each with every older one for the same
/// relay before it, so that the queue on disk keeps the order of arrival.
fn settle_forwards(
    db: &Lazy<'_>,
    w: &mut Writer,
    now: Option<Instant>,
    force: Option<NodeId>,
    replies: &mut Vec<Reply>,
    acknowledged: &mut Vec<Reply>,
    written: &mut Vec<NodeId>,
) -> Result<(), StoreError> {
    use std::sync::atomic::Ordering;
    if w.forwards.is_empty() {
        return Ok(());
    }
    // For each next relay, the last held envelope that must be written.
    let mut last: HashMap<NodeId, usize> = HashMap::new();
    for (i, h) in w.forwards.iter().enumerate() {
        let must = force == Some(h.relay.key)
            || match h.sent_on.get() {
                Some(taken) => !taken,
                None => now.is_none_or(|now| h.due <= now),
            };
        if must {
            last.insert(h.relay.key, i);
        }
    }
    let mut held = std::mem::take(&mut w.forwards);
    let mut i = 0usize;
    while let Some(h) = held.pop_front() {
        let taken = h.sent_on.get() == Some(true);
        let write = !taken && last.get(&h.relay.key).is_some_and(|l| i <= *l);
        i += 1;
        if !taken && !write {
            w.forwards.push_back(h);
            continue;
        }
        let key = h.relay.key;
        if taken {
            w.never_written.fetch_add(1, Ordering::Relaxed);
            acknowledged.push(Reply::Insert(h.reply, Ok(Ok(0))));
            unhold_forward(&w.tails, &key);
        } else {
            match insert_forward(db.begun()?, &h.relay, &h.recipient, h.now_ms, &h.envelope) {
                Ok(seq) => {
                    replies.push(Reply::Insert(h.reply, Ok(Ok(seq))));
                    // No longer counted as held once its batch is over (committed: on disk for
                    // the forwarder; failed: its sender sends it again).
                    written.push(key);
                }
                Err(e) => {
                    // The batch fails: what is not settled stays held, in order.
                    w.forwards.push_back(h);
                    w.forwards.extend(held);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// One envelope fewer held for `relay`.
fn unhold_forward(tails: &Mutex<Tails>, relay: &NodeId) {
    let mut tails = lock_tails(tails);
    if let Some(n) = tails.held_forward.get_mut(relay) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            tails.held_forward.remove(relay);
        }
    }
}

/// Run one batch of operations in one transaction, and write the held mail due by `now`
/// (`None`: all of it).
fn run_batch(conn: &mut Connection, w: &mut Writer, batch: Vec<Op>, now: Option<Instant>) {
    use std::sync::atomic::Ordering;
    // What each mailbox this batch touches counted before it, with the held mail it took
    // (counted whatever the commit does): restored if the commit fails. Only those mailboxes,
    // not a copy of every mailbox's count (a relay with many users copied them all for each
    // batch, which at a moderate load is each envelope).
    let mut undo: HashMap<NodeId, Usage> = HashMap::new();
    let mut replies = Vec::with_capacity(batch.len());
    // Answers for held mail its recipient acknowledged: sent whatever the commit does.
    let mut acknowledged = Vec::new();
    let mut written: Written = Vec::new();
    // Held envelopes for other relays written in this batch, by next relay.
    let mut forwards_written: Vec<NodeId> = Vec::new();
    let changes_before = conn.total_changes();
    let db = Lazy::new(conn);
    let result = (|| -> Result<(), StoreError> {
        for op in batch {
            match op {
                Op::Insert {
                    recipient,
                    envelope,
                    now_ms,
                    reply,
                } => {
                    remember(&mut undo, &w.usage, recipient);
                    let u = w.usage.entry(recipient).or_default();
                    let size = envelope.len() as u64;
                    if u.messages + 1 > w.bounds.max_messages || u.bytes + size > w.bounds.max_bytes
                    {
                        replies.push(Reply::Insert(
                            reply,
                            Ok(Err(Refusal::MailboxFull {
                                messages: u.messages,
                                bytes: u.bytes,
                            })),
                        ));
                        continue;
                    }
                    u.messages += 1;
                    u.bytes += size;
                    // Numbered and handed out to a connected recipient; held if there is
                    // room and time to.
                    let (mail, subscribed, hold_until) = {
                        let mut tails = lock_tails(&w.tails);
                        let mail = Mail {
                            seq: tails.next_seq,
                            received_ms: now_ms,
                            envelope,
                        };
                        tails.next_seq += 1;
                        let subscribed = tails.boxes.contains_key(&recipient);
                        let hold_until = now
                            .filter(|_| {
                                subscribed
                                    && !tails.hold_for.is_zero()
                                    && tails.held_bytes + mail.envelope.len() <= MAX_HELD_BYTES
                            })
                            .map(|now| now + tails.hold_for);
                        if hold_until.is_some() {
                            tails.held_bytes += mail.envelope.len();
                            tails
                                .held
                                .entry(recipient)
                                .or_default()
                                .insert(mail.seq, mail.clone());
                        }
                        if subscribed {
                            tails.push(&recipient, mail.clone());
                        }
                        (mail, subscribed, hold_until)
                    };
                    let seq = mail.seq;
                    if let Some(due) = hold_until {
                        // Held whatever this batch's commit does: counted either way.
                        let u = undo.entry(recipient).or_default();
                        u.messages += 1;
                        u.bytes += size;
                        w.waiting.insert(
                            seq,
                            Waiting {
                                recipient,
                                size,
                                due,
                                reply,
                            },
                        );
                        continue;
                    }
                    // Written now: the recipient's held mail before it first.
                    write_held(
                        &db,
                        w,
                        &mut undo,
                        &recipient,
                        seq,
                        &mut written,
                        &mut replies,
                    )?;
                    insert_mail(db.begun()?)?.execute(params![
                        i64_of(seq),
                        recipient.as_bytes(),
                        i64_of(now_ms),
                        mail.envelope
                    ])?;
                    w.usage.entry(recipient).or_default().disk += 1;
                    written.push((recipient, seq, subscribed, false));
                    replies.push(Reply::Insert(reply, Ok(Ok(seq))));
                }
                Op::Delete { recipient, up_to } => {
                    remember(&mut undo, &w.usage, recipient);
                    // Held mail the recipient acknowledged is never written.
                    let seqs: Vec<u64> = lock_tails(&w.tails)
                        .held
                        .get(&recipient)
                        .map(|h| h.range(..=up_to).map(|(s, _)| *s).collect())
                        .unwrap_or_default();
                    for seq in seqs {
                        // Not waiting: written in this batch, so deleted below.
                        let Some(h) = w.waiting.remove(&seq) else {
                            continue;
                        };
                        lock_tails(&w.tails).unhold(&recipient, seq);
                        for usage in [&mut w.usage, &mut undo] {
                            let u = usage.entry(recipient).or_default();
                            u.messages = u.messages.saturating_sub(1);
                            u.bytes = u.bytes.saturating_sub(h.size);
                        }
                        w.never_written.fetch_add(1, Ordering::Relaxed);
                        acknowledged.push(Reply::Insert(h.reply, Ok(Ok(seq))));
                    }
                    if w.usage.get(&recipient).is_none_or(|u| u.disk == 0) {
                        // Everything it acknowledged was held, never written.
                        continue;
                    }
                    let tx = db.begun()?;
                    let (n, b): (i64, i64) = tx
                        .prepare_cached(
                            "SELECT COUNT(*), COALESCE(SUM(length(envelope)), 0) FROM mail
                                 WHERE recipient = ?1 AND seq <= ?2",
                        )?
                        .query_row(params![recipient.as_bytes(), i64_of(up_to)], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?;
                    if n > 0 {
                        tx.prepare_cached("DELETE FROM mail WHERE recipient = ?1 AND seq <= ?2")?
                            .execute(params![recipient.as_bytes(), i64_of(up_to)])?;
                        let u = w.usage.entry(recipient).or_default();
                        u.messages = u.messages.saturating_sub(u64::try_from(n).unwrap_or(0));
                        u.bytes = u.bytes.saturating_sub(u64::try_from(b).unwrap_or(0));
                        u.disk = u.disk.saturating_sub(u64::try_from(n).unwrap_or(0));
                    }
                }
                Op::InsertForward {
                    relay,
                    recipient,
                    envelope,
                    now_ms,
                    reply,
                    sent_on,
                } => {
                    let hold_for = lock_tails(&w.tails).hold_for;
                    let due = now
                        .filter(|_| !hold_for.is_zero() && w.forwards.len() < MAX_HELD_FORWARDS)
                        .map(|now| now + hold_for);
                    if let (Some(sent_on), Some(due)) = (sent_on, due) {
                        *lock_tails(&w.tails)
                            .held_forward
                            .entry(relay.key)
                            .or_default() += 1;
                        w.forwards.push_back(HeldForward {
                            relay,
                            recipient,
                            envelope,
                            now_ms,
                            due,
                            sent_on,
                            reply,
                        });
                        continue;
                    }
                    // Written now: this relay's held envelopes before it, in order.
                    settle_forwards(
                        &db,
                        w,
                        now,
                        Some(relay.key),
                        &mut replies,
                        &mut acknowledged,
                        &mut forwards_written,
                    )?;
                    let seq = insert_forward(db.begun()?, &relay, &recipient, now_ms, &envelope)?;
                    replies.push(Reply::Insert(reply, Ok(Ok(seq))));
                }
                Op::DeleteForward { seq } => {
                    db.begun()?
                        .prepare_cached("DELETE FROM forward WHERE seq = ?1")?
                        .execute([i64_of(seq)])?;
                }
                Op::Purge {
                    older_than_ms,
                    reply,
                } => {
                    let n = db.begun()?.execute(
                        "DELETE FROM mail WHERE received_ms < ?1",
                        [i64_of(older_than_ms)],
                    )?;
                    replies.push(Reply::Purge(reply, Ok(n as u64)));
                }
            }
        }
        // Held mail that is due (in seq order, so each mailbox stays in order on disk).
        let due: Vec<(u64, NodeId)> = w
            .waiting
            .iter()
            .take_while(|(_, h)| now.is_none_or(|now| h.due <= now))
            .map(|(seq, h)| (*seq, h.recipient))
            .collect();
        for (seq, recipient) in due {
            write_held(
                &db,
                w,
                &mut undo,
                &recipient,
                seq,
                &mut written,
                &mut replies,
            )?;
        }
        settle_forwards(
            &db,
            w,
            now,
            None,
            &mut replies,
            &mut acknowledged,
            &mut forwards_written,
        )?;
        if w.faults.before_commit() {
            // Rolled back below, as a failed COMMIT is.
            return Err(StoreError::Sqlite(
                "commit failed (on purpose, for a test)".into(),
            ));
        }
        if written.iter().any(|m| m.3) {
            // Committed and no longer held at once, for readers that count both.
            let mut tails = lock_tails(&w.tails);
            db.commit()?;
            for (recipient, seq, _, _) in written.iter().filter(|m| m.3) {
                tails.unhold(recipient, *seq);
            }
        } else {
            db.commit()?;
        }
        // Counted when it wrote something (a batch that only held mail or read wrote nothing).
        if conn.total_changes() != changes_before {
            w.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })();
    if result.is_err() {
        // As a failed COMMIT leaves it: nothing of the batch on disk.
        db.rollback();
    }
    for r in acknowledged {
        r.send();
    }
    for relay in &forwards_written {
        unhold_forward(&w.tails, relay);
    }
    match result {
        Ok(()) => {
            let purged = replies.iter().any(|r| matches!(r, Reply::Purge(..)));
            if purged {
                w.usage = recount(conn).unwrap_or(std::mem::take(&mut w.usage));
                // Held mail is counted too, as on disk.
                let tails = lock_tails(&w.tails);
                for (recipient, held) in &tails.held {
                    let u = w.usage.entry(*recipient).or_default();
                    u.messages += held.len() as u64;
                    u.bytes += held.values().map(|m| m.envelope.len() as u64).sum::<u64>();
                }
            }
            {
                let mut tails = lock_tails(&w.tails);
                if purged {
                    // Purged mail may be in a tail: read everything from disk again.
                    let last = tails.next_seq.saturating_sub(1);
                    for tail in tails.boxes.values_mut() {
                        tail.trim_to(last);
                        tail.notify.send_replace(last);
                    }
                    tails.bytes = 0;
                }
                // Wake the deliveries that read this mail from disk.
                for (recipient, seq, _, _) in &written {
                    if let Some(tail) = tails.boxes.get(recipient) {
                        tail.notify.send_replace(*seq);
                    }
                }
            }
            for r in replies {
                r.send();
            }
        }
        Err(e) => {
            // Nothing in the batch was stored: take back what was handed out (a recipient
            // that already read it refuses the copy its sender sends again) and say so to
            // every sender. The numbers it used are never used again. Held mail written in
            // the batch is lost with it (its sender is told and sends it again); held mail
            // not written stays held.
            for (recipient, u) in undo {
                w.usage.insert(recipient, u);
            }
            {
                let mut tails = lock_tails(&w.tails);
                for (recipient, seq, handed_out, held) in &written {
                    if *held && let Some(mail) = tails.unhold(recipient, *seq) {
                        let u = w.usage.entry(*recipient).or_default();
                        u.messages = u.messages.saturating_sub(1);
                        u.bytes = u.bytes.saturating_sub(mail.envelope.len() as u64);
                    }
                    if *handed_out {
                        tails.update(recipient, |tail, _| tail.remove(*seq));
                    }
                }
            }
            for r in replies {
                r.fail(e.clone());
            }
        }
    }
}

fn recount(conn: &Connection) -> Result<HashMap<NodeId, Usage>, StoreError> {
    let mut out = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT recipient, COUNT(*), SUM(length(envelope)) FROM mail GROUP BY recipient",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (k, n, b) = row?;
        if let Ok(k) = <[u8; 32]>::try_from(k.as_slice()) {
            out.insert(
                NodeId::from_bytes(k),
                Usage {
                    messages: u64::try_from(n).unwrap_or(0),
                    bytes: u64::try_from(b).unwrap_or(0),
                    disk: u64::try_from(n).unwrap_or(0),
                },
            );
        }
    }
    Ok(out)
}

enum Reply {
    Insert(
        oneshot::Sender<Result<Result<u64, Refusal>, StoreError>>,
        Result<Result<u64, Refusal>, StoreError>,
    ),
    Purge(
        oneshot::Sender<Result<u64, StoreError>>,
        Result<u64, StoreError>,
    ),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::Insert(tx, v) => {
                let _ = tx.send(v);
            }
            Reply::Purge(tx, v) => {
                let _ = tx.send(v);
            }
        }
    }
    fn fail(self, e: StoreError) {
        match self {
            Reply::Insert(tx, _) => {
                let _ = tx.send(Err(e));
            }
            Reply::Purge(tx, _) => {
                let _ = tx.send(Err(e));
            }
        }
    }
}
