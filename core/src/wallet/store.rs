//! The wallet's SQLite database: schema, migrations, and the tables a durable step writes.
//!
//! One file, `wallet.db`, in WAL mode. The node's state lives in one row per channel, pending
//! request of a channel, payment, invoice and remembered outcome (each a versioned blob from
//! [`Node::take_changes`]), so a step writes only what it changed. Beside them: the outbox,
//! the history and the event queue.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::hooks::Action;
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};

use crate::protocol::identity::NodeId;
use crate::protocol::node::{ArchivedRole, Changes, Parts};
use crate::protocol::payment::InvoiceId;

use super::{Contact, WalletError};

/// The schema this build writes. Each entry of [`MIGRATIONS`] moves the database up one
/// version; `PRAGMA user_version` says where a database stands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The migrations, in order: `MIGRATIONS[i]` takes a database from version `i` to `i + 1`.
/// Never edit one that has shipped; add a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
    CREATE TABLE channels (friend BLOB PRIMARY KEY, data BLOB NOT NULL) STRICT;
    CREATE TABLE payments (invoice BLOB PRIMARY KEY, data BLOB NOT NULL) STRICT;
    CREATE TABLE invoices (invoice BLOB PRIMARY KEY, data BLOB NOT NULL) STRICT;
    CREATE TABLE outcomes (request BLOB PRIMARY KEY, data BLOB NOT NULL) STRICT;
    CREATE TABLE friends (friend BLOB PRIMARY KEY, name TEXT NOT NULL, added_ms INTEGER NOT NULL) STRICT;
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient BLOB NOT NULL,
        message BLOB NOT NULL,
        created_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        friend BLOB,
        invoice BLOB,
        currency TEXT,
        amount INTEGER,
        detail TEXT NOT NULL
    ) STRICT;
    CREATE TABLE event_queue (seq INTEGER PRIMARY KEY REFERENCES history(seq)) STRICT;
    ",
    // 2: indexes for the per-friend and per-payment views.
    "
    CREATE INDEX history_by_friend ON history(friend, seq) WHERE friend IS NOT NULL;
    CREATE INDEX history_by_invoice ON history(invoice, seq) WHERE invoice IS NOT NULL;
    ",
    // 3: the network: friends' mail keys and relays, friend requests, envelopes seen, and
    // control messages (friend requests) in the outbox beside protocol messages.
    "
    CREATE TABLE contacts (
        friend BLOB PRIMARY KEY,
        name TEXT NOT NULL,
        mail_key BLOB NOT NULL,
        relay_key BLOB NOT NULL,
        relay_addr TEXT NOT NULL
    ) STRICT;
    CREATE TABLE friend_requests (
        friend BLOB PRIMARY KEY,
        name TEXT NOT NULL,
        mail_key BLOB NOT NULL,
        relay_key BLOB NOT NULL,
        relay_addr TEXT NOT NULL,
        received_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE seen_envelopes (
        sender BLOB NOT NULL,
        id BLOB NOT NULL,
        sent_ms INTEGER NOT NULL,
        PRIMARY KEY (sender, id)
    ) STRICT;
    CREATE INDEX seen_by_time ON seen_envelopes(sent_ms);
    ALTER TABLE outbox ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
    ",
    // 4: each pending request of a channel as its own row (part format 2), so a step writes
    // the requests it changed instead of the whole channel with all of them.
    "
    CREATE TABLE pending (
        friend BLOB NOT NULL,
        request BLOB NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (friend, request)
    ) STRICT, WITHOUT ROWID;
    ",
    // 5: each operation queued in a channel as its own row (part format 3), so a step writes
    // the operations it queued instead of the whole queue.
    "
    CREATE TABLE queued (
        friend BLOB NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (friend, seq)
    ) STRICT, WITHOUT ROWID;
    ",
    // 6: the envelopes seen, keyed by sender and then send time, so that each one lands at
    // the end of its sender's range instead of on a random page (the envelope id is random;
    // the send time is signed with it, so a copy has the same key).
    "
    CREATE TABLE seen (
        sender BLOB NOT NULL,
        sent_ms INTEGER NOT NULL,
        id BLOB NOT NULL,
        PRIMARY KEY (sender, sent_ms, id)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO seen (sender, sent_ms, id) SELECT sender, sent_ms, id FROM seen_envelopes;
    DROP TABLE seen_envelopes;
    CREATE INDEX seen_by_time ON seen(sent_ms);
    ",
    // 7: the history's index by invoice leads with the invoice's expiry, so that the rows of
    // the payments under way (whose invoices expire at about the same time) land on the
    // index's last pages instead of each on a random one. Rows written before have 0 there.
    "
    ALTER TABLE history ADD COLUMN invoice_expires_ms INTEGER;
    UPDATE history SET invoice_expires_ms = 0 WHERE invoice IS NOT NULL;
    DROP INDEX history_by_invoice;
    CREATE INDEX history_by_invoice ON history(invoice_expires_ms, invoice, seq)
        WHERE invoice IS NOT NULL;
    ",
    // 8: the envelopes seen keyed by send time first. The replay check is an exact lookup,
    // which any order of the key's columns serves, and forgetting those out of the window is
    // then a range of the key itself: the index by time goes, and with it one more B-tree (one
    // more page) in every commit that took mail. New rows still land on the last pages: the
    // send times of the mail under way are all close to now.
    "
    CREATE TABLE seen_by_time_first (
        sent_ms INTEGER NOT NULL,
        sender BLOB NOT NULL,
        id BLOB NOT NULL,
        PRIMARY KEY (sent_ms, sender, id)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO seen_by_time_first (sent_ms, sender, id) SELECT sent_ms, sender, id FROM seen;
    DROP TABLE seen;
    ALTER TABLE seen_by_time_first RENAME TO seen;
    ",
    // 9: remembered outcomes keyed by their place in the order they were remembered (written
    // once each, forgotten oldest first) instead of by their random request id: a commit's
    // new rows share the table's last pages, and the key index (a random page per row) goes.
    // The place is inside each row's bytes, so `finish_migration` moves the rows.
    "
    CREATE TABLE outcomes_by_place (seq INTEGER PRIMARY KEY, data BLOB NOT NULL) STRICT;
    ",
    // 10: payments and invoices keyed by a row number the node gives each when it is made
    // (never reused; not in the bytes) instead of by their random invoice id, for the same
    // reason: the payments under way are the newest rows, so a commit writes the table's last
    // pages, and there is no key index. The rows keep their old order (rowid, the order they
    // were first written) and are numbered from 0, as places are; the node, loading them, gives new rows
    // above the largest.
    "
    CREATE TABLE payments_by_row (seq INTEGER PRIMARY KEY, data BLOB NOT NULL) STRICT;
    INSERT INTO payments_by_row (seq, data)
        SELECT row_number() OVER (ORDER BY rowid) - 1, data FROM payments;
    DROP TABLE payments;
    ALTER TABLE payments_by_row RENAME TO payments;
    CREATE TABLE invoices_by_row (seq INTEGER PRIMARY KEY, data BLOB NOT NULL) STRICT;
    INSERT INTO invoices_by_row (seq, data)
        SELECT row_number() OVER (ORDER BY rowid) - 1, data FROM invoices;
    DROP TABLE invoices;
    ALTER TABLE invoices_by_row RENAME TO invoices;
    ",
    // 11: the archive of finished payments and invoices the node no longer keeps in memory
    // (`ARCHIVE_AFTER_EXPIRY_MS` past their invoice's expiry): read only when asked for one,
    // never at open. Keyed by invoice, the one lookup; each row is written once.
    "
    CREATE TABLE payments_archive (
        invoice BLOB PRIMARY KEY,
        expires_ms INTEGER NOT NULL,
        data BLOB NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE invoices_archive (
        invoice BLOB PRIMARY KEY,
        expires_ms INTEGER NOT NULL,
        data BLOB NOT NULL
    ) STRICT, WITHOUT ROWID;
    ",
    // 12: the app's events are the history rows after the last one it handled, instead of a
    // queue with a row per event. Every history row was queued, apps handle them oldest first,
    // and history is kept for good: so one number says which are left. A step that reported
    // something wrote a row (and a page) fewer, and events no app reads take no room of their
    // own. The number starts just before the oldest event still queued (or after the whole
    // history when none is); an event handled out of order before the migration, after one
    // still queued, would be given again.
    "
    CREATE TABLE events_handled (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        up_to INTEGER NOT NULL
    ) STRICT;
    INSERT INTO events_handled (id, up_to) VALUES (0, COALESCE(
        (SELECT MIN(seq) FROM event_queue) - 1,
        (SELECT MAX(seq) FROM history),
        0));
    DROP TABLE event_queue;
    ",
];

/// How hard each commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit is on disk when it returns, even across power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: in WAL mode, safe against the app being killed; the last commits
    /// may be lost if the whole device loses power.
    Normal,
}

/// Open (or create) the database file and set it up. Does not migrate.
pub(crate) fn connect(
    path: &std::path::Path,
    durability: Durability,
) -> Result<Connection, WalletError> {
    let mut conn = Connection::open(path).map_err(WalletError::from_sqlite)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    // The first statement that reads the file tells a damaged or foreign file apart.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
    ))
    .map_err(WalletError::from_sqlite)?;
    tune(&mut conn).map_err(WalletError::from_sqlite)?;
    Ok(conn)
}

