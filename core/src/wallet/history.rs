//! History: everything the user should know, as rows with a timestamp, kept for good; and the
//! event queue, the rows an app has not yet handled: those after the last one it handled
//! (`events_handled`, one number).
//!
//! Each row is written in the same transaction as the state change it reports, so history and
//! state never disagree, and the row is in the queue from that commit on: an app that reads
//! [`super::Wallet::next_event`] and acknowledges with [`super::Wallet::event_handled`] sees
//! every event at least once, in order, across crashes.

use rusqlite::{Connection, Row, params};

use crate::protocol::amount::Currency;
use crate::protocol::identity::NodeId;
use crate::protocol::node::Event;
use crate::protocol::payment::InvoiceId;

use super::WalletError;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// An invoice of ours was committed: the money is on its way.
    InvoicePaid,
    /// An invoice of ours expired unpaid.
    InvoiceCancelled,
    /// We started paying an invoice.
    PaymentStarted,
    /// A payment of ours completed; the receipt is in the payment view.
    PaymentCompleted,
    /// A payment of ours was cancelled; nothing moved.
    PaymentCancelled,
    /// We gave up a payment before committing it.
    PaymentAbandoned,
    /// A friend proposes a manual reset of our channel.
    ResetProposed,
    /// A channel was reset by both friends.
    ChannelReset,
    /// A channel recovered from a disagreement.
    Resynced,
    /// The wallet was restored from a backup and is resyncing with its friends.
    Restored,
    /// Someone who scanned our invitation asks to be friends.
    FriendRequested,
    /// Someone whose invitation we accepted accepted us back.
    FriendAccepted,
    /// An app did something through `offst serve` (the detail names the app).
    AppAction,
    /// An app tried something and was refused (the detail names the app and why).
    AppRefused,
}

impl EventKind {
    const ALL: [(EventKind, &'static str); 19] = [
        (EventKind::FriendAdded, "friend_added"),
        (EventKind::LimitSet, "limit_set"),
        (EventKind::LimitChanged, "limit_changed"),
        (EventKind::LimitNotSet, "limit_not_set"),
        (EventKind::InvoiceCreated, "invoice_created"),
        (EventKind::InvoicePaid, "invoice_paid"),
        (EventKind::InvoiceCancelled, "invoice_cancelled"),
        (EventKind::PaymentStarted, "payment_started"),
        (EventKind::PaymentCompleted, "payment_completed"),
        (EventKind::PaymentCancelled, "payment_cancelled"),
        (EventKind::PaymentAbandoned, "payment_abandoned"),
        (EventKind::ResetProposed, "reset_proposed"),
        (EventKind::ChannelReset, "channel_reset"),
        (EventKind::Resynced, "resynced"),
        (EventKind::Restored, "restored"),
        (EventKind::FriendRequested, "friend_requested"),
        (EventKind::FriendAccepted, "friend_accepted"),
        (EventKind::AppAction, "app_action"),
        (EventKind::AppRefused, "app_refused"),
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("unknown", |(_, s)| s)
    }

    /// The kind stored as `s`.
    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }
}

/// One row of history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Position in history; increases by one for each row ever written.
    pub seq: u64,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// What.
    pub kind: EventKind,
    /// The friend concerned, if one.
    pub friend: Option<NodeId>,
    /// The invoice concerned, if one.
    pub invoice: Option<InvoiceId>,
    /// The currency of `amount`.
    pub currency: Option<Currency>,
    /// An amount, from our side where it has a sign (limits, balances, payments).
    pub amount: Option<i64>,
    /// A sentence for people.
    pub detail: String,
}

/// A row about to be written (its `seq` is given by the database).
#[derive(Clone, Debug)]
pub(crate) struct NewEntry {
    pub kind: EventKind,
    pub friend: Option<NodeId>,
    pub invoice: Option<InvoiceId>,
    pub currency: Option<Currency>,
    pub amount: Option<i64>,
    pub detail: String,
}

