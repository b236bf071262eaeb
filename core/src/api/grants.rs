//! The owner's grants to apps, the apps' spending and the invoices each app created, in
//! `apps.db` beside the wallet (SQLite, WAL).
//!
//! It is a file of its own so that `offst apps add|revoke` can change it while `offst serve`
//! holds the wallet: the server reads an app's grant again for every request, so a revocation
//! takes effect with the app's next request, and waits that were under way end within a
//! quarter of a second.
//!
//! Spending is reserved before a payment starts, in one transaction that checks the limit, and
//! given back only when the payment ended with nothing moved. A crash between the reservation
//! and the payment leaves the app with less to spend, never more.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::wire::Permissions;
use crate::protocol::identity::NodeId;
use crate::protocol::payment::InvoiceId;

/// A spending limit is over this window.
pub const SPENDING_WINDOW_MS: u64 = 24 * 3_600_000;

/// The file beside the wallet.
pub const GRANTS_FILE: &str = "apps.db";

/// Why the grants could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum GrantsError {
    /// SQLite failed (the message says how).
    #[error("apps database: {0}")]
    Sqlite(String),
    /// Another app has this name.
    #[error("another app is already called {0:?}; choose another name or revoke it first")]
    NameTaken(String),
    /// No app by that name or key.
    #[error("no app {0:?}; `offst apps list` shows them")]
    NotFound(String),
    /// The name is empty or too long.
    #[error("an app's name is 1 to 64 characters, without control characters")]
    BadName,
    /// The apps database is from a newer Offst.
    #[error("the apps database has format {0}, newer than this Offst knows; update Offst")]
    Newer(i64),
}

impl From<rusqlite::Error> for GrantsError {
    fn from(e: rusqlite::Error) -> Self {
        GrantsError::Sqlite(e.to_string())
    }
}