/// Report each statement `conn` runs, and its time, to [`crate::metrics::sql_profile_record`]
/// if the profile is on ([`crate::metrics::sql_profile_start`]); otherwise install nothing.
pub fn profile_statements(conn: &mut Connection) -> rusqlite::Result<()> {
    use rusqlite::trace::{TraceEvent, TraceEventCodes};
    if !crate::metrics::sql_profile_on() {
        return Ok(());
    }
    // SQLite's own figure for a statement comes from the file system's clock, in whole
    // milliseconds; so the time is taken here, from the statement's start (the `Stmt` event)
    // to its end (`Profile`). Statements can nest (one runs while another's rows are read), so
    // the starts are a stack, and an end closes the latest start of the same statement.
    let mut started: Vec<(String, std::time::Instant)> = Vec::new();
    conn.trace_v2(
        TraceEventCodes::SQLITE_TRACE_STMT | TraceEventCodes::SQLITE_TRACE_PROFILE,
        Some(move |event: TraceEvent<'_>| match event {
            TraceEvent::Stmt(stmt, _) => {
                started.push((stmt.sql().into_owned(), std::time::Instant::now()));
            }
            TraceEvent::Profile(stmt, _) => {
                let sql = stmt.sql();
                if let Some(i) = started.iter().rposition(|(s, _)| *s == sql) {
                    let (sql, at) = started.remove(i);
                    let ns = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    crate::metrics::sql_profile_record(&sql, ns);
                }
            }
            _ => {}
        }),
    )
}