impl NewEntry {
    pub fn new(kind: EventKind, detail: String) -> NewEntry {
        NewEntry {
            kind,
            friend: None,
            invoice: None,
            currency: None,
            amount: None,
            detail,
        }
    }
    pub fn friend(mut self, f: NodeId) -> NewEntry {
        self.friend = Some(f);
        self
    }
    pub fn invoice(mut self, i: InvoiceId) -> NewEntry {
        self.invoice = Some(i);
        self
    }
    pub fn amount(mut self, c: Currency, a: i64) -> NewEntry {
        self.currency = Some(c);
        self.amount = Some(a);
        self
    }

    /// The row for a protocol event.
    pub fn from_event(event: &Event) -> NewEntry {
        match event {
            Event::LimitChanged {
                friend,
                currency,
                limit,
            } => NewEntry::new(
                EventKind::LimitChanged,
                format!(
                    "{} now lets you owe up to {limit} {currency}",
                    friend.short()
                ),
            )
            .friend(*friend)
            .amount(*currency, clamp(*limit)),
            Event::LimitNotSet { friend, reason } => NewEntry::new(
                EventKind::LimitNotSet,
                format!(
                    "your limit for {} could not be set: {reason}",
                    friend.short()
                ),
            )
            .friend(*friend),
            Event::PaymentCompleted { receipt } => NewEntry::new(
                EventKind::PaymentCompleted,
                format!(
                    "paid {} {} to {}",
                    receipt.amount(),
                    receipt.terms.currency,
                    receipt.seller.short()
                ),
            )
            .invoice(receipt.invoice_id())
            .friend(receipt.seller)
            .amount(receipt.terms.currency, -clamp(receipt.amount())),
            Event::PaymentCancelled { invoice_id } => NewEntry::new(
                EventKind::PaymentCancelled,
                "payment cancelled; nothing was paid".into(),
            )
            .invoice(*invoice_id),
            Event::InvoicePaid { invoice_id, amount } => NewEntry::new(
                EventKind::InvoicePaid,
                format!("your invoice was paid: {amount} on its way"),
            )
            .invoice(*invoice_id),
            Event::InvoiceCancelled { invoice_id } => NewEntry::new(
                EventKind::InvoiceCancelled,
                "your invoice expired unpaid".into(),
            )
            .invoice(*invoice_id),
            Event::ResetProposed { friend, changes } => NewEntry::new(
                EventKind::ResetProposed,
                format!(
                    "{} proposes to reset your channel ({} balance and {} limit changes)",
                    friend.short(),
                    changes.balances.len(),
                    changes.limits.len()
                ),
            )
            .friend(*friend),
            Event::ChannelReset { friend, epoch, .. } => NewEntry::new(
                EventKind::ChannelReset,
                format!("channel with {} reset (epoch {epoch})", friend.short()),
            )
            .friend(*friend),
            Event::Resynced { friend, counter } => NewEntry::new(
                EventKind::Resynced,
                format!(
                    "channel with {} recovered to move {counter}, the last you both signed",
                    friend.short()
                ),
            )
            .friend(*friend),
        }
    }
}

/// Amounts are at most 2^62 (see `bounds`), so they fit; clamp rather than wrap regardless.
pub(crate) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Write `entry` (and so queue it for the app: its events are the rows after the last one it
/// handled). `invoice_expires_ms`: when the entry's invoice
/// expires, 0 if unknown (the first column of the index by invoice, see [`query_sql`]).
pub(crate) fn append(
    tx: &Connection,
    at_ms: u64,
    entry: &NewEntry,
    invoice_expires_ms: Option<u64>,
) -> Result<u64, WalletError> {
    tx.prepare_cached(
        "INSERT INTO history (at_ms, kind, friend, invoice, currency, amount, detail,
                              invoice_expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            clamp(at_ms),
            entry.kind.as_str(),
            entry.friend.map(|f| f.as_bytes().to_vec()),
            entry.invoice.map(|i| i.0.to_vec()),
            entry.currency.as_ref().map(|c| c.as_str().to_string()),
            entry.amount,
            entry.detail,
            entry.invoice.map(|_| invoice_expires_ms.map_or(0, clamp)),
        ])
    })
    .map_err(WalletError::from_sqlite)?;
    let seq = tx.last_insert_rowid();
    Ok(u64::try_from(seq).unwrap_or_default())
}