/// One app's grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The app's key.
    pub key: NodeId,
    /// Its name, as history shows it.
    pub name: String,
    /// What it may do.
    pub permissions: Permissions,
    /// The most it may pay per 24 hours (with fees), in `currency`.
    pub pay_limit: u64,
    /// The currency it may pay in (`None`: it may not pay).
    pub currency: Option<String>,
    /// When it was granted.
    pub added_ms: u64,
    /// When it was revoked.
    pub revoked_ms: Option<u64>,
}

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS apps (
        key BLOB PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        permissions INTEGER NOT NULL,
        pay_limit INTEGER NOT NULL,
        currency TEXT,
        added_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    ) STRICT;
    CREATE TABLE IF NOT EXISTS spends (
        id INTEGER PRIMARY KEY,
        key BLOB NOT NULL,
        at_ms INTEGER NOT NULL,
        invoice BLOB NOT NULL,
        amount INTEGER NOT NULL,
        refunded INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX IF NOT EXISTS spends_by_key ON spends(key, at_ms);
    CREATE TABLE IF NOT EXISTS app_invoices (
        invoice BLOB PRIMARY KEY,
        key BLOB NOT NULL
    ) STRICT;
";

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The grants of one wallet.
pub struct Grants {
    conn: Connection,
}

impl Grants {
    /// Open (or create) `apps.db` in the wallet's directory.
    pub fn open(wallet_dir: &Path) -> Result<Grants, GrantsError> {
        let conn = Connection::open(wallet_dir.join(GRANTS_FILE))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(GrantsError::Newer(version));
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        Ok(Grants { conn })
    }

    /// Grant `key`, under `name`, `permissions` and (for `pay`) a limit per 24 hours in
    /// `currency`. Granting a key again replaces its grant (and lifts a revocation).
    pub fn add(
        &mut self,
        name: &str,
        key: NodeId,
        permissions: Permissions,
        pay_limit: Option<(u64, String)>,
        now_ms: u64,
    ) -> Result<Grant, GrantsError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(GrantsError::BadName);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let owner: Option<Vec<u8>> = tx
            .query_row("SELECT key FROM apps WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        if owner.is_some_and(|k| k != key.as_bytes()) {
            return Err(GrantsError::NameTaken(name.to_string()));
        }
        let (limit, currency) = match pay_limit {
            Some((l, c)) => (l, Some(c)),
            None => (0, None),
        };
        tx.execute(
            "INSERT INTO apps (key, name, permissions, pay_limit, currency, added_ms, revoked_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
             ON CONFLICT(key) DO UPDATE SET name = ?2, permissions = ?3, pay_limit = ?4,
                currency = ?5, added_ms = ?6, revoked_ms = NULL",
            params![
                key.as_bytes(),
                name,
                permissions.bits(),
                i64_of(limit),
                currency,
                i64_of(now_ms)
            ],
        )?;
        tx.commit()?;
        self.get(&key)?
            .ok_or_else(|| GrantsError::NotFound(name.to_string()))
    }

    /// Every app ever granted, revoked ones too, by name.
    pub fn list(&self) -> Result<Vec<Grant>, GrantsError> {
        let mut s = self.conn.prepare_cached(
            "SELECT key, name, permissions, pay_limit, currency, added_ms, revoked_ms
             FROM apps ORDER BY name",
        )?;
        let rows = s.query_map([], read_grant)?;
        rows.map(|r| r.map_err(GrantsError::from)).collect()
    }

    /// The grant of `key`, revoked or not.
    pub fn get(&self, key: &NodeId) -> Result<Option<Grant>, GrantsError> {
        let mut s = self.conn.prepare_cached(
            "SELECT key, name, permissions, pay_limit, currency, added_ms, revoked_ms
             FROM apps WHERE key = ?1",
        )?;
        Ok(s.query_row([key.as_bytes()], read_grant).optional()?)
    }

    /// Revoke the app called `who`, or whose key (text form, or its first 8 or more
    /// characters) is `who`. Its next request is refused.
    pub fn revoke(&mut self, who: &str, now_ms: u64) -> Result<Grant, GrantsError> {
        let who_lower = who.trim().to_ascii_lowercase();
        let found = self
            .list()?
            .into_iter()
            .filter(|g| {
                g.name == who.trim()
                    || (who_lower.len() >= 8 && g.key.to_string().starts_with(&who_lower))
            })
            .collect::<Vec<_>>();
        let [grant] = found.as_slice() else {
            return Err(GrantsError::NotFound(who.to_string()));
        };
        self.conn.execute(
            "UPDATE apps SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE key = ?1",
            params![grant.key.as_bytes(), i64_of(now_ms)],
        )?;
        self.get(&grant.key)?
            .ok_or_else(|| GrantsError::NotFound(who.to_string()))
    }

    /// What `key` spent in the 24 hours before `now_ms` (with fees; payments that ended with
    /// nothing moved are not counted).
    pub fn spent(&self, key: &NodeId, now_ms: u64) -> Result<u64, GrantsError> {
        spent_in(&self.conn, key, now_ms)
    }

    /// Reserve `amount` of `key`'s limit for paying `invoice`, if it fits in `limit`: the
    /// reservation's id, or what was already spent.
    pub fn reserve(
        &mut self,
        key: &NodeId,
        invoice: &InvoiceId,
        amount: u64,
        limit: u64,
        now_ms: u64,
    ) -> Result<Result<i64, u64>, GrantsError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let spent = spent_in(&tx, key, now_ms)?;
        if spent.checked_add(amount).is_none_or(|total| total > limit) {
            return Ok(Err(spent));
        }
        tx.execute(
            "INSERT INTO spends (key, at_ms, invoice, amount) VALUES (?1, ?2, ?3, ?4)",
            params![
                key.as_bytes(),
                i64_of(now_ms),
                invoice.0.to_vec(),
                i64_of(amount)
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Ok(id))
    }

    /// Give a reservation back: its payment ended with nothing moved.
    pub fn refund(&mut self, reservation: i64) -> Result<(), GrantsError> {
        self.conn.execute(
            "UPDATE spends SET refunded = 1 WHERE id = ?1",
            [reservation],
        )?;
        Ok(())
    }

    /// Remember that `key` created `invoice` (only it may follow the invoice).
    pub fn remember_invoice(
        &mut self,
        key: &NodeId,
        invoice: &InvoiceId,
    ) -> Result<(), GrantsError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO app_invoices (invoice, key) VALUES (?1, ?2)",
            params![invoice.0.to_vec(), key.as_bytes()],
        )?;
        Ok(())
    }

    /// The app that created `invoice`, if an app did.
    pub fn invoice_owner(&self, invoice: &InvoiceId) -> Result<Option<NodeId>, GrantsError> {
        let key: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT key FROM app_invoices WHERE invoice = ?1",
                [invoice.0.to_vec()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(key.and_then(|k| <[u8; 32]>::try_from(k).ok().map(NodeId::from_bytes)))
    }
}

fn spent_in(conn: &Connection, key: &NodeId, now_ms: u64) -> Result<u64, GrantsError> {
    let since = now_ms.saturating_sub(SPENDING_WINDOW_MS);
    let total: i64 = conn.query_row(
        "SELECT COALESCE(SUM(amount), 0) FROM spends
         WHERE key = ?1 AND at_ms > ?2 AND refunded = 0",
        params![key.as_bytes(), i64_of(since)],
        |r| r.get(0),
    )?;
    Ok(u64_of(total))
}

fn read_grant(r: &rusqlite::Row<'_>) -> rusqlite::Result<Grant> {
    let key: Vec<u8> = r.get(0)?;
    let key = <[u8; 32]>::try_from(key)
        .map(NodeId::from_bytes)
        .map_err(|_| {
            rusqlite::Error::InvalidColumnType(0, "key".into(), rusqlite::types::Type::Blob)
        })?;
    let bits: i64 = r.get(2)?;
    Ok(Grant {
        key,
        name: r.get(1)?,
        permissions: Permissions::from_bits(u8::try_from(bits).unwrap_or(0)),
        pay_limit: u64_of(r.get(3)?),
        currency: r.get(4)?,
        added_ms: u64_of(r.get(5)?),
        revoked_ms: r.get::<_, Option<i64>>(6)?.map(u64_of),
    })
}