/// Settings for a connection that runs the same few statements many times: keep them all
/// prepared, and keep their plans. With `SQLITE_ENABLE_STAT4` (the bundled build) SQLite
/// otherwise prepares a statement again whenever a bound value in a range (`seq > ?1`) changes,
/// which cost about 5 % of a busy wallet's CPU (`docs/benchmarks.md`). And keep temporary
/// data in memory: each step of a group commit runs in a savepoint, whose journal (the pages
/// the step changed, to undo it alone) otherwise spills to a temporary file once it passes
/// 64 KiB, about 9 KB written per payment on the load generator's chain (nothing of it needs
/// to survive a crash: the commit or the rollback of the whole transaction does). And, while
/// the load generator's statement profile is on, time its statements
/// ([`profile_statements`]).
pub fn tune(conn: &mut Connection) -> rusqlite::Result<()> {
    profile_statements(conn)?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Count the write transactions committed on `conn` from now on.
pub(crate) fn count_commits(conn: &mut Connection) -> Result<Arc<AtomicU64>, WalletError> {
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    // The hook sees every commit of a write transaction (also one that changed nothing, so
    // the count errs high).
    conn.commit_hook(Some(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        false
    }))
    .map_err(WalletError::from_sqlite)?;
    Ok(count)
}

/// Answers from memory for rows that the wallet reads for nearly every message and almost
/// never writes: a friend's contact (to seal mail for them), the relay and the report privacy
/// in `meta`. Each read was a statement and a read transaction of its own (about 2 % of the
/// load generator's CPU, `docs/benchmarks.md`).
///
/// SQLite itself says when an answer may be stale, so no writer has to remember the cache:
/// its update hook on every write to `contacts` or `meta` (but the settings row, which steps
/// rewrite now and then), its rollback hook on every rollback (an answer read inside a transaction
/// that is then undone), and [`ReadCache::forget`] on a rollback to a savepoint, which no hook
/// reports. Any of them starts a new generation, and answers from an older one are read again.
/// A wallet has one connection, so no other writer can change these rows behind its back.
pub(crate) struct ReadCache {
    generation: Arc<AtomicU64>,
    contacts: RefCell<Generation<NodeId, Option<Contact>>>,
    meta: RefCell<Generation<&'static str, Option<Vec<u8>>>>,
}