/// The statement [`crate::wallet::Wallet::history`] runs: `?1` the `seq` to read below, `?2`
/// the friend, `?3` the invoice and `?5` its expiry (0 if unknown), `?4` the limit. An
/// invoice's rows are found through the index by invoice, which leads with the expiry: rows
/// written before the expiry was known, or before schema 7, have 0 there.
pub(crate) fn query_sql(friend: bool, invoice: bool) -> String {
    let mut sql = format!("SELECT {COLUMNS} FROM history WHERE seq < ?1");
    if friend && invoice {
        // An invoice has a few rows, a friend may have many: not through the friend's index.
        sql.push_str(" AND +friend = ?2");
    } else if friend {
        sql.push_str(" AND friend = ?2");
    }
    if invoice {
        sql.push_str(" AND invoice_expires_ms IN (?5, 0) AND invoice = ?3");
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?4");
    sql
}

pub(crate) const COLUMNS: &str = "seq, at_ms, kind, friend, invoice, currency, amount, detail";

/// Read a row selected with [`COLUMNS`].
pub(crate) fn read_row(r: &Row<'_>) -> rusqlite::Result<Result<HistoryEntry, String>> {
    let seq: i64 = r.get(0)?;
    let at_ms: i64 = r.get(1)?;
    let kind: String = r.get(2)?;
    let friend: Option<Vec<u8>> = r.get(3)?;
    let invoice: Option<Vec<u8>> = r.get(4)?;
    let currency: Option<String> = r.get(5)?;
    let amount: Option<i64> = r.get(6)?;
    let detail: String = r.get(7)?;
    let id32 = |v: Option<Vec<u8>>| -> Result<Option<[u8; 32]>, String> {
        v.map(|b| {
            <[u8; 32]>::try_from(b.as_slice()).map_err(|_| "an id is not 32 bytes".to_string())
        })
        .transpose()
    };
    Ok((|| {
        Ok(HistoryEntry {
            seq: u64::try_from(seq).map_err(|e| e.to_string())?,
            at_ms: u64::try_from(at_ms).map_err(|e| e.to_string())?,
            kind: EventKind::parse(&kind).ok_or_else(|| format!("unknown event kind {kind:?}"))?,
            friend: id32(friend)?.map(NodeId::from_bytes),
            invoice: id32(invoice)?.map(InvoiceId),
            currency: currency
                .map(Currency::new)
                .transpose()
                .map_err(|e| e.to_string())?,
            amount,
            detail,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    /// The plan SQLite picks for `sql` on an empty wallet database of this build's schema.
    fn plan(sql: &str) -> Result<String> {
        let mut conn = Connection::open_in_memory()?;
        crate::wallet::store::migrate(&mut conn)?;
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
        let rows = stmt
            .query_map(rusqlite::params_from_iter(unbound), |r| {
                r.get::<_, String>(3)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.join("; "))
    }

    /// Reading one payment's history goes through an index, also with a friend, instead of
    /// reading the whole history (a wallet keeps every row it ever wrote).
    #[test]
    fn an_invoice_history_is_read_through_its_index() -> Result<()> {
        for friend in [false, true] {
            let p = plan(&query_sql(friend, true))?;
            assert!(p.contains("USING INDEX history_by_invoice"), "{p}");
            assert!(!p.contains("SCAN"), "{p}");
        }
        let p = plan(&query_sql(true, false))?;
        assert!(p.contains("USING INDEX history_by_friend"), "{p}");
        Ok(())
    }
}
