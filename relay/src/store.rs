//! Mailboxes on disk (SQLite, WAL). One writer thread commits inserts and deletions in batches
//! (group commit): an envelope is "accepted" only once the transaction holding it committed.
//! Reads go through their own connection.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use offst_core::net::wire::{Refusal, RelayAddress};
use offst_core::protocol::identity::NodeId;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

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
    messages: u64,
    bytes: u64,
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
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
}

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
        offst_core::wallet::tune_connection(&writer)?;
        writer.execute_batch(SCHEMA)?;
        let usage = recount(&writer)?;
        let reader = Connection::open(&path)?;
        reader.execute_batch("PRAGMA query_only = ON;")?;
        offst_core::wallet::tune_connection(&reader)?;
        let (tx, rx) = mpsc::channel::<Op>();
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = commits.clone();
        let handle = std::thread::Builder::new()
            .name("mail-writer".into())
            .spawn(move || writer_loop(&mut writer, rx, usage, bounds, &counted))
            .map_err(|e| StoreError::Sqlite(e.to_string()))?;
        Ok(Store {
            commits,
            ops: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Transactions committed so far (one per batch of operations).
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
        let (reply, rx) = oneshot::channel();
        self.send(match relay {
            None => Op::Insert {
                recipient,
                envelope,
                now_ms,
                reply,
            },
            Some(relay) => Op::InsertForward {
                relay,
                recipient,
                envelope,
                now_ms,
                reply,
            },
        })?;
        Ok(rx)
    }

    /// Delete `recipient`'s mail up to and including `up_to` (after the recipient handled it).
    pub fn delete(&self, recipient: NodeId, up_to: u64) -> Result<(), StoreError> {
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

    /// `recipient`'s mail after `after`, oldest first, at most `limit`.
    pub async fn fetch(
        &self,
        recipient: NodeId,
        after: u64,
        limit: u64,
    ) -> Result<Vec<Mail>, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
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
        .map_err(|e| StoreError::Sqlite(e.to_string()))?
    }

    /// Keep `envelope` for `recipient` at the relay `relay`, until forwarded.
    pub async fn insert_forward(
        &self,
        relay: RelayAddress,
        recipient: NodeId,
        envelope: Vec<u8>,
        now_ms: u64,
    ) -> Result<Result<u64, Refusal>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::InsertForward {
            relay,
            recipient,
            envelope,
            now_ms,
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
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

    /// Messages waiting, in all mailboxes.
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.count_rows("SELECT COUNT(*) FROM mail").await
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

fn writer_loop(
    conn: &mut Connection,
    rx: mpsc::Receiver<Op>,
    mut usage: HashMap<NodeId, Usage>,
    bounds: Bounds,
    commits: &std::sync::atomic::AtomicU64,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let before = usage.clone();
        let mut replies = Vec::with_capacity(batch.len());
        let result = (|| -> Result<(), StoreError> {
            let tx = conn.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO mail (recipient, received_ms, envelope) VALUES (?1, ?2, ?3)",
                )?;
                let mut del_sum = tx.prepare_cached(
                    "SELECT COUNT(*), COALESCE(SUM(length(envelope)), 0) FROM mail
                     WHERE recipient = ?1 AND seq <= ?2",
                )?;
                let mut del =
                    tx.prepare_cached("DELETE FROM mail WHERE recipient = ?1 AND seq <= ?2")?;
                for op in batch {
                    match op {
                        Op::Insert {
                            recipient,
                            envelope,
                            now_ms,
                            reply,
                        } => {
                            let u = usage.entry(recipient).or_default();
                            let size = envelope.len() as u64;
                            if u.messages + 1 > bounds.max_messages
                                || u.bytes + size > bounds.max_bytes
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
                            ins.execute(params![recipient.as_bytes(), i64_of(now_ms), envelope])?;
                            u.messages += 1;
                            u.bytes += size;
                            let seq = u64::try_from(tx.last_insert_rowid()).unwrap_or(0);
                            replies.push(Reply::Insert(reply, Ok(Ok(seq))));
                        }
                        Op::Delete { recipient, up_to } => {
                            let (n, b): (i64, i64) = del_sum
                                .query_row(params![recipient.as_bytes(), i64_of(up_to)], |r| {
                                    Ok((r.get(0)?, r.get(1)?))
                                })?;
                            if n > 0 {
                                del.execute(params![recipient.as_bytes(), i64_of(up_to)])?;
                                let u = usage.entry(recipient).or_default();
                                u.messages =
                                    u.messages.saturating_sub(u64::try_from(n).unwrap_or(0));
                                u.bytes = u.bytes.saturating_sub(u64::try_from(b).unwrap_or(0));
                            }
                        }
                        Op::InsertForward {
                            relay,
                            recipient,
                            envelope,
                            now_ms,
                            reply,
                        } => {
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
                                ],
                            )?;
                            let seq = u64::try_from(tx.last_insert_rowid()).unwrap_or(0);
                            replies.push(Reply::Insert(reply, Ok(Ok(seq))));
                        }
                        Op::DeleteForward { seq } => {
                            tx.prepare_cached("DELETE FROM forward WHERE seq = ?1")?
                                .execute([i64_of(seq)])?;
                        }
                        Op::Purge {
                            older_than_ms,
                            reply,
                        } => {
                            let n = tx.execute(
                                "DELETE FROM mail WHERE received_ms < ?1",
                                [i64_of(older_than_ms)],
                            )?;
                            replies.push(Reply::Purge(reply, Ok(n as u64)));
                        }
                    }
                }
            }
            tx.commit()?;
            commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })();
        match result {
            Ok(()) => {
                if replies.iter().any(|r| matches!(r, Reply::Purge(..))) {
                    usage = recount(conn).unwrap_or(usage);
                }
                for r in replies {
                    r.send();
                }
            }
            Err(e) => {
                // Nothing in the batch was stored: say so to every sender.
                usage = before;
                for r in replies {
                    r.fail(e.clone());
                }
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