/// Answers read during one generation.
struct Generation<K, V> {
    number: u64,
    answers: HashMap<K, V>,
}

impl<K, V> Default for Generation<K, V> {
    fn default() -> Self {
        Generation {
            number: 0,
            answers: HashMap::new(),
        }
    }
}

/// At most this many answers of one kind are kept (a merchant hears from many buyers): past
/// it, the kept ones are dropped and read again as needed.
const CACHED_ANSWERS: usize = 1024;

impl ReadCache {
    /// Watch `conn` with SQLite's hooks. Call once the settings row exists (a wallet's first
    /// commit writes it): writes to any other row of `meta` start a new generation.
    pub(crate) fn install(conn: &mut Connection) -> Result<ReadCache, WalletError> {
        let settings: i64 = conn
            .query_row("SELECT rowid FROM meta WHERE key = 'settings'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(WalletError::from_sqlite)?
            .unwrap_or(-1);
        let generation = Arc::new(AtomicU64::new(1));
        let on_write = generation.clone();
        conn.update_hook(Some(move |_: Action, _: &str, table: &str, rowid: i64| {
            if table == "contacts" || (table == "meta" && rowid != settings) {
                on_write.fetch_add(1, Ordering::SeqCst);
            }
        }))
        .map_err(WalletError::from_sqlite)?;
        let on_rollback = generation.clone();
        conn.rollback_hook(Some(move || {
            on_rollback.fetch_add(1, Ordering::SeqCst);
        }))
        .map_err(WalletError::from_sqlite)?;
        Ok(ReadCache {
            generation,
            contacts: RefCell::default(),
            meta: RefCell::default(),
        })
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Start a new generation: after a rollback to a savepoint.
    pub(crate) fn forget(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// A friend's contact, as `read` (from the database) would return it.
    pub(crate) fn contact(
        &self,
        friend: &NodeId,
        read: impl FnOnce() -> Result<Option<Contact>, WalletError>,
    ) -> Result<Option<Contact>, WalletError> {
        self.answer(&self.contacts, *friend, read)
    }

    /// A meta value, as [`get_meta`] on `conn` would return it.
    pub(crate) fn meta(
        &self,
        conn: &Connection,
        key: &'static str,
    ) -> Result<Option<Vec<u8>>, WalletError> {
        self.answer(&self.meta, key, || get_meta(conn, key))
    }

    fn answer<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        kept: &RefCell<Generation<K, V>>,
        key: K,
        read: impl FnOnce() -> Result<V, WalletError>,
    ) -> Result<V, WalletError> {
        let now = self.generation();
        {
            let kept = kept.borrow();
            if kept.number == now
                && let Some(v) = kept.answers.get(&key)
            {
                return Ok(v.clone());
            }
        }
        let value = read()?;
        let mut kept = kept.borrow_mut();
        if kept.number != now || kept.answers.len() >= CACHED_ANSWERS {
            kept.number = now;
            kept.answers.clear();
        }
        kept.answers.insert(key, value.clone());
        Ok(value)
    }
}

/// The schema version of the database.
pub(crate) fn version(conn: &Connection) -> Result<u32, WalletError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(WalletError::from_sqlite)
}

/// Bring the database to [`SCHEMA_VERSION`], one migration per transaction. Refuses a database
/// from a newer build without touching it.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), WalletError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Bring the database to `target` (at most [`SCHEMA_VERSION`]).
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), WalletError> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(WalletError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for v in found..target.min(SCHEMA_VERSION) {
        let tx = conn.transaction().map_err(WalletError::from_sqlite)?;
        let sql = MIGRATIONS.get(v as usize).copied().unwrap_or_default();
        tx.execute_batch(sql).map_err(WalletError::from_sqlite)?;
        finish_migration(&tx, v + 1)?;
        tx.pragma_update(None, "user_version", v + 1)
            .map_err(WalletError::from_sqlite)?;
        tx.commit().map_err(WalletError::from_sqlite)?;
    }
    Ok(())
}

/// The part of the migration to `version` that SQL alone cannot do, in its transaction after
/// its SQL. A row that does not decode fails the migration, which leaves the file as it was.
fn finish_migration(tx: &Connection, version: u32) -> Result<(), WalletError> {
    if version == 9 {
        {
            let mut read = tx
                .prepare("SELECT data FROM outcomes")
                .map_err(WalletError::from_sqlite)?;
            let mut put = tx
                .prepare("INSERT INTO outcomes_by_place (seq, data) VALUES (?1, ?2)")
                .map_err(WalletError::from_sqlite)?;
            let mut rows = read.query([]).map_err(WalletError::from_sqlite)?;
            while let Some(row) = rows.next().map_err(WalletError::from_sqlite)? {
                let data: Vec<u8> = row.get(0).map_err(WalletError::from_sqlite)?;
                let seq = place(
                    crate::protocol::node::outcome_place(&data)?,
                    "a remembered outcome",
                )?;
                put.execute(params![seq, data])
                    .map_err(WalletError::from_sqlite)?;
            }
        }
        tx.execute_batch("DROP TABLE outcomes; ALTER TABLE outcomes_by_place RENAME TO outcomes;")
            .map_err(WalletError::from_sqlite)?;
    }
    Ok(())
}

/// Read a meta value.
pub(crate) fn get_meta(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, WalletError> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .map_err(WalletError::from_sqlite)
}

/// Write a meta value.
pub(crate) fn put_meta(conn: &Connection, key: &str, value: &[u8]) -> Result<(), WalletError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![key, value]))
    .map(|_| ())
    .map_err(WalletError::from_sqlite)
}

/// Delete a meta value.
pub(crate) fn delete_meta(conn: &Connection, key: &str) -> Result<(), WalletError> {
    conn.execute("DELETE FROM meta WHERE key = ?1", [key])
        .map(|_| ())
        .map_err(WalletError::from_sqlite)
}

/// Every stored part of the node.
pub(crate) fn load_parts(conn: &Connection) -> Result<Parts, WalletError> {
    let all = |table: &str| -> Result<Vec<Vec<u8>>, WalletError> {
        let mut stmt = conn
            .prepare(&format!("SELECT data FROM {table}"))
            .map_err(WalletError::from_sqlite)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(WalletError::from_sqlite)?;
        rows.collect::<Result<_, _>>()
            .map_err(WalletError::from_sqlite)
    };
    let by_row = |table: &str, what: &str| -> Result<Vec<(u64, Vec<u8>)>, WalletError> {
        let mut stmt = conn
            .prepare(&format!("SELECT seq, data FROM {table}"))
            .map_err(WalletError::from_sqlite)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(WalletError::from_sqlite)?;
        rows.map(|row| {
            let (seq, data) = row.map_err(WalletError::from_sqlite)?;
            let seq = u64::try_from(seq).map_err(|_| WalletError::Corrupt {
                detail: format!("{what}'s row number is negative"),
            })?;
            Ok((seq, data))
        })
        .collect()
    };
    Ok(Parts {
        channels: all("channels")?,
        pending: all("pending")?,
        queued: all("queued")?,
        payments: by_row("payments", "a payment")?,
        invoices: by_row("invoices", "an invoice")?,
        outcomes: all("outcomes")?,
        settings: get_meta(conn, "settings")?.ok_or_else(|| WalletError::Corrupt {
            detail: "the node settings are missing".into(),
        })?,
    })
}

/// An archived record's bytes ([`crate::protocol::node::Archived`]), if the archive holds one
/// for `invoice` in that role.
pub(crate) fn archived(
    conn: &Connection,
    role: ArchivedRole,
    invoice: &InvoiceId,
) -> Result<Option<Vec<u8>>, WalletError> {
    let sql = match role {
        ArchivedRole::Payment => "SELECT data FROM payments_archive WHERE invoice = ?1",
        ArchivedRole::Invoice => "SELECT data FROM invoices_archive WHERE invoice = ?1",
    };
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row([&invoice.0[..]], |r| r.get(0)).optional())
        .map_err(WalletError::from_sqlite)
}

/// When an archived payment's or invoice's invoice expired, if the archive holds it.
pub(crate) fn archived_expiry(
    conn: &Connection,
    invoice: &InvoiceId,
) -> Result<Option<u64>, WalletError> {
    conn.prepare_cached(
        "SELECT expires_ms FROM payments_archive WHERE invoice = ?1
         UNION ALL SELECT expires_ms FROM invoices_archive WHERE invoice = ?1 LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row([&invoice.0[..]], |r| r.get::<_, i64>(0))
            .optional()
    })
    .map(|e| e.map(|e| u64::try_from(e).unwrap_or(0)))
    .map_err(WalletError::from_sqlite)
}

/// The statements that write and delete a row of `table`, keyed by `key` (one column, or
/// `friend` and a second one): built at compile time, so a step neither formats SQL nor copies
/// the rows it writes.
macro_rules! row_statements {
    ($table:literal, $key:literal) => {
        (
            concat!(
                "INSERT INTO ",
                $table,
                " (",
                $key,
                ", data) VALUES (?1, ?2) ",
                "ON CONFLICT(",
                $key,
                ") DO UPDATE SET data = excluded.data"
            ),
            concat!("DELETE FROM ", $table, " WHERE ", $key, " = ?1"),
        )
    };
    ($table:literal, friend, $key:literal) => {
        (
            concat!(
                "INSERT INTO ",
                $table,
                " (friend, ",
                $key,
                ", data) VALUES (?1, ?2, ?3) ",
                "ON CONFLICT(friend, ",
                $key,
                ") DO UPDATE SET data = excluded.data"
            ),
            concat!(
                "DELETE FROM ",
                $table,
                " WHERE friend = ?1 AND ",
                $key,
                " = ?2"
            ),
        )
    };
}

/// A place (a queued operation's, a remembered outcome's, a payment's or an invoice's row) as SQLite's integer. Places count
/// up from 0, one at a time, and stay far below `i64::MAX`; one beyond it is a damaged store.
fn place(n: u64, what: &str) -> Result<i64, WalletError> {
    i64::try_from(n).map_err(|_| WalletError::Corrupt {
        detail: format!("{what}'s place is out of range"),
    })
}

/// Write or delete rows with the statements of [`row_statements!`]: each row's key (its `N`
/// columns, borrowed from the step's changes) and its bytes, or `None` to delete it.
fn write_rows<'a, const N: usize>(
    tx: &Connection,
    (put_sql, del_sql): (&str, &str),
    rows: impl IntoIterator<Item = Result<([ToSqlOutput<'a>; N], Option<&'a [u8]>), WalletError>>,
) -> Result<(), WalletError> {
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return Ok(());
    }
    let mut put = tx
        .prepare_cached(put_sql)
        .map_err(WalletError::from_sqlite)?;
    let mut del = tx
        .prepare_cached(del_sql)
        .map_err(WalletError::from_sqlite)?;
    for row in rows {
        let (key, data) = row?;
        let key = key.iter().map(|k| k as &dyn ToSql);
        match data {
            Some(data) => put.execute(params_from_iter(key.chain([&data as &dyn ToSql]))),
            None => del.execute(params_from_iter(key)),
        }
        .map_err(WalletError::from_sqlite)?;
    }
    Ok(())
}

/// Write one step's changes; the settings row only with `settings_changed` (the node's
/// settings bytes differ from those last written).
pub(crate) fn apply_changes(
    tx: &Connection,
    changes: &Changes,
    settings_changed: bool,
) -> Result<(), WalletError> {
    fn blob(b: &[u8]) -> ToSqlOutput<'_> {
        ToSqlOutput::from(b)
    }
    write_rows(
        tx,
        row_statements!("channels", "friend"),
        changes
            .channels
            .iter()
            .map(|(k, v)| Ok(([blob(k.as_bytes())], v.as_deref()))),
    )?;
    write_rows(
        tx,
        row_statements!("pending", friend, "request"),
        changes.pending.iter().map(|((friend, request), data)| {
            Ok(([blob(friend.as_bytes()), blob(&request.0)], data.as_deref()))
        }),
    )?;
    write_rows(
        tx,
        row_statements!("queued", friend, "seq"),
        changes.queued.iter().map(|((friend, seq), data)| {
            let seq = place(*seq, "a queued operation")?;
            Ok(([blob(friend.as_bytes()), seq.into()], data.as_deref()))
        }),
    )?;
    write_rows(
        tx,
        row_statements!("payments", "seq"),
        changes
            .payments
            .iter()
            .map(|(row, v)| Ok(([place(*row, "a payment")?.into()], v.as_deref()))),
    )?;
    write_rows(
        tx,
        row_statements!("invoices", "seq"),
        changes
            .invoices
            .iter()
            .map(|(row, v)| Ok(([place(*row, "an invoice")?.into()], v.as_deref()))),
    )?;
    write_rows(
        tx,
        row_statements!("outcomes", "seq"),
        changes
            .outcomes
            .iter()
            .map(|(seq, v)| Ok(([place(*seq, "a remembered outcome")?.into()], v.as_deref()))),
    )?;
    for a in &changes.archived {
        let sql = match a.role {
            ArchivedRole::Payment => {
                "INSERT OR REPLACE INTO payments_archive (invoice, expires_ms, data) VALUES (?1, ?2, ?3)"
            }
            ArchivedRole::Invoice => {
                "INSERT OR REPLACE INTO invoices_archive (invoice, expires_ms, data) VALUES (?1, ?2, ?3)"
            }
        };
        tx.prepare_cached(sql)
            .and_then(|mut s| {
                s.execute(params![
                    &a.invoice.0[..],
                    i64::try_from(a.expires_at_ms).unwrap_or(i64::MAX),
                    &a.data
                ])
            })
            .map_err(WalletError::from_sqlite)?;
    }
    if settings_changed {
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('settings', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut s| s.execute([&changes.settings]))
        .map_err(WalletError::from_sqlite)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection with the two tables the read cache watches, the settings row written, and
    /// the cache installed.
    fn watched() -> Result<(Connection, ReadCache), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
             CREATE TABLE contacts (friend BLOB PRIMARY KEY, name TEXT NOT NULL) STRICT;
             INSERT INTO meta (key, value) VALUES ('settings', x'00');",
        )?;
        put_meta(&conn, "relay", b"first")?;
        let cache = ReadCache::install(&mut conn)?;
        Ok((conn, cache))
    }

    /// The relay as the cache answers it, and whether the answer came from the database.
    fn relay(conn: &Connection, cache: &ReadCache) -> (Option<Vec<u8>>, bool) {
        let read = std::cell::Cell::new(false);
        let value = cache
            .answer(&cache.meta, "relay", || {
                read.set(true);
                get_meta(conn, "relay")
            })
            .unwrap_or_default();
        (value, read.get())
    }

    /// What the read cache answers is what the database holds, after a write, a rollback and
    /// a rollback to a savepoint; and a step's rewrite of the settings row, which every step
    /// makes, leaves the answers in memory.
    #[test]
    fn cached_reads_follow_writes_and_rollbacks() -> Result<(), Box<dyn std::error::Error>> {
        let (conn, cache) = watched()?;
        let first = Some(b"first".to_vec());
        assert_eq!(relay(&conn, &cache), (first.clone(), true));
        assert_eq!(relay(&conn, &cache), (first.clone(), false), "from memory");
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('settings', x'01')
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [],
        )?;
        assert_eq!(
            relay(&conn, &cache),
            (first, false),
            "the settings do not count"
        );

        put_meta(&conn, "relay", b"second")?;
        let second = Some(b"second".to_vec());
        assert_eq!(relay(&conn, &cache), (second.clone(), true));

        // Read inside a transaction that is then rolled back.
        conn.execute_batch("BEGIN")?;
        put_meta(&conn, "relay", b"undone")?;
        assert_eq!(relay(&conn, &cache).0, Some(b"undone".to_vec()));
        conn.execute_batch("ROLLBACK")?;
        assert_eq!(relay(&conn, &cache), (second.clone(), true));

        // Read inside a step whose savepoint is rolled back (no hook sees that).
        conn.execute_batch("BEGIN")?;
        let failed = crate::wallet::in_savepoint(&conn, &cache, || {
            put_meta(&conn, "relay", b"undone")?;
            assert_eq!(relay(&conn, &cache).0, Some(b"undone".to_vec()));
            Err(WalletError::Storage("the step failed".into()))
        });
        assert!(failed.is_err());
        conn.execute_batch("COMMIT")?;
        assert_eq!(relay(&conn, &cache), (second.clone(), true));

        // Unwritten keys are answered too, until written.
        assert_eq!(cache.meta(&conn, "report_privacy")?, None);
        put_meta(&conn, "report_privacy", b"off")?;
        assert_eq!(cache.meta(&conn, "report_privacy")?, Some(b"off".to_vec()));
        Ok(())
    }

    /// Any write to the contacts starts a new generation, so no contact is answered from
    /// before it.
    #[test]
    fn a_contact_written_is_read_again() -> Result<(), Box<dyn std::error::Error>> {
        let (conn, cache) = watched()?;
        let before = cache.generation();
        conn.execute(
            "INSERT INTO contacts (friend, name) VALUES (x'01', 'a')",
            [],
        )?;
        let after_insert = cache.generation();
        assert!(after_insert > before);
        conn.execute("UPDATE contacts SET name = 'b'", [])?;
        assert!(cache.generation() > after_insert);
        Ok(())
    }

    /// A wallet's connection keeps its statements' plans: a statement with a range on a bound
    /// value is not prepared again on every step (the STAT4 build would, see [`tune`]).
    #[test]
    fn tuned_connection_keeps_plans() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        assert!(!conn.db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)?);
        tune(&mut conn)?;
        assert!(conn.db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)?);
        Ok(())
    }

    /// A wallet's connection keeps a step's savepoint journal in memory (2 = `MEMORY`), not in
    /// a temporary file written beside every large step.
    #[test]
    fn tuned_connection_keeps_temporary_data_in_memory() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        let before: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0))?;
        assert_ne!(before, 2);
        tune(&mut conn)?;
        let after: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0))?;
        assert_eq!(after, 2);
        Ok(())
    }
}
