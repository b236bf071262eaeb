//! A node: one person's side of every friendship, plus the payments it makes, forwards and
//! receives. Pure: inputs are method calls carrying the time and any randomness, outputs are
//! messages to send and events for the user.
//!
//! Roles on a route `[buyer, mediators.., seller]`:
//! - the **buyer** signs one request per route, commits once responses cover the invoice, and
//!   ends with a receipt or with every route cancelled;
//! - a **mediator** forwards a request if its quoted fee covers its rate and the next hop has
//!   room, else cancels it; afterwards it only passes answers back. It never cancels on a timer;
//! - the **seller** answers requests for an open invoice, collects the committed routes, and
//!   cancels everything once the invoice expires without a commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::amount::{Currency, Rate};
use super::bounds::{
    ARCHIVE_AFTER_EXPIRY_MS, MAX_AMOUNT, MAX_EARLY_ABANDONS_PER_INVOICE,
    MAX_HELD_COMMITS_PER_INVOICE, MAX_REMEMBERED_OUTCOMES, MAX_ROUTES_PER_PAYMENT,
};
use super::channel::{
    Channel, ChannelError, ChannelState, CoreKey, CreditLine, OfferOutcome, Op, OpError, Received,
    ResetCertificate, ResetError, ResetProposal, SharedPending, Signatures, StoredPending,
};
use super::identity::{Hash, Identity, NodeId, decode};
use super::message::{Message, Offer, Outcome, Resolution};
use super::payment::{
    Abandon, AbandonTerms, Accepted, Commit, HashedLock, Invoice, InvoiceId, InvoiceTerms, Paid,
    PaymentError, PlainLock, Receipt, Request, RequestId, RequestTerms, Response,
};
use super::tracked::Tracked;

/// Something the node wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `message` to `to` (through the relays). Sending twice is always harmless.
    Send {
        /// The recipient.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Tell the user.
    Event(Event),
}

/// What the user is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A friend changed how much it lets us owe it.
    LimitChanged {
        /// The friend.
        friend: NodeId,
        /// The currency.
        currency: Currency,
        /// The new limit.
        limit: u64,
    },
    /// A limit change we asked for could not be made (what is owed grew meanwhile).
    LimitNotSet {
        /// The friend.
        friend: NodeId,
        /// Why.
        reason: OpError,
    },
    /// A payment we made is done and paid in full.
    PaymentCompleted {
        /// The receipt, checked.
        receipt: Box<Receipt>,
    },
    /// A payment we made was cancelled on every route; nothing moved.
    PaymentCancelled {
        /// The invoice.
        invoice_id: InvoiceId,
    },
    /// An invoice of ours was committed; collecting is under way.
    InvoicePaid {
        /// The invoice.
        invoice_id: InvoiceId,
        /// What the committed routes deliver.
        amount: u64,
    },
    /// An invoice of ours expired without a commit and was cancelled.
    InvoiceCancelled {
        /// The invoice.
        invoice_id: InvoiceId,
    },
    /// A friend proposes a manual reset of our channel. Nothing changes unless we accept it
    /// ([`Node::accept_reset`]); `changes` says exactly what accepting would change for us.
    ResetProposed {
        /// The friend.
        friend: NodeId,
        /// How the proposed state differs from ours.
        changes: ResetChanges,
    },
    /// Our channel with a friend was reset by both of us to the state we agreed on.
    ChannelReset {
        /// The friend.
        friend: NodeId,
        /// The new epoch.
        epoch: u64,
        /// How the agreed state differs from what we held just before.
        changes: ResetChanges,
    },
    /// A channel recovered from a disagreement to the last state both friends signed.
    Resynced {
        /// The friend.
        friend: NodeId,
        /// The move both logs now end with.
        counter: u64,
    },
}

/// A change of the two limits in one currency, from our side: (ours, theirs) before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitChange {
    /// The currency.
    pub currency: Currency,
    /// Our limit for the friend and theirs for us, now.
    pub now: (u64, u64),
    /// The same after the reset.
    pub after: (u64, u64),
}

/// How a proposed reset state differs from ours, from our side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetChanges {
    /// Per currency: (currency, our balance now, our balance after the reset). Only currencies
    /// whose balance would change.
    pub balances: Vec<(Currency, i128, i128)>,
    /// Per currency whose limits would change.
    pub limits: Vec<LimitChange>,
    /// Pending requests we hold that the reset state does not.
    pub requests_dropped: Vec<RequestId>,
    /// Pending requests the reset state holds that we do not.
    pub requests_added: Vec<RequestId>,
}

impl ResetChanges {
    /// Whether accepting changes nothing.
    pub fn is_empty(&self) -> bool {
        self.balances.is_empty()
            && self.limits.is_empty()
            && self.requests_dropped.is_empty()
            && self.requests_added.is_empty()
    }

    fn between(ch: &Channel, now: &ChannelState, after: &ChannelState) -> ResetChanges {
        let side = ch.local_side();
        let mut out = ResetChanges::default();
        let currencies: BTreeSet<&Currency> = now.lines.keys().chain(after.lines.keys()).collect();
        for c in currencies {
            let view = |s: &ChannelState| {
                s.lines.get(c).map_or((0, (0, 0)), |l| {
                    (
                        l.balance_of(side),
                        (l.limit_of(side), l.limit_of(side.other())),
                    )
                })
            };
            let (b0, l0) = view(now);
            let (b1, l1) = view(after);
            if b0 != b1 {
                out.balances.push((*c, b0, b1));
            }
            if l0 != l1 {
                out.limits.push(LimitChange {
                    currency: *c,
                    now: l0,
                    after: l1,
                });
            }
        }
        out.requests_dropped = now
            .pending
            .keys()
            .filter(|k| !after.pending.contains_key(k))
            .copied()
            .collect();
        out.requests_added = after
            .pending
            .keys()
            .filter(|k| !now.pending.contains_key(k))
            .copied()
            .collect();
        out
    }
}

/// Why a user action was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Adding yourself as a friend.
    #[error("you can't be your own friend")]
    SelfFriend,
    /// Adding a friend twice.
    #[error("{0} is already your friend")]
    AlreadyFriend(NodeId),
    /// A friend we do not have.
    #[error("{0} is not your friend; add them first")]
    UnknownFriend(NodeId),
    /// A payment object was refused.
    #[error(transparent)]
    Payment(#[from] PaymentError),
    /// The invoice expired.
    #[error(
        "the invoice expired at {expires_at_ms} ms (now {now_ms} ms); ask the seller for a new one"
    )]
    InvoiceExpired {
        /// Expiry.
        expires_at_ms: u64,
        /// Now.
        now_ms: u64,
    },
    /// Paying the same invoice twice.
    #[error("this invoice is already being paid")]
    AlreadyPaying(InvoiceId),
    /// Routes added to a payment that is not under way (unknown, ended, committed or
    /// abandoned).
    #[error("no payment of this invoice is under way that could take more routes")]
    NotPaying(InvoiceId),
    /// The routes deliver less than the invoice asks.
    #[error("the routes deliver {delivered} but the invoice asks for {amount}")]
    RoutesShort {
        /// Sum of the routes' deliveries.
        delivered: u64,
        /// The invoice amount.
        amount: u64,
    },
    /// A route that does not start here or end at the seller.
    #[error("each route must start with you and end with the seller")]
    RouteEnds,
    /// Not enough room with the first friend on a route.
    #[error(
        "{friend} can take only {available} {currency} more from you right now, {needed} needed"
    )]
    InsufficientCapacity {
        /// The friend.
        friend: NodeId,
        /// The currency.
        currency: Currency,
        /// What the routes through this friend need.
        needed: u64,
        /// What can be sent now.
        available: u64,
    },
    /// A limit change that would go below what is owed.
    #[error(transparent)]
    Limit(OpError),
    /// Abandoning a payment we do not know.
    #[error("no payment of this invoice is under way")]
    UnknownPayment(InvoiceId),
    /// Abandoning a payment that is already paid (its receipt is in hand).
    #[error("the payment is already paid (its receipt is in hand) and can no longer be called off")]
    AlreadyCommitted(InvoiceId),
    /// Accepting a reset nobody proposed.
    #[error("{0} has not proposed a reset (or it was withdrawn)")]
    NoResetProposed(NodeId),
}

/// Why a received message was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A channel message from someone who is not a friend.
    #[error("{0} is not a friend; its channel messages are ignored")]
    NotAFriend(NodeId),
    /// The friend's move or offer was refused.
    #[error("refused a message from {friend}: {error}")]
    Channel {
        /// The friend.
        friend: NodeId,
        /// Why.
        error: ChannelError,
    },
    /// A commit for an invoice we never issued.
    #[error("commit for an invoice this node did not issue")]
    UnknownInvoice,
    /// A commit for an invoice that is cancelled or expired.
    #[error("commit arrived after the invoice closed (expired or cancelled)")]
    InvoiceClosed,
    /// An abandon not signed by the buyer the invoice is bound to.
    #[error("abandon is not signed by the buyer of this invoice")]
    NotTheBuyer,
    /// Too many abandons for an invoice no buyer has sent requests for yet.
    #[error("too many abandons for this invoice before any request arrived")]
    TooManyAbandons,
    /// Too many early commits held for one invoice: the buyer's payment goes the slower way
    /// (it commits again once the seller's answers reached it).
    #[error("too many early commits are waiting for this invoice's routes")]
    TooManyHeldCommits,
    /// An "accepted" message naming a route we did not send, or whose answer is not the
    /// seller's signature over our request.
    #[error("an accepted message with an answer that is not the seller's to our request")]
    BadAnswer,
    /// A commit whose lock does not open the requests' lock.
    #[error("commit reveals a lock that does not match the payment's requests")]
    WrongCommitLock,
    /// A "paid" message for a payment this node did not make.
    #[error("a paid message for a payment this node did not make")]
    NotOurPayment,
    /// A "paid" message for one of our payments from someone other than its seller.
    #[error("a paid message from someone who is not the seller of that payment")]
    NotTheSeller,
    /// A "paid" message whose secret does not open the seller's lock in the responses.
    #[error("a paid message whose secret does not open the seller's lock")]
    WrongPaidLock,
    /// A reset message was refused.
    #[error("refused a reset from {friend}: {error}")]
    Reset {
        /// The friend.
        friend: NodeId,
        /// Why.
        error: ResetError,
    },
    /// A commit naming routes that do not cover the invoice.
    #[error("commit names routes that deliver {delivered}, the invoice asks {amount}")]
    CommitShort {
        /// Delivered by the named, answered routes.
        delivered: u64,
        /// Asked.
        amount: u64,
    },
}

/// One route a buyer wants to pay over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan {
    /// Buyer (this node), mediators, seller.
    pub route: Vec<NodeId>,
    /// The fee quoted to each mediator, in route order.
    pub fees: Vec<u64>,
    /// What this route delivers to the seller.
    pub dest_payment: u64,
}

/// A payment of ours, route by route (see [`Node::payment_progress`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentProgress {
    /// Overall.
    pub status: PaymentStatus,
    /// What the seller must receive.
    pub amount: u64,
    /// A commit went out and the routes it names, not cancelled, still cover the invoice: the
    /// seller may take it, so routing the payment again makes no sense. (With an early commit,
    /// which goes with the requests, this holds from the start until a route it needs is
    /// cancelled.)
    pub committed: bool,
    /// Routes tried over the payment's life.
    pub routes: usize,
    /// What the routes still under way would deliver.
    pub open: u64,
    /// Of that, what the seller's answers that reached us hop by hop cover (with an early
    /// commit the seller's answers come with its "accepted" instead, so this stays 0).
    pub answered: u64,
    /// The routes that were cancelled (buyer, mediators, seller).
    pub failed: Vec<Vec<NodeId>>,
    /// Completed, and the credit has moved: no route the commit named is still pending with
    /// its first friend (the receipt can come before the collects, see [`Message::Paid`]).
    pub settled: bool,
}

/// Where a payment we make stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// Routes are still out.
    #[default]
    InFlight,
    /// Paid; receipt in hand.
    Completed,
    /// Every route cancelled; nothing moved.
    Cancelled,
}

/// Where an invoice of ours stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceStatus {
    /// Waiting for requests and a commit.
    Open,
    /// Committed; these routes are (being) collected.
    Paid(BTreeSet<RequestId>),
    /// Expired without a commit.
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum RouteStatus {
    Sent,
    Responded(Response),
    Cancelled,
    Collected,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RouteState {
    request: Request,
    status: RouteStatus,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Buying {
    /// The payment's row in a store (a place of the node's, see [`Node::take_place`]): not
    /// in its bytes, the store keys the row by it.
    #[serde(skip)]
    row: u64,
    invoice: Invoice,
    src_plain_lock: PlainLock,
    routes: BTreeMap<RequestId, RouteState>,
    committed: Option<Vec<RequestId>>,
    /// We gave up before committing: never commit after this.
    abandoned: bool,
    receipt: Option<Receipt>,
    status: PaymentStatus,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Selling {
    /// The invoice's row in a store, as for [`Buying::row`].
    #[serde(skip)]
    row: u64,
    invoice: Invoice,
    dest_plain_lock: PlainLock,
    src_hashed_lock: Option<HashedLock>,
    /// The buyer whose lock the invoice is bound to.
    buyer: Option<NodeId>,
    /// Abandons that arrived before their buyer's requests: (lock, buyer) to cancel on arrival.
    early_abandons: Vec<(HashedLock, NodeId)>,
    /// The buyer's secret, once committed.
    src_plain_lock: Option<PlainLock>,
    /// Answered requests.
    routes: BTreeMap<RequestId, SoldRoute>,
    status: InvoiceStatus,
    /// Early commits waiting for the routes they name (at most
    /// [`MAX_HELD_COMMITS_PER_INVOICE`]); emptied when the invoice is paid or cancelled.
    held: Vec<HeldCommit>,
}

/// An early commit the seller holds: who sent it (the answer goes there) and the commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HeldCommit {
    from: NodeId,
    commit: Commit,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SoldRoute {
    friend: NodeId,
    dest_payment: u64,
    response: Response,
}

/// A manual reset under way with one friend.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum PendingReset {
    /// We proposed. The channel keeps working meanwhile: if the friend accepts a proposal older
    /// than our latest moves, reconcile settles what the agreed state lacks.
    Ours,
    /// They proposed; waiting for our user.
    Theirs(ResetProposal),
}

/// A remembered outcome with its place in the eviction order.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredOutcome {
    request_id: RequestId,
    seq: u64,
    outcome: Outcome,
}

/// The node's small settings, stored whole when they change, which is seldom: the time in them
/// moves only once it is [`NOW_STORED_EVERY_MS`] past the stored one, and the places in
/// blocks of [`PLACE_BLOCK`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Settings {
    rate: Rate,
    /// The latest time an input carried, to within [`NOW_STORED_EVERY_MS`].
    now_ms: u64,
    resets: BTreeMap<NodeId, PendingReset>,
    /// No place at or above it has been given (`Node::take_place`): read back, the node gives
    /// places from here on. Named `next_outcome_seq` before payments and invoices took places
    /// too, and `next_place` when it was the very next one; the bytes are the same.
    next_place: u64,
}

/// How far the latest time seen may run ahead of the stored one before the settings are
/// written again for it alone. The stored time only keeps the node's clock from going back
/// across a restart; every decision takes the time of its own input.
const NOW_STORED_EVERY_MS: u64 = 60_000;

/// Places are reserved in the stored settings this many at a time, so that the settings row
/// is not rewritten by every step that gives one (a payment, an invoice, an outcome
/// remembered: about four steps per payment in a chain). A restart skips what was reserved
/// and not given: places stay unique, with gaps.
const PLACE_BLOCK: u64 = 1024;

/// Where a stored pending request belongs: its channel's friend and its id.
pub type PendingKey = (NodeId, RequestId);

/// Where a stored queued operation belongs: its channel's friend and its place in the queue
/// (rows are read back in this order).
pub type QueuedKey = (NodeId, u64);

/// What one step changed, ready for a store: for each changed channel (by friend), pending
/// request, queued operation, payment, invoice and remembered outcome (each by its key below),
/// its current encoding,
/// or `None` when it was deleted; and the settings as the store is to hold them, always (a
/// store writes them when their bytes differ from those it holds, which is seldom). Write them
/// in the same transaction as the step's outgoing messages and events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Channels (without their pending requests), by friend.
    pub channels: Vec<(NodeId, Option<Vec<u8>>)>,
    /// Pending requests of channels, by friend and request: written when frozen or answered,
    /// deleted once settled (see `channel::StoredPending`).
    pub pending: Vec<(PendingKey, Option<Vec<u8>>)>,
    /// Operations queued in channels, by friend and place: written when queued, deleted once
    /// sent in a move.
    pub queued: Vec<(QueuedKey, Option<Vec<u8>>)>,
    /// Payments we make, by row (a place the node gave each when it was made, never reused):
    /// those whose row changed.
    pub payments: Vec<(u64, Option<Vec<u8>>)>,
    /// Every payment the step reached, its row changed or not: what a payment's watcher sees
    /// can change without its row (whether it settled depends on its channels).
    pub payments_reached: Vec<InvoiceId>,
    /// Invoices we issued, by row (as payments).
    pub invoices: Vec<(u64, Option<Vec<u8>>)>,
    /// Remembered outcomes, by their place in the order they were remembered (`seq`, never
    /// reused): each is written once and they are forgotten oldest first, so a store keyed
    /// this way writes at the ends of its table instead of on a random page per row.
    pub outcomes: Vec<(u64, Option<Vec<u8>>)>,
    /// Finished payments and invoices the step forgot ([`ARCHIVE_AFTER_EXPIRY_MS`]): a store
    /// keeps them, read on demand, in the same transaction that deletes their rows above
    /// (which `payments` and `invoices` list as deleted).
    pub archived: Vec<Archived>,
    /// The settings.
    pub settings: Vec<u8>,
}

/// A finished payment or invoice the node no longer keeps in memory, for a store's archive:
/// the same bytes its row held, read back with [`archived_payment`] or [`archived_invoice`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    /// Ours as the buyer (a payment) or the seller (an invoice).
    pub role: ArchivedRole,
    /// The invoice.
    pub invoice: InvoiceId,
    /// When the invoice expired (`expires_at_ms`).
    pub expires_at_ms: u64,
    /// The record, as its row held it.
    pub data: Vec<u8>,
}

/// Which side of an archived record this node was on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchivedRole {
    /// A payment we made.
    Payment,
    /// An invoice we issued.
    Invoice,
}

/// A payment read back from the archive.
#[derive(Clone, Debug)]
pub struct ArchivedPayment {
    /// The invoice paid.
    pub invoice: Invoice,
    /// How it ended (never [`PaymentStatus::InFlight`]).
    pub status: PaymentStatus,
    /// The seller's receipt, if it completed.
    pub receipt: Option<Receipt>,
}

/// Decode an archived payment ([`ArchivedRole::Payment`]).
pub fn archived_payment(bytes: &[u8]) -> Result<ArchivedPayment, PartsError> {
    let b: Buying = decode_part("payment", bytes)?;
    Ok(ArchivedPayment {
        invoice: b.invoice,
        status: b.status,
        receipt: b.receipt,
    })
}

/// Decode an archived invoice ([`ArchivedRole::Invoice`]): the invoice and how it ended.
pub fn archived_invoice(bytes: &[u8]) -> Result<(Invoice, InvoiceStatus), PartsError> {
    let s = decode_invoice(bytes)?;
    Ok((s.invoice, s.status))
}

/// Everything a node stores, as encoded parts (see [`Node::parts`], [`Node::from_parts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// One per friend.
    pub channels: Vec<Vec<u8>>,
    /// One per pending request of a channel (each names its friend and request).
    pub pending: Vec<Vec<u8>>,
    /// One per operation queued in a channel (each names its friend and place).
    pub queued: Vec<Vec<u8>>,
    /// One per payment we make, with its row (the store's key, not in the bytes).
    pub payments: Vec<(u64, Vec<u8>)>,
    /// One per invoice we issued, with its row.
    pub invoices: Vec<(u64, Vec<u8>)>,
    /// One per remembered outcome.
    pub outcomes: Vec<Vec<u8>>,
    /// The settings.
    pub settings: Vec<u8>,
}

/// The version byte in front of every stored part. Version 3 stores a channel without its
/// pending requests and its queued operations, which are parts of their own; version 2 (the
/// queue inside the channel) and version 1 (the pending requests inside too) are still read.
/// Version 4 adds the early commits an invoice holds; an invoice of versions 1–3 is read with
/// none. Version 5: a channel's pending rows hold its signed state's requests only, and its
/// current state is the signed state with the last move applied (`channel::stored`); a
/// channel of versions 2–4 is read with its rows as they were. Other parts are the same in all
/// five.
pub const PART_VERSION: u8 = 5;

/// A pending request as stored: its channel's friend, its id, and where it stands.
#[derive(Serialize, Deserialize)]
struct PendingPart<'a> {
    friend: NodeId,
    request: RequestId,
    stored: std::borrow::Cow<'a, StoredPending>,
}

/// Why stored parts could not be loaded. Nothing is half-loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsError {
    /// A part does not decode.
    #[error("stored {part} is damaged and can't be read ({detail}); restore from a backup")]
    Corrupt {
        /// Which kind of part.
        part: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// A part written by a newer version.
    #[error(
        "stored {part} was written by a newer version (format {got}, this one reads {PART_VERSION}); update the app"
    )]
    NewerVersion {
        /// Which kind of part.
        part: &'static str,
        /// Its version byte.
        got: u8,
    },
    /// Channels that belong to another identity: the wrong key for this data.
    #[error("the stored channels belong to another identity: this is not this wallet's key")]
    WrongIdentity,
}

/// The place (`seq`) of a stored remembered outcome, which keys its row in a store (for the
/// store's migration from rows keyed by request).
pub fn outcome_place(bytes: &[u8]) -> Result<u64, PartsError> {
    decode_part::<StoredOutcome>("outcome", bytes).map(|o| o.seq)
}

fn encode_part<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding our own values cannot fail (see `canonical_bytes`).
    crate::protocol::identity::encode_after(&[&[PART_VERSION]], value).unwrap_or_default()
}

fn encode_channel(ch: &Channel) -> Vec<u8> {
    ch.encode_core(&[PART_VERSION])
}

fn encode_pending(friend: NodeId, request: RequestId, stored: &StoredPending) -> Vec<u8> {
    encode_part(&PendingPart {
        friend,
        request,
        stored: std::borrow::Cow::Borrowed(stored),
    })
}

/// An operation queued in a channel as stored: its channel's friend, its place, the operation.
#[derive(Serialize, Deserialize)]
struct QueuedPart<'a> {
    friend: NodeId,
    seq: u64,
    op: std::borrow::Cow<'a, Op>,
}

fn encode_queued(friend: NodeId, seq: u64, op: &Op) -> Vec<u8> {
    encode_part(&QueuedPart {
        friend,
        seq,
        op: std::borrow::Cow::Borrowed(op),
    })
}

/// A channel's queue as the store holds it: each operation with its place, in order, and the
/// next place to give (above every place given so far).
#[derive(Clone, Debug, Default)]
struct StoredQueue {
    rows: VecDeque<(u64, Op)>,
    next: u64,
}

impl StoredQueue {
    /// Bring the rows up to `queue`, and say what to write (`Some`) and delete (`None`). Only
    /// the front (sent in a move) and the back (newly queued) change in the usual case; from
    /// the first difference on, the rows are replaced. Afterwards the rows' operations, in
    /// order, are exactly `queue`.
    fn update<'q>(&mut self, queue: &'q VecDeque<Op>) -> Vec<(u64, Option<&'q Op>)> {
        let mut out = Vec::new();
        // Sent from the front: drop rows up to the first one that is still the queue's front.
        let start = queue
            .front()
            .and_then(|first| self.rows.iter().position(|(_, op)| op == first))
            .unwrap_or(self.rows.len());
        for (seq, _) in self.rows.drain(..start) {
            out.push((seq, None));
        }
        let same = self
            .rows
            .iter()
            .zip(queue.iter())
            .take_while(|((_, a), b)| a == *b)
            .count();
        for (seq, _) in self.rows.drain(same..) {
            out.push((seq, None));
        }
        for op in queue.iter().skip(same) {
            let seq = self.next;
            self.next += 1;
            self.rows.push_back((seq, op.clone()));
            out.push((seq, Some(op)));
        }
        out
    }
}

/// The body of a part, once its version byte is known to be readable.
fn part_body<'a>(part: &'static str, bytes: &'a [u8]) -> Result<(u8, &'a [u8]), PartsError> {
    match bytes.split_first() {
        Some((&v, body)) if (1..=PART_VERSION).contains(&v) => Ok((v, body)),
        Some((&got, _)) if got > PART_VERSION => Err(PartsError::NewerVersion { part, got }),
        _ => Err(PartsError::Corrupt {
            part,
            detail: "unknown format".into(),
        }),
    }
}

fn corrupt(part: &'static str) -> impl Fn(postcard::Error) -> PartsError {
    move |e| PartsError::Corrupt {
        part,
        detail: e.to_string(),
    }
}

/// An invoice as stored. Formats 1–3 end where format 4 adds the held commits, its last
/// field: the same bytes with an empty list (its length, 0) appended.
fn decode_invoice(bytes: &[u8]) -> Result<Selling, PartsError> {
    match part_body("invoice", bytes)? {
        (1..=3, body) => decode(&[body, &[0]].concat()).map_err(corrupt("invoice")),
        (_, body) => decode(body).map_err(corrupt("invoice")),
    }
}

/// Two stored rows hold the same record: a damaged store (a write keyed by the record itself
/// could not do that).
fn twice(part: &'static str) -> PartsError {
    PartsError::Corrupt {
        part,
        detail: "two rows hold the same one".into(),
    }
}

fn decode_part<T: serde::de::DeserializeOwned>(
    part: &'static str,
    bytes: &[u8],
) -> Result<T, PartsError> {
    let (_, body) = part_body(part, bytes)?;
    decode(body).map_err(corrupt(part))
}

/// One person's protocol state.
#[derive(Clone, Debug)]
pub struct Node {
    identity: Identity,
    rate: Rate,
    friends: Tracked<NodeId, Channel>,
    buying: Tracked<InvoiceId, Buying>,
    selling: Tracked<InvoiceId, Selling>,
    outcomes: Tracked<RequestId, StoredOutcome>,
    /// Outcome ids, oldest first (rebuilt from the stored sequence numbers on load).
    outcome_order: VecDeque<RequestId>,
    /// The next place to give ([`Node::take_place`]): a remembered outcome's place in the
    /// eviction order, and the row of each payment and invoice in a store.
    next_place: u64,
    /// Places below it may have been given; what the stored settings say (see
    /// [`PLACE_BLOCK`]).
    reserved_place: u64,
    /// The time the stored settings hold (see [`NOW_STORED_EVERY_MS`]).
    stored_now_ms: u64,
    /// The places (`seq`) of the outcomes forgotten since the last [`Node::take_changes`]:
    /// a store deletes their rows by place, which the removed entries no longer tell.
    forgotten_outcomes: Vec<u64>,
    resets: BTreeMap<NodeId, PendingReset>,
    /// The latest time any input carried; used where an action is not driven by one.
    now_ms: u64,
    out: Vec<Output>,
    dirty: BTreeSet<NodeId>,
    /// The pending requests as the store holds them (after the last [`Node::take_changes`]),
    /// per friend, so a step reports only the requests it changed.
    stored_pending: BTreeMap<NodeId, BTreeMap<RequestId, StoredPending>>,
    /// For each friend, the channel's last move (its header's hash) when `stored_pending` was
    /// last brought up to date: the pending requests change only with a new last move (a move
    /// made or received, an adopted tip, a reset), so a step that changed the channel otherwise
    /// (its queue, a token request) skips comparing every pending request.
    stored_pending_at: BTreeMap<NodeId, Hash>,
    /// Each channel's queue as the store holds it (after the last [`Node::take_changes`]).
    stored_queue: BTreeMap<NodeId, StoredQueue>,
    /// For each friend, the key of the channel row the store holds ([`Channel::core_key`]): a
    /// step that changed only the channel's queue (most of the steps that touch a channel
    /// under load: operations queued for the turn) writes no channel row.
    stored_core: BTreeMap<NodeId, CoreKey>,
    /// Each payment's and each invoice's row as the store holds it (after the last
    /// [`Node::take_changes`]): where to delete it, and a digest of its bytes, so that a step
    /// that reached a payment without changing it (a route's collect after the seller's "paid"
    /// already finished it, a commit tried again) writes no row. After a load the digests are
    /// unknown: the first write of each goes through.
    stored_payments: HashMap<InvoiceId, StoredRow>,
    stored_invoices: HashMap<InvoiceId, StoredRow>,
    /// Whether our payments send their commit with their requests ([`Node::set_early_commit`]).
    early_commit: bool,
    /// Records forgotten since the last [`Node::take_changes`], for the store's archive.
    archived: Vec<Archived>,
}

/// What identifies a stored row's bytes: 128 bits of BLAKE3 (a collision would skip a write).
type RowDigest = [u8; 16];

/// A payment's or an invoice's row as a store holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StoredRow {
    row: u64,
    /// Of the bytes stored; `None` when not known (after a load).
    digest: Option<RowDigest>,
}

/// A record stored in a row of its own, given when it is made, and known by its invoice.
trait InRow {
    fn row(&self) -> u64;
    fn set_row(&mut self, row: u64);
    fn invoice_id(&self) -> InvoiceId;
}

/// [`InRow`] for records with a `row` and an `invoice` field.
macro_rules! in_row {
    ($($record:ty),+) => {$(
        impl InRow for $record {
            fn row(&self) -> u64 {
                self.row
            }
            fn set_row(&mut self, row: u64) {
                self.row = row;
            }
            fn invoice_id(&self) -> InvoiceId {
                self.invoice.terms.id
            }
        }
    )+};
}

in_row!(Buying, Selling);

/// Payments or invoices read back from their rows: each record with its row (which `above`
/// hears of), and the store's rows as the node then knows them (digests unknown). Two rows
/// holding the same record are a damaged store.
type FromRows<V> = (BTreeMap<InvoiceId, V>, HashMap<InvoiceId, StoredRow>);

fn from_rows<V: InRow>(
    rows: &[(u64, Vec<u8>)],
    part: &'static str,
    decode: impl Fn(&[u8]) -> Result<V, PartsError>,
    mut above: impl FnMut(u64),
) -> Result<FromRows<V>, PartsError> {
    let mut records = BTreeMap::new();
    let mut stored = HashMap::new();
    for (row, bytes) in rows {
        let mut record = decode(bytes)?;
        record.set_row(*row);
        above(*row);
        let id = record.invoice_id();
        if records.insert(id, record).is_some() {
            return Err(twice(part));
        }
        stored.insert(
            id,
            StoredRow {
                row: *row,
                digest: None,
            },
        );
    }
    Ok((records, stored))
}

/// The rows of `changed` whose bytes differ from what the store holds by `stored`, encoded,
/// and the rows of those removed that the store holds, to delete; `stored` is brought up to
/// date.
fn encode_unless_stored<V: Serialize + InRow>(
    changed: Vec<(InvoiceId, Option<&V>)>,
    stored: &mut HashMap<InvoiceId, StoredRow>,
) -> Vec<(u64, Option<Vec<u8>>)> {
    changed
        .into_iter()
        .filter_map(|(key, value)| match value {
            Some(value) => {
                let bytes = encode_part(value);
                // A cryptographic hash, so that no row can be made to look unchanged while it
                // changed (and so go unwritten); the crypto floor counts it.
                crate::metrics::hashed(bytes.len());
                let mut digest = [0u8; 16];
                digest.copy_from_slice(&blake3::hash(&bytes).as_bytes()[..16]);
                let now = StoredRow {
                    row: value.row(),
                    digest: Some(digest),
                };
                (stored.insert(key, now) != Some(now)).then_some((now.row, Some(bytes)))
            }
            None => stored.remove(&key).map(|gone| (gone.row, None)),
        })
        .collect()
}

/// Take out of `records` each one that `ended` and whose invoice expired
/// [`ARCHIVE_AFTER_EXPIRY_MS`] before `now_ms`, into `out` as an [`Archived`] of `role` (the
/// bytes its row held).
fn archive_ended<V: Serialize>(
    records: &mut Tracked<InvoiceId, V>,
    role: ArchivedRole,
    now_ms: u64,
    invoice: impl Fn(&V) -> &Invoice,
    ended: impl Fn(&V) -> bool,
    out: &mut Vec<Archived>,
) {
    let due: Vec<InvoiceId> = records
        .iter()
        .filter(|(_, v)| {
            let expires = invoice(v).terms.expires_at_ms;
            expires.saturating_add(ARCHIVE_AFTER_EXPIRY_MS) <= now_ms && ended(v)
        })
        .map(|(id, _)| *id)
        .collect();
    for id in due {
        if let Some(v) = records.remove(&id) {
            out.push(Archived {
                role,
                invoice: id,
                expires_at_ms: invoice(&v).terms.expires_at_ms,
                data: encode_part(&v),
            });
        }
    }
}

impl Node {
    /// A node with no friends that charges `rate` for forwarding.
    pub fn new(identity: Identity, rate: Rate) -> Node {
        Node {
            identity,
            rate,
            friends: Tracked::default(),
            buying: Tracked::default(),
            selling: Tracked::default(),
            outcomes: Tracked::default(),
            outcome_order: VecDeque::new(),
            next_place: 0,
            reserved_place: 0,
            stored_now_ms: 0,
            forgotten_outcomes: Vec::new(),
            resets: BTreeMap::new(),
            now_ms: 0,
            out: Vec::new(),
            dirty: BTreeSet::new(),
            stored_pending: BTreeMap::new(),
            stored_pending_at: BTreeMap::new(),
            stored_queue: BTreeMap::new(),
            stored_core: BTreeMap::new(),
            stored_payments: HashMap::new(),
            stored_invoices: HashMap::new(),
            early_commit: true,
            archived: Vec::new(),
        }
    }

    /// Whether the payments this node starts from now on send their commit with their requests
    /// (the default: the seller holds it and collects as soon as the routes arrive, answering
    /// the buyer directly, `docs/protocol.md` §4), or only once the seller's answers came back
    /// hop by hop (how a payment goes with a seller that does not know early commits; kept for
    /// tests of that way).
    pub fn set_early_commit(&mut self, early: bool) {
        self.early_commit = early;
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.identity.id()
    }

    /// The forwarding rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Change the forwarding rate (applies to requests that arrive from now on).
    pub fn set_rate(&mut self, rate: Rate) {
        self.rate = rate;
    }

    /// The friends.
    pub fn friends(&self) -> impl Iterator<Item = &NodeId> {
        self.friends.keys()
    }

    /// The channel with `friend`.
    pub fn channel(&self, friend: &NodeId) -> Option<&Channel> {
        self.friends.get(friend)
    }

    /// Our balance with `friend` in `currency`: what they owe us (negative: we owe them), with
    /// the full credit line.
    pub fn balance(&self, friend: &NodeId, currency: &Currency) -> Option<(i128, CreditLine)> {
        let ch = self.friends.get(friend)?;
        let line = ch.state().lines.get(currency)?;
        Some((line.balance_of(ch.local_side()), line.clone()))
    }

    /// Where a payment we make stands, with its receipt once completed.
    pub fn payment(&self, invoice: &InvoiceId) -> Option<(PaymentStatus, Option<&Receipt>)> {
        let b = self.buying.get(invoice)?;
        Some((b.status, b.receipt.as_ref()))
    }

    /// The routes of a payment we made that were collected (what actually moved).
    pub fn collected_routes(&self, invoice: &InvoiceId) -> Vec<&RequestTerms> {
        self.buying.get(invoice).map_or_else(Vec::new, |b| {
            b.routes
                .values()
                .filter(|r| r.status == RouteStatus::Collected)
                .map(|r| &*r.request.terms)
                .collect()
        })
    }

    /// Each route of a payment we made: its request and how far it got (for reports).
    pub fn route_states(&self, invoice: &InvoiceId) -> Vec<(RequestId, &'static str)> {
        self.buying.get(invoice).map_or_else(Vec::new, |b| {
            b.routes
                .iter()
                .map(|(id, r)| {
                    let what = match r.status {
                        RouteStatus::Sent => "sent",
                        RouteStatus::Responded(_) => "responded",
                        RouteStatus::Cancelled => "cancelled",
                        RouteStatus::Collected => "collected",
                    };
                    (*id, what)
                })
                .collect()
        })
    }

    /// The settings as the store holds them (what the last [`Node::take_changes`] gave).
    fn settings(&self) -> Settings {
        Settings {
            rate: self.rate,
            now_ms: self.stored_now_ms,
            resets: self.resets.clone(),
            next_place: self.reserved_place,
        }
    }

    /// What changed since the last call (or since the node was built or loaded), encoded for a
    /// store. A durable step writes exactly these, with the step's outputs, in one transaction.
    pub fn take_changes(&mut self) -> Changes {
        let mut channels = Vec::new();
        let mut pending = Vec::new();
        let mut queued = Vec::new();
        let (stored_core, stored_queue) = (&mut self.stored_core, &mut self.stored_queue);
        let (stored_pending, stored_pending_at) =
            (&mut self.stored_pending, &mut self.stored_pending_at);
        self.friends.take_changed_mut(|friend, ch| {
            match ch {
                Some(ch) => {
                    let key = ch.core_key();
                    if stored_core.get(&friend) != Some(&key) {
                        channels.push((friend, Some(encode_channel(ch))));
                        stored_core.insert(friend, key);
                    }
                    let rows = stored_queue.entry(friend).or_default();
                    for (seq, op) in rows.update(ch.queue()) {
                        queued.push(((friend, seq), op.map(|op| encode_queued(friend, seq, op))));
                    }
                    let at = ch.last_hash();
                    if stored_pending_at.get(&friend) == Some(&at) {
                        return;
                    }
                    // No rows known for this friend (a first write, or after
                    // `mark_all_changed`): compare every request, not only those the moves
                    // since touched.
                    let since_stored = stored_pending.contains_key(&friend);
                    let stored = stored_pending.entry(friend).or_default();
                    for (id, write) in ch.update_pending_rows(stored, since_stored) {
                        let row = stored
                            .get(&id)
                            .filter(|_| write)
                            .map(|p| encode_pending(friend, id, p));
                        pending.push(((friend, id), row));
                    }
                    stored_pending_at.insert(friend, at);
                }
                None => {
                    channels.push((friend, None));
                    stored_core.remove(&friend);
                    for (seq, _) in stored_queue.remove(&friend).unwrap_or_default().rows {
                        queued.push(((friend, seq), None));
                    }
                    stored_pending_at.remove(&friend);
                    for id in stored_pending.remove(&friend).unwrap_or_default().keys() {
                        pending.push(((friend, *id), None));
                    }
                }
            }
        });
        if self.now_ms >= self.stored_now_ms.saturating_add(NOW_STORED_EVERY_MS) {
            self.stored_now_ms = self.now_ms;
        }
        let payments_reached = self.buying.take_changed();
        Changes {
            channels,
            pending,
            queued,
            payments_reached: payments_reached.iter().map(|(id, _)| *id).collect(),
            payments: encode_unless_stored(payments_reached, &mut self.stored_payments),
            invoices: encode_unless_stored(self.selling.take_changed(), &mut self.stored_invoices),
            outcomes: self.take_outcome_changes(),
            archived: std::mem::take(&mut self.archived),
            settings: encode_part(&self.settings()),
        }
    }

    /// The outcomes forgotten (by place) and then those remembered since the last call. One
    /// remembered and forgotten in between shows only as forgotten: its row is deleted, never
    /// written.
    fn take_outcome_changes(&mut self) -> Vec<(u64, Option<Vec<u8>>)> {
        let mut rows: Vec<(u64, Option<Vec<u8>>)> = std::mem::take(&mut self.forgotten_outcomes)
            .into_iter()
            .map(|seq| (seq, None))
            .collect();
        rows.extend(
            self.outcomes
                .take_changed()
                .into_iter()
                .filter_map(|(_, o)| o.map(|o| (o.seq, Some(encode_part(o))))),
        );
        rows
    }

    /// Mark everything as changed, so that the next [`Node::take_changes`] reports the whole
    /// node (for a first write into an empty store).
    pub fn mark_all_changed(&mut self) {
        self.friends.mark_all();
        self.stored_pending.clear();
        self.stored_pending_at.clear();
        self.stored_queue.clear();
        self.stored_core.clear();
        self.stored_payments.clear();
        self.stored_invoices.clear();
        self.buying.mark_all();
        self.selling.mark_all();
        self.outcomes.mark_all();
        self.forgotten_outcomes.clear();
    }

    /// Everything this node stores, encoded (for a first write, a backup, or a check).
    /// Queued operations are numbered from 0 in each channel, so two nodes with the same queues
    /// have the same parts whatever places their stores gave them.
    pub fn parts(&self) -> Parts {
        let mut pending = Vec::new();
        let mut queued = Vec::new();
        for (friend, ch) in self.friends.iter() {
            for (id, row) in ch.pending_rows() {
                pending.push(encode_pending(*friend, id, &row));
            }
            for (seq, op) in (0u64..).zip(ch.queue()) {
                queued.push(encode_queued(*friend, seq, op));
            }
        }
        Parts {
            channels: self.friends.values().map(encode_channel).collect(),
            pending,
            queued,
            payments: self
                .buying
                .values()
                .map(|b| (b.row, encode_part(b)))
                .collect(),
            invoices: self
                .selling
                .values()
                .map(|s| (s.row, encode_part(s)))
                .collect(),
            outcomes: self.outcomes.values().map(encode_part).collect(),
            settings: encode_part(&self.settings()),
        }
    }

    /// Rebuild a node from its stored parts and its identity. Refuses damaged parts, parts from
    /// a newer version, channels that belong to another identity, and pending requests of no
    /// stored channel, without building anything.
    pub fn from_parts(identity: Identity, parts: &Parts) -> Result<Node, PartsError> {
        let settings: Settings = decode_part("settings", &parts.settings)?;
        let mut rows: BTreeMap<NodeId, BTreeMap<RequestId, StoredPending>> = BTreeMap::new();
        for bytes in &parts.pending {
            let p: PendingPart<'static> = decode_part("pending request", bytes)?;
            rows.entry(p.friend)
                .or_default()
                .insert(p.request, p.stored.into_owned());
        }
        let mut queues: BTreeMap<NodeId, BTreeMap<u64, Op>> = BTreeMap::new();
        for bytes in &parts.queued {
            let q: QueuedPart<'static> = decode_part("queued operation", bytes)?;
            queues
                .entry(q.friend)
                .or_default()
                .insert(q.seq, q.op.into_owned());
        }
        let me = identity.id();
        let mut friends = BTreeMap::new();
        let mut stored_pending = BTreeMap::new();
        let mut stored_queue = BTreeMap::new();
        for bytes in &parts.channels {
            let ch = match part_body("channel", bytes)? {
                // Version 1: the whole channel, its pending requests inside.
                (1, body) => decode::<Channel>(body).map_err(corrupt("channel"))?,
                (version, body) => {
                    let core = Channel::decode_core(version, body).map_err(corrupt("channel"))?;
                    let mine = rows.remove(&core.remote()).unwrap_or_default();
                    let queue = queues.remove(&core.remote()).unwrap_or_default();
                    let ch = if version >= 5 {
                        core.join_signed(mine.clone(), queue.values().cloned())
                            .map_err(|detail| PartsError::Corrupt {
                                part: "channel",
                                detail,
                            })?
                    } else {
                        core.join(mine.clone(), queue.values().cloned())
                    };
                    stored_pending.insert(ch.remote(), mine);
                    // A queue read from inside a format 2 channel has no rows yet: the next
                    // step that changes the channel writes them (its core as format 3).
                    let next = queue.keys().next_back().map_or(0, |s| s + 1);
                    stored_queue.insert(
                        ch.remote(),
                        StoredQueue {
                            rows: queue.into_iter().collect(),
                            next,
                        },
                    );
                    ch
                }
            };
            let parties = ch.parties();
            if (parties.first != me && parties.second != me) || ch.remote() == me {
                return Err(PartsError::WrongIdentity);
            }
            friends.insert(ch.remote(), ch);
        }
        if !rows.is_empty() {
            return Err(PartsError::Corrupt {
                part: "pending request",
                detail: "it belongs to no stored channel".into(),
            });
        }
        if !queues.is_empty() {
            return Err(PartsError::Corrupt {
                part: "queued operation",
                detail: "it belongs to no stored channel".into(),
            });
        }
        // The next place is above every one the store holds (a wallet migrated from rows keyed
        // by invoice has rows numbered without the settings knowing).
        let mut next_place = settings.next_place;
        let mut above = |place: u64| next_place = next_place.max(place.saturating_add(1));
        let (buying, stored_payments) = from_rows(
            &parts.payments,
            "payment",
            |bytes| decode_part::<Buying>("payment", bytes),
            &mut above,
        )?;
        let (selling, stored_invoices) =
            from_rows(&parts.invoices, "invoice", decode_invoice, &mut above)?;
        let mut outcomes = BTreeMap::new();
        for bytes in &parts.outcomes {
            let o: StoredOutcome = decode_part("outcome", bytes)?;
            above(o.seq);
            if outcomes.insert(o.request_id, o).is_some() {
                return Err(twice("outcome"));
            }
        }
        let mut order: Vec<(u64, RequestId)> =
            outcomes.values().map(|o| (o.seq, o.request_id)).collect();
        order.sort();
        let mut node = Node::new(identity, settings.rate);
        node.friends = Tracked::from_map(friends);
        node.stored_pending = stored_pending;
        node.stored_queue = stored_queue;
        node.buying = Tracked::from_map(buying);
        node.selling = Tracked::from_map(selling);
        node.outcomes = Tracked::from_map(outcomes);
        node.outcome_order = order.into_iter().map(|(_, id)| id).collect();
        node.next_place = next_place;
        node.reserved_place = next_place;
        node.stored_now_ms = settings.now_ms;
        node.stored_payments = stored_payments;
        node.stored_invoices = stored_invoices;
        node.resets = settings.resets;
        node.now_ms = settings.now_ms;
        Ok(node)
    }

    /// Operations waiting to be sent, over all channels.
    pub fn queued_ops(&self) -> usize {
        self.friends.values().map(|ch| ch.queue().len()).sum()
    }

    /// When the invoice of a payment we make, or of an invoice of ours, expires (the seller's
    /// `expires_at_ms`); `None` for an invoice this node does not hold.
    pub fn invoice_expiry(&self, invoice: &InvoiceId) -> Option<u64> {
        self.buying
            .get(invoice)
            .map(|b| &b.invoice)
            .or_else(|| self.selling.get(invoice).map(|s| &s.invoice))
            .map(|i| i.terms.expires_at_ms)
    }

    /// Where an invoice of ours stands.
    pub fn invoice_status(&self, invoice: &InvoiceId) -> Option<&InvoiceStatus> {
        self.selling.get(invoice).map(|s| &s.status)
    }

    /// An invoice we issued (open, paid or cancelled), while we keep it.
    pub fn issued_invoice(&self, invoice: &InvoiceId) -> Option<&Invoice> {
        self.selling.get(invoice).map(|s| &s.invoice)
    }

    /// Add a friend. Both friends must add each other; no message is needed until one of them
    /// sets a limit.
    pub fn add_friend(&mut self, friend: NodeId) -> Result<(), NodeError> {
        if friend == self.id() {
            return Err(NodeError::SelfFriend);
        }
        if self.friends.contains_key(&friend) {
            return Err(NodeError::AlreadyFriend(friend));
        }
        self.friends.insert(friend, Channel::new(self.id(), friend));
        Ok(())
    }

    /// Set how much `friend` may owe us in `currency` (`md{me,friend}`). The friend sees it.
    pub fn set_limit(
        &mut self,
        friend: NodeId,
        currency: Currency,
        limit: u64,
    ) -> Result<Vec<Output>, NodeError> {
        let ch = self
            .friends
            .get_mut(&friend)
            .ok_or(NodeError::UnknownFriend(friend))?;
        let op = Op::SetLimit { currency, limit };
        // Refuse now what would be refused when sent, so the user learns it at once.
        let mut probe = ch.state().clone();
        probe
            .apply(&op, ch.local_side(), ch.parties(), Signatures::Trusted)
            .map_err(NodeError::Limit)?;
        ch.enqueue(op);
        self.dirty.insert(friend);
        Ok(self.finish())
    }

    /// Issue an invoice. `entropy` is 32 random bytes from the caller; the invoice id and the
    /// seller's secret are derived from it.
    pub fn create_invoice(
        &mut self,
        currency: Currency,
        amount: u64,
        expires_at_ms: u64,
        memo: String,
        entropy: [u8; 32],
    ) -> Result<Invoice, NodeError> {
        let terms = InvoiceTerms {
            id: InvoiceId(derive(&entropy, "invoice id")),
            seller: self.id(),
            currency,
            amount,
            expires_at_ms,
            memo,
        };
        let invoice = Invoice::sign(&self.identity, terms)?;
        let row = self.take_place();
        self.selling.insert(
            invoice.terms.id,
            Selling {
                row,
                invoice: invoice.clone(),
                dest_plain_lock: PlainLock(derive(&entropy, "seller lock")),
                src_hashed_lock: None,
                buyer: None,
                early_abandons: Vec::new(),
                src_plain_lock: None,
                routes: BTreeMap::new(),
                status: InvoiceStatus::Open,
                held: Vec::new(),
            },
        );
        Ok(invoice)
    }

    /// Pay `invoice` over `routes`. `entropy` is 32 random bytes from the caller.
    pub fn pay(
        &mut self,
        now_ms: u64,
        invoice: &Invoice,
        routes: Vec<RoutePlan>,
        entropy: [u8; 32],
    ) -> Result<Vec<Output>, NodeError> {
        invoice.verify()?;
        self.pay_checked(now_ms, invoice, routes, entropy)
    }

    /// [`Node::pay`] for an invoice whose bounds and signature the caller has checked (a
    /// wallet checks a payment request's invoice with the request's own signature, in one
    /// batch). Only for this crate: an invoice not checked here must not reach it.
    pub(crate) fn pay_checked(
        &mut self,
        now_ms: u64,
        invoice: &Invoice,
        routes: Vec<RoutePlan>,
        entropy: [u8; 32],
    ) -> Result<Vec<Output>, NodeError> {
        self.now_ms = self.now_ms.max(now_ms);
        let terms = &invoice.terms;
        if now_ms >= terms.expires_at_ms {
            return Err(NodeError::InvoiceExpired {
                expires_at_ms: terms.expires_at_ms,
                now_ms,
            });
        }
        if self.buying.contains_key(&terms.id) {
            return Err(NodeError::AlreadyPaying(terms.id));
        }
        if routes.is_empty() || routes.len() > MAX_ROUTES_PER_PAYMENT {
            return Err(PaymentError::TooManyRoutes(routes.len()).into());
        }
        let src_plain_lock = PlainLock(derive(&entropy, "buyer lock"));
        let (requests, delivered) =
            self.sign_routes(terms, src_plain_lock.hashed(), routes, entropy)?;
        if delivered < terms.amount {
            return Err(NodeError::RoutesShort {
                delivered,
                amount: terms.amount,
            });
        }
        let mut states = BTreeMap::new();
        for (friend, request) in requests {
            states.insert(
                request.terms.request_id,
                RouteState {
                    request: request.clone(),
                    status: RouteStatus::Sent,
                },
            );
            if let Some(ch) = self.friends.get_mut(&friend) {
                ch.enqueue(Op::Request(request));
            }
            self.dirty.insert(friend);
        }
        let committed = self
            .early_commit
            .then(|| states.keys().copied().collect::<Vec<_>>());
        let row = self.take_place();
        self.buying.insert(
            terms.id,
            Buying {
                row,
                invoice: invoice.clone(),
                src_plain_lock,
                routes: states,
                committed,
                abandoned: false,
                receipt: None,
                status: PaymentStatus::InFlight,
            },
        );
        self.resend_commit(terms.id);
        Ok(self.finish())
    }

    /// Add `routes` to our payment of `invoice_id` that is not committed: still under way (some
    /// of its routes were cancelled and the rest do not cover the invoice), or cancelled with
    /// every route (it is taken up again: nothing moved, and the seller keeps the invoice open
    /// for this lock until it expires). The new requests carry the same lock, so the seller
    /// takes them like the first ones. At most [`MAX_ROUTES_PER_PAYMENT`] routes over the
    /// payment's life. `entropy`: 32 random bytes.
    pub fn add_routes(
        &mut self,
        invoice_id: InvoiceId,
        routes: Vec<RoutePlan>,
        entropy: [u8; 32],
    ) -> Result<Vec<Output>, NodeError> {
        let b = self
            .buying
            .get(&invoice_id)
            .ok_or(NodeError::NotPaying(invoice_id))?;
        // A payment whose routes were all cancelled may be taken up again: nothing moved, the
        // seller still holds the invoice open for this lock until it expires.
        let reopen = b.status == PaymentStatus::Cancelled && b.receipt.is_none();
        // A commit whose routes can still cover the invoice stands: the seller may take it.
        if !(b.status == PaymentStatus::InFlight || reopen)
            || b.receipt.is_some()
            || b.abandoned
            || commit_covers(b)
        {
            return Err(NodeError::NotPaying(invoice_id));
        }
        let total = b.routes.len().saturating_add(routes.len());
        if routes.is_empty() || total > MAX_ROUTES_PER_PAYMENT {
            return Err(PaymentError::TooManyRoutes(total).into());
        }
        let terms = b.invoice.terms.clone();
        let lock = b.src_plain_lock.hashed();
        let (requests, _) = self.sign_routes(&terms, lock, routes, entropy)?;
        if let Some(b) = self.buying.get_mut(&invoice_id) {
            b.status = PaymentStatus::InFlight;
        }
        for (friend, request) in requests {
            if let Some(b) = self.buying.get_mut(&invoice_id) {
                b.routes.insert(
                    request.terms.request_id,
                    RouteState {
                        request: request.clone(),
                        status: RouteStatus::Sent,
                    },
                );
            }
            self.enqueue(friend, Op::Request(request));
        }
        // An early commit names the routes still under way, the new ones with them: the old
        // commit can no longer be taken (its routes no longer cover the invoice).
        if let Some(b) = self.buying.get_mut(&invoice_id)
            && b.committed.is_some()
        {
            b.committed = Some(
                b.routes
                    .iter()
                    .filter(|(_, r)| !matches!(r.status, RouteStatus::Cancelled))
                    .map(|(id, _)| *id)
                    .collect(),
            );
            self.resend_commit(invoice_id);
        }
        Ok(self.finish())
    }

    /// Where our payment of `invoice` stands, route by route.
    pub fn payment_progress(&self, invoice: &InvoiceId) -> Option<PaymentProgress> {
        let b = self.buying.get(invoice)?;
        let mut p = PaymentProgress {
            status: b.status,
            amount: b.invoice.terms.amount,
            committed: commit_covers(b),
            routes: b.routes.len(),
            ..PaymentProgress::default()
        };
        for r in b.routes.values() {
            let dest = r.request.terms.dest_payment;
            match r.status {
                RouteStatus::Sent => p.open = p.open.saturating_add(dest),
                RouteStatus::Responded(_) => {
                    p.open = p.open.saturating_add(dest);
                    p.answered = p.answered.saturating_add(dest);
                }
                RouteStatus::Cancelled => p.failed.push(r.request.terms.route.clone()),
                RouteStatus::Collected => {}
            }
        }
        p.settled = b.status == PaymentStatus::Completed
            && b.committed.iter().flatten().all(|id| {
                let first = b.routes.get(id).and_then(|r| r.request.terms.route.get(1));
                !first
                    .and_then(|f| self.friends.get(f))
                    .is_some_and(|ch| ch.state().pending.contains_key(id))
            });
        Some(p)
    }

    /// Sign one request per route for the invoice `terms` under `lock` (request ids from
    /// `entropy`), check the routes' ends, that each first hop is a friend with room for all
    /// that goes through it; returns each request with its first hop, and what they deliver.
    fn sign_routes(
        &self,
        terms: &crate::protocol::payment::InvoiceTerms,
        lock: HashedLock,
        routes: Vec<RoutePlan>,
        entropy: [u8; 32],
    ) -> Result<(Vec<(NodeId, Request)>, u64), NodeError> {
        let mut delivered: u64 = 0;
        let mut needed: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut requests = Vec::new();
        for (i, plan) in routes.into_iter().enumerate() {
            if plan.route.first() != Some(&self.id()) || plan.route.last() != Some(&terms.seller) {
                return Err(NodeError::RouteEnds);
            }
            let mut seed = entropy.to_vec();
            seed.extend_from_slice(&(i as u64).to_le_bytes());
            let request_terms = RequestTerms {
                request_id: RequestId(Hash::of_bytes("offst request id v1", &seed).0),
                invoice_id: terms.id,
                currency: terms.currency,
                src_hashed_lock: lock,
                route: plan.route,
                fees: plan.fees,
                dest_payment: plan.dest_payment,
                total_dest_payment: terms.amount,
            };
            let request = Request::sign(&self.identity, request_terms)?;
            let first_hop = request
                .terms
                .route
                .get(1)
                .copied()
                .ok_or(NodeError::RouteEnds)?;
            if !self.friends.contains_key(&first_hop) {
                return Err(NodeError::UnknownFriend(first_hop));
            }
            let amount = request
                .terms
                .hop_amount(0)
                .ok_or(PaymentError::AmountOverflow)?;
            let entry = needed.entry(first_hop).or_default();
            *entry = entry
                .checked_add(amount)
                .filter(|a| *a <= MAX_AMOUNT)
                .ok_or(PaymentError::AmountOverflow)?;
            delivered = delivered
                .checked_add(plan.dest_payment)
                .ok_or(PaymentError::AmountOverflow)?;
            requests.push((first_hop, request));
        }
        self.check_room(&needed, &terms.currency)?;
        Ok((requests, delivered))
    }

    /// Refuse if the first hops lack room for `needed`.
    fn check_room(
        &self,
        needed: &BTreeMap<NodeId, u64>,
        currency: &Currency,
    ) -> Result<(), NodeError> {
        for (friend, need) in needed {
            let ch = self
                .friends
                .get(friend)
                .ok_or(NodeError::UnknownFriend(*friend))?;
            let available = ch
                .state()
                .lines
                .get(currency)
                .map_or(0, |l| l.can_send(ch.local_side()));
            if *need > available {
                return Err(NodeError::InsufficientCapacity {
                    friend: *friend,
                    currency: *currency,
                    needed: *need,
                    available,
                });
            }
        }
        Ok(())
    }

    /// Let time pass: invoices past their expiry with no commit are cancelled.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        let expired: Vec<InvoiceId> = self
            .selling
            .iter()
            .filter(|(_, s)| {
                s.status == InvoiceStatus::Open && now_ms >= s.invoice.terms.expires_at_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(s) = self.selling.get_mut(&id) else {
                continue;
            };
            s.status = InvoiceStatus::Cancelled;
            s.held.clear();
            let routes: Vec<(RequestId, NodeId)> =
                s.routes.iter().map(|(r, sold)| (*r, sold.friend)).collect();
            for (request_id, friend) in routes {
                self.send_cancel(friend, request_id);
            }
            self.out
                .push(Output::Event(Event::InvoiceCancelled { invoice_id: id }));
        }
        self.archive_finished(now_ms);
        self.finish()
    }

    /// Forget the payments and invoices that ended more than [`ARCHIVE_AFTER_EXPIRY_MS`] past
    /// their invoice's expiry, handing each to the store's archive in the same step.
    ///
    /// A payment has ended when it is not in flight and every route of it was collected or
    /// cancelled: nothing in any channel refers to it any more. An invoice has ended when it
    /// is paid or cancelled and holds no early commit. Either way, after the expiry no
    /// message can change it: the buyer refuses to pay an expired invoice, and the seller
    /// cancels a request for an invoice it does not hold, as for one past its expiry.
    fn archive_finished(&mut self, now_ms: u64) {
        archive_ended(
            &mut self.buying,
            ArchivedRole::Payment,
            now_ms,
            |b| &b.invoice,
            |b| {
                b.status != PaymentStatus::InFlight
                    && b.routes.values().all(|r| {
                        matches!(r.status, RouteStatus::Collected | RouteStatus::Cancelled)
                    })
            },
            &mut self.archived,
        );
        archive_ended(
            &mut self.selling,
            ArchivedRole::Invoice,
            now_ms,
            |s| &s.invoice,
            |s| s.status != InvoiceStatus::Open && s.held.is_empty(),
            &mut self.archived,
        );
    }

    /// Resend whatever may not have arrived: our last move in each channel, token requests, and
    /// commits of unfinished payments. Call after reconnecting; receivers drop duplicates.
    pub fn resend(&mut self) -> Vec<Output> {
        for (friend, ch) in self.friends.iter() {
            if let Some(m) = ch.last_own_move() {
                self.out.push(Output::Send {
                    to: *friend,
                    message: Message::Move(m.clone()),
                });
            } else if !ch.queue().is_empty() {
                self.out.push(Output::Send {
                    to: *friend,
                    message: Message::RequestToken {
                        epoch: ch.epoch(),
                        counter: ch.counter(),
                    },
                });
            }
        }
        self.resend_commits();
        self.finish()
    }

    /// Call after restoring this node from an older copy: every channel is resynced with its
    /// friend before anything in it is acted on.
    pub fn restored(&mut self) -> Vec<Output> {
        let friends: Vec<NodeId> = self.friends.keys().copied().collect();
        for friend in friends {
            if let Some(ch) = self.friends.get_mut(&friend) {
                ch.set_unconfirmed();
            }
            self.send_offer(friend, Vec::new(), true);
        }
        self.finish()
    }

    /// Give up a payment that has no receipt yet: ask the seller to cancel its routes now
    /// instead of at the invoice's expiry, and commit nothing more. Routes the seller has not
    /// seen yet are cancelled when they reach it. The seller decides: if it took our commit
    /// first (an early commit goes with the requests), the payment completes all the same.
    pub fn abandon_payment(&mut self, invoice_id: InvoiceId) -> Result<Vec<Output>, NodeError> {
        let b = self
            .buying
            .get_mut(&invoice_id)
            .ok_or(NodeError::UnknownPayment(invoice_id))?;
        // With a receipt the payment is done. Before it, even once a commit went out, the
        // abandon asks the seller, who decides: a commit it accepted first stands.
        if b.receipt.is_some() {
            return Err(NodeError::AlreadyCommitted(invoice_id));
        }
        if b.status == PaymentStatus::InFlight {
            b.abandoned = true;
            let abandon = Abandon::sign(
                &self.identity,
                AbandonTerms {
                    invoice_id,
                    src_hashed_lock: b.src_plain_lock.hashed(),
                },
            );
            self.out.push(Output::Send {
                to: b.invoice.terms.seller,
                message: Message::Abandon(abandon),
            });
        }
        Ok(self.finish())
    }

    fn on_abandon(&mut self, abandon: Abandon) -> Result<(), ProtocolError> {
        let terms = &abandon.terms;
        let s = self
            .selling
            .get_mut(&terms.invoice_id)
            .ok_or(ProtocolError::UnknownInvoice)?;
        abandon.verify().map_err(|_| ProtocolError::NotTheBuyer)?;
        let claim = (terms.src_hashed_lock, abandon.buyer);
        // The buyer's early commits for that lock will never be taken now.
        if matches!(s.status, InvoiceStatus::Open) {
            s.held.retain(|h| {
                (h.commit.src_plain_lock.hashed(), h.from) != (terms.src_hashed_lock, abandon.buyer)
            });
        }
        match (s.buyer, s.src_hashed_lock) {
            (Some(buyer), Some(lock)) if (lock, buyer) == claim => {}
            (Some(_), _) => return Err(ProtocolError::NotTheBuyer),
            (None, _) => {
                // No request from that buyer yet: cancel its requests when they arrive.
                if !s.early_abandons.contains(&claim) {
                    if s.early_abandons.len() >= MAX_EARLY_ABANDONS_PER_INVOICE {
                        return Err(ProtocolError::TooManyAbandons);
                    }
                    s.early_abandons.push(claim);
                }
                return Ok(());
            }
        }
        match s.status {
            InvoiceStatus::Cancelled => return Ok(()),
            InvoiceStatus::Paid(_) => return Err(ProtocolError::InvoiceClosed),
            InvoiceStatus::Open => {}
        }
        s.status = InvoiceStatus::Cancelled;
        s.held.clear();
        let routes: Vec<(RequestId, NodeId)> =
            s.routes.iter().map(|(r, sold)| (*r, sold.friend)).collect();
        for (request_id, friend) in routes {
            self.send_cancel(friend, request_id);
        }
        self.out.push(Output::Event(Event::InvoiceCancelled {
            invoice_id: terms.invoice_id,
        }));
        Ok(())
    }

    /// Propose to `friend` that our channel restart, in a new epoch, from our current view of
    /// its state. The last resort when our logs can no longer be reconciled: the friend's user
    /// sees exactly what would change and must accept.
    pub fn propose_reset(&mut self, friend: NodeId) -> Result<Vec<Output>, NodeError> {
        let ch = self
            .friends
            .get(&friend)
            .ok_or(NodeError::UnknownFriend(friend))?;
        let proposal = ResetProposal::sign(&self.identity, ch.reset_terms());
        self.out.push(Output::Send {
            to: friend,
            message: Message::ResetProposal(Box::new(proposal.clone())),
        });
        self.resets.insert(friend, PendingReset::Ours);
        Ok(self.finish())
    }

    /// The reset `friend` proposed, if one waits for our answer, with what it would change.
    pub fn reset_proposed_by(&self, friend: &NodeId) -> Option<ResetChanges> {
        let (Some(PendingReset::Theirs(p)), Some(ch)) =
            (self.resets.get(friend), self.friends.get(friend))
        else {
            return None;
        };
        Some(ResetChanges::between(ch, ch.state(), &p.terms.state))
    }

    /// Accept the reset `friend` proposed: both logs restart from its state.
    pub fn accept_reset(&mut self, friend: NodeId) -> Result<Vec<Output>, NodeError> {
        let Some(PendingReset::Theirs(proposal)) = self.resets.get(&friend).cloned() else {
            return Err(NodeError::NoResetProposed(friend));
        };
        let ch = self
            .friends
            .get(&friend)
            .ok_or(NodeError::UnknownFriend(friend))?;
        let cert = proposal.accept(&self.identity, ch.parties());
        self.start_epoch(friend, cert.clone())
            .map_err(|_| NodeError::NoResetProposed(friend))?;
        self.out.push(Output::Send {
            to: friend,
            message: Message::ResetAccept(Box::new(cert)),
        });
        Ok(self.finish())
    }

    /// Decline (forget) the reset `friend` proposed.
    pub fn decline_reset(&mut self, friend: NodeId) -> Result<(), NodeError> {
        match self.resets.get(&friend) {
            Some(PendingReset::Theirs(_)) => {
                self.resets.remove(&friend);
                Ok(())
            }
            _ => Err(NodeError::NoResetProposed(friend)),
        }
    }

    fn on_reset_proposal(
        &mut self,
        from: NodeId,
        proposal: ResetProposal,
    ) -> Result<(), ProtocolError> {
        let err = |error| ProtocolError::Reset {
            friend: from,
            error,
        };
        let ch = self
            .friends
            .get(&from)
            .ok_or(ProtocolError::NotAFriend(from))?;
        if proposal.proposer != from {
            return Err(err(ResetError::BadSignature(from)));
        }
        proposal.verify().map_err(err)?;
        if proposal.terms.channel != ch.id() {
            return Err(err(ResetError::WrongChannel));
        }
        let expected = ch.epoch() + 1;
        if proposal.terms.epoch != expected {
            return Err(err(ResetError::WrongEpoch {
                got: proposal.terms.epoch,
                expected,
            }));
        }
        // Both proposed at once: the proposal of the friend with the smaller id stands.
        if matches!(self.resets.get(&from), Some(PendingReset::Ours)) && self.id() < from {
            return Ok(());
        }
        let changes = ResetChanges::between(ch, ch.state(), &proposal.terms.state);
        self.resets.insert(from, PendingReset::Theirs(proposal));
        self.out.push(Output::Event(Event::ResetProposed {
            friend: from,
            changes,
        }));
        Ok(())
    }

    /// The friend accepted a proposal of ours. Any certificate for the next epoch that both
    /// signed stands, even if we proposed again since: we agreed to its terms when we signed.
    fn on_reset_accept(
        &mut self,
        from: NodeId,
        cert: ResetCertificate,
    ) -> Result<(), ProtocolError> {
        let err = |error| ProtocolError::Reset {
            friend: from,
            error,
        };
        self.start_epoch(from, cert).map_err(err)
    }

    /// Start the epoch `cert` opens with `friend`.
    fn start_epoch(&mut self, friend: NodeId, cert: ResetCertificate) -> Result<(), ResetError> {
        let ch = self
            .friends
            .get_mut(&friend)
            .ok_or(ResetError::NothingProposed)?;
        let before = ch.state().clone();
        ch.apply_reset(cert)?;
        self.epoch_started(friend, &before);
        Ok(())
    }

    /// A new epoch started with `friend` (we accepted, they accepted, or we adopted it in a
    /// resync): requests we sent that its agreed starting state does not hold are over in this
    /// channel, with nothing moved, unless we already know how they ended; then reconcile what
    /// it holds.
    fn epoch_started(&mut self, friend: NodeId, before: &ChannelState) {
        let Some(ch) = self.friends.get(&friend) else {
            return;
        };
        let epoch = ch.epoch();
        let local = ch.local_side();
        let genesis = ch
            .tip()
            .reset
            .as_ref()
            .map_or_else(ChannelState::default, |c| c.terms.state.clone());
        let changes = ResetChanges::between(ch, before, &genesis);
        self.resets.remove(&friend);
        let gone: Vec<SharedPending> = before
            .pending
            .values()
            .filter(|p| {
                p.payer == local && !genesis.pending.contains_key(&p.request.terms.request_id)
            })
            .cloned()
            .collect();
        for p in gone {
            let terms = &p.request.terms;
            match self.outcome(&terms.request_id).cloned() {
                // We already know how it ended: our own route records that; as a mediator,
                // reconcile settles upstream from the same knowledge.
                Some(outcome) => self.settle_own_route(terms, &outcome),
                None => self.sent_request_ended(terms),
            }
        }
        self.out.push(Output::Event(Event::ChannelReset {
            friend,
            epoch,
            changes,
        }));
        self.reconcile();
        self.dirty.insert(friend);
    }

    /// Handle a message from `from`. On error nothing changed.
    pub fn handle_message(
        &mut self,
        now_ms: u64,
        from: NodeId,
        message: Message,
    ) -> Result<Vec<Output>, ProtocolError> {
        self.now_ms = self.now_ms.max(now_ms);
        match message {
            Message::Move(m) => self.on_move(now_ms, from, m)?,
            Message::RequestToken { epoch, counter } => {
                let ch = self
                    .friends
                    .get(&from)
                    .ok_or(ProtocolError::NotAFriend(from))?;
                let ours = ch.counter();
                if epoch != ch.epoch() {
                    // One of us missed a reset: our tips (with their certificates) settle it.
                    let behind = epoch > ch.epoch();
                    self.send_offer(from, Vec::new(), behind);
                } else if ch.holds_token() {
                    self.flush(from, true);
                } else if counter > ours {
                    // Their request overtook their own latest move: answer once it arrives.
                    if let Some(ch) = self.friends.get_mut(&from) {
                        ch.set_peer_waiting();
                    }
                }
                // Otherwise our last move, which passes them the token, is on its way: relays
                // do not lose mail, and `resend` covers a reconnect.
            }
            Message::Offer(offer) => self.on_offer(now_ms, from, *offer)?,
            Message::Commit(commit) => self.on_commit(now_ms, from, commit, false)?,
            Message::EarlyCommit(commit) => self.on_commit(now_ms, from, commit, true)?,
            Message::Accepted(accepted) => self.on_accepted(from, accepted)?,
            Message::Abandon(abandon) => self.on_abandon(abandon)?,
            Message::ResetProposal(p) => self.on_reset_proposal(from, *p)?,
            Message::ResetAccept(cert) => self.on_reset_accept(from, *cert)?,
            Message::Paid(paid) => self.on_paid(from, paid)?,
        }
        Ok(self.finish())
    }

    fn finish(&mut self) -> Vec<Output> {
        while let Some(friend) = self.dirty.pop_first() {
            self.flush(friend, false);
        }
        std::mem::take(&mut self.out)
    }

    /// Send what is queued for `friend` if we hold the token (an empty move if `force`), or
    /// ask for the token.
    fn flush(&mut self, friend: NodeId, force: bool) {
        self.dirty.remove(&friend);
        let Some(ch) = self.friends.get_mut(&friend) else {
            return;
        };
        if !ch.confirmed() {
            return;
        }
        if ch.holds_token() {
            let built = ch.build_move(&self.identity, force);
            if let Some(m) = built.message {
                self.out.push(Output::Send {
                    to: friend,
                    message: Message::Move(m),
                });
            }
            for (op, reason) in built.dropped {
                self.on_dropped(friend, op, reason);
            }
        }
        // Without the token, or with what one move could not carry (`MAX_OPS_PER_MOVE`) left
        // over: ask for it at once. Waiting for the friend's next move could be waiting forever,
        // since after a move of collects or cancels the friend keeps the token.
        self.request_token(friend);
    }

    /// Ask `friend` for the token if operations wait for it and we have not asked since our
    /// friend's last move.
    fn request_token(&mut self, friend: NodeId) {
        let Some(ch) = self.friends.get_mut(&friend) else {
            return;
        };
        if ch.holds_token() || ch.queue().is_empty() || ch.token_requested() {
            return;
        }
        ch.set_token_requested();
        let (epoch, counter) = (ch.epoch(), ch.counter());
        self.out.push(Output::Send {
            to: friend,
            message: Message::RequestToken { epoch, counter },
        });
    }

    fn on_move(
        &mut self,
        now_ms: u64,
        from: NodeId,
        m: super::channel::Move,
    ) -> Result<(), ProtocolError> {
        let ch = self
            .friends
            .get_mut(&from)
            .ok_or(ProtocolError::NotAFriend(from))?;
        let was_confirmed = ch.confirmed();
        match ch.receive_move(m).map_err(|error| ProtocolError::Channel {
            friend: from,
            error,
        })? {
            Received::OutOfStep => self.send_offer(from, Vec::new(), true),
            Received::Applied(ops) => {
                let carried_request = ops.iter().any(|op| matches!(op, Op::Request(_)));
                let waiting = self
                    .friends
                    .get_mut(&from)
                    .is_some_and(Channel::take_peer_waiting);
                // Pass the token back at once (with an empty move if we have nothing to send)
                // only when the friend still has to act with it: it answered a request of ours
                // that it must now collect or cancel. After a request we keep the token (our
                // answer is what comes next); after a collect, a cancel or a limit we keep it
                // too, so the next payment through this channel goes without asking for it.
                // Our next move countersigns theirs either way, and a tip whose last move is
                // theirs is a debt note on its own (`Tip::verify`).
                let answered_open = self.friends.get(&from).is_some_and(|ch| {
                    ops.iter().any(|op| {
                        matches!(op, Op::Response { request_id, .. }
                            if ch.state().pending.contains_key(request_id))
                    })
                });
                let ack = waiting || (answered_open && !carried_request);
                self.on_ops(now_ms, from, ops);
                if !was_confirmed {
                    self.reconcile();
                }
                self.flush(from, ack);
            }
        }
        Ok(())
    }

    /// Act on the operations of one move the friend `from` made, in order. A move may answer a
    /// request and collect it at once: a later operation sees the answers of earlier ones.
    fn on_ops(&mut self, now_ms: u64, from: NodeId, ops: Vec<Op>) {
        let mut answered: BTreeMap<RequestId, Response> = BTreeMap::new();
        for op in ops {
            if let Op::Response {
                request_id,
                response,
            } = &op
            {
                answered.insert(*request_id, response.clone());
            }
            self.on_op(now_ms, from, op, &answered);
        }
    }

    /// Act on an operation the friend `from` made in our channel. `answered`: responses given
    /// earlier in the same move.
    fn on_op(
        &mut self,
        now_ms: u64,
        from: NodeId,
        op: Op,
        answered: &BTreeMap<RequestId, Response>,
    ) {
        let me = self.id();
        match op {
            Op::SetLimit { currency, limit } => {
                self.out.push(Output::Event(Event::LimitChanged {
                    friend: from,
                    currency,
                    limit,
                }));
            }
            Op::Request(request) => self.on_request(now_ms, from, request),
            Op::Response {
                request_id,
                response,
            } => {
                // Look before the move: the same move may already have collected it.
                let Some(p) = self.pending_in(&from, &request_id, true) else {
                    return;
                };
                let terms = &p.request.terms;
                if terms.buyer() == Some(me) {
                    let mut newly = false;
                    if let Some(route) = self
                        .buying
                        .get_mut(&terms.invoice_id)
                        .and_then(|b| b.routes.get_mut(&request_id))
                        && route.status == RouteStatus::Sent
                    {
                        route.status = RouteStatus::Responded(response);
                        newly = true;
                    }
                    // An answer that came with its collect (after an early commit) needs no
                    // commit: the route is settled by this same move.
                    // With a commit out, only `commit_again` acts; without, only `try_commit`
                    // (which sends the first commit, so it comes second).
                    if newly && self.pending_in(&from, &request_id, false).is_some() {
                        self.commit_again(terms.invoice_id, request_id);
                        self.try_commit(terms.invoice_id);
                    }
                } else if let Some(prev) = upstream_of(terms, &me) {
                    self.enqueue(
                        prev,
                        Op::Response {
                            request_id,
                            response,
                        },
                    );
                }
            }
            Op::Cancel { request_id } => {
                if let Some(p) = self.pending_in(&from, &request_id, true) {
                    self.sent_request_ended(&p.request.terms);
                }
            }
            Op::Collect {
                request_id,
                src_plain_lock,
                dest_plain_lock,
            } => {
                let Some(p) = self.pending_in(&from, &request_id, true) else {
                    return;
                };
                let Some(response) = p
                    .response
                    .clone()
                    .or_else(|| answered.get(&request_id).cloned())
                else {
                    return;
                };
                let terms = &p.request.terms;
                if terms.buyer() == Some(me) {
                    let receipt = Receipt::from_response(
                        terms.seller().unwrap_or(me),
                        terms,
                        &response,
                        src_plain_lock,
                        dest_plain_lock,
                    );
                    // The friend's move that collected was applied to the channel, which checked
                    // both locks against the request and the response, and the response's
                    // signature when it arrived: checking the receipt again would only repeat
                    // a signature check.
                    debug_assert!(receipt.verify().is_ok(), "a collected route's receipt");
                    self.route_done(
                        terms.invoice_id,
                        request_id,
                        RouteStatus::Collected,
                        Some(receipt),
                    );
                } else if let Some(prev) = upstream_of(terms, &me) {
                    self.send_collect(prev, request_id, src_plain_lock, dest_plain_lock, response);
                }
            }
        }
    }

    /// The pending request `id` in the channel with `friend` that we sent; `before` looks at the
    /// state before the friend's last move (for operations that removed it).
    fn pending_in(&self, friend: &NodeId, id: &RequestId, before: bool) -> Option<SharedPending> {
        let ch = self.friends.get(friend)?;
        let state = if before {
            &ch.tip().prev_state
        } else {
            ch.state()
        };
        state.pending.get(id).cloned()
    }

    fn on_request(&mut self, now_ms: u64, from: NodeId, request: Request) {
        let me = self.id();
        let terms = &request.terms;
        let request_id = terms.request_id;
        if self.outcomes.contains_key(&request_id) {
            // We already saw this request end: this is a replay (a friend restored from an
            // old backup sent it again). Carrying it out twice would make someone pay twice.
            return self.enqueue(from, Op::Cancel { request_id });
        }
        let Some(pos) = terms.position(&me) else {
            return self.send_cancel(from, request_id);
        };
        if pos + 1 == terms.route.len() {
            return self.sell(now_ms, from, &request);
        }
        self.forward(from, pos, request);
    }

    /// As a mediator at `pos` on the route: forward if our quoted fee covers our rate and the
    /// next hop has room, else cancel back to `from`.
    fn forward(&mut self, from: NodeId, pos: usize, request: Request) {
        let terms = &request.terms;
        let request_id = terms.request_id;
        // A mediator: forward if our quoted fee covers our rate and the next hop has room.
        let quoted = terms.fees.get(pos.wrapping_sub(1)).copied().unwrap_or(0);
        let fee_ok = self
            .rate
            .fee(terms.dest_payment)
            .is_some_and(|f| f <= quoted);
        let Some(next) = terms.route.get(pos + 1).copied() else {
            return self.send_cancel(from, request_id);
        };
        let room = self.friends.get(&next).and_then(|ch| {
            let line = ch.state().lines.get(&terms.currency)?;
            Some(line.can_send(ch.local_side()))
        });
        let amount = terms.hop_amount(pos).unwrap_or(u64::MAX);
        if fee_ok && room.is_some_and(|r| r >= amount) {
            self.enqueue(next, Op::Request(request));
        } else {
            self.send_cancel(from, request_id);
        }
    }

    /// As the seller: answer a request for an open invoice, cancel anything else.
    fn sell(&mut self, now_ms: u64, from: NodeId, request: &Request) {
        let terms = &request.terms;
        let request_id = terms.request_id;
        let Some(s) = self.selling.get_mut(&terms.invoice_id) else {
            return self.send_cancel(from, request_id);
        };
        let inv = &s.invoice.terms;
        let lock_ok = s.src_hashed_lock.is_none_or(|l| l == terms.src_hashed_lock);
        let abandoned = terms
            .buyer()
            .is_some_and(|b| s.early_abandons.contains(&(terms.src_hashed_lock, b)));
        if s.status != InvoiceStatus::Open
            || now_ms >= inv.expires_at_ms
            || terms.currency != inv.currency
            || terms.total_dest_payment != inv.amount
            || !lock_ok
            || abandoned
        {
            return self.send_cancel(from, request_id);
        }
        s.src_hashed_lock = Some(terms.src_hashed_lock);
        s.buyer = terms.buyer();
        let response = Response::sign(&self.identity, terms, s.dest_plain_lock.hashed());
        s.routes.insert(
            request_id,
            SoldRoute {
                friend: from,
                dest_payment: terms.dest_payment,
                response: response.clone(),
            },
        );
        // With the buyer's early commit held, the answer goes with the collect (and to the
        // buyer directly once the commit is accepted): none of the hops needs it before.
        if self.take_held_commit(terms.invoice_id, terms.src_hashed_lock) {
            return;
        }
        self.enqueue(
            from,
            Op::Response {
                request_id,
                response,
            },
        );
    }

    /// A buyer's commit (`early`: sent with its requests). Accepted at once if the answered
    /// routes it names cover the invoice; an early one is otherwise held until they do (or the
    /// invoice closes), a classic one refused.
    fn on_commit(
        &mut self,
        now_ms: u64,
        from: NodeId,
        commit: Commit,
        early: bool,
    ) -> Result<(), ProtocolError> {
        let s = self
            .selling
            .get_mut(&commit.invoice_id)
            .ok_or(ProtocolError::UnknownInvoice)?;
        let lock = commit.src_plain_lock.hashed();
        let lock_ok = s.src_hashed_lock == Some(lock);
        match &s.status {
            // A duplicate commit (the buyer sent it again, e.g. restored from a backup): tell
            // it again that it is paid.
            InvoiceStatus::Paid(named) if lock_ok => {
                let answer = answer_to(s, early, named);
                self.out.push(Output::Send {
                    to: from,
                    message: answer,
                });
                return Ok(());
            }
            InvoiceStatus::Open => {}
            _ => return Err(ProtocolError::InvoiceClosed),
        }
        if s.src_hashed_lock.is_some() && !lock_ok {
            return Err(ProtocolError::WrongCommitLock);
        }
        // The buyer's abandon overtook its commit: the abandon stands (its requests are
        // cancelled when they arrive), and the commit, which can no longer be taken, is dropped.
        if s.early_abandons.contains(&(lock, from)) {
            return Ok(());
        }
        if now_ms >= s.invoice.terms.expires_at_ms {
            return Err(ProtocolError::InvoiceClosed);
        }
        let delivered = delivered_by(s, &commit);
        if delivered >= s.invoice.terms.amount {
            self.accept_commit(from, commit, early);
            return Ok(());
        }
        if !early {
            if !lock_ok {
                return Err(ProtocolError::WrongCommitLock);
            }
            return Err(ProtocolError::CommitShort {
                delivered,
                amount: s.invoice.terms.amount,
            });
        }
        // Held until the routes it names arrive. The buyer's newer commit (after a route was
        // cancelled) replaces its older one.
        if commit.request_ids.len() > MAX_ROUTES_PER_PAYMENT {
            return Err(ProtocolError::CommitShort {
                delivered,
                amount: s.invoice.terms.amount,
            });
        }
        if let Some(h) = s
            .held
            .iter_mut()
            .find(|h| h.from == from && h.commit.src_plain_lock == commit.src_plain_lock)
        {
            h.commit = commit;
            return Ok(());
        }
        if s.held.len() >= MAX_HELD_COMMITS_PER_INVOICE {
            return Err(ProtocolError::TooManyHeldCommits);
        }
        s.held.push(HeldCommit { from, commit });
        Ok(())
    }

    /// As the seller, with the answered routes `commit` names covering the invoice: collect
    /// them, cancel every other route of the invoice, and tell the buyer (`from`) it is paid:
    /// with our secret alone after a classic commit (the buyer holds our answers), with our
    /// answers too after an early one (they travel with the collects only).
    fn accept_commit(&mut self, from: NodeId, commit: Commit, early: bool) {
        let Some(s) = self.selling.get_mut(&commit.invoice_id) else {
            return;
        };
        let named = named_routes(s, &commit);
        let delivered = delivered_by(s, &commit);
        s.status = InvoiceStatus::Paid(named.clone());
        s.src_plain_lock = Some(commit.src_plain_lock);
        s.held.clear();
        let answer = answer_to(s, early, &named);
        let dest = s.dest_plain_lock;
        let invoice_id = commit.invoice_id;
        let routes: Vec<(RequestId, SoldRoute)> = s
            .routes
            .iter()
            .map(|(r, sold)| (*r, sold.clone()))
            .collect();
        for (request_id, sold) in routes {
            if named.contains(&request_id) {
                self.send_collect(
                    sold.friend,
                    request_id,
                    commit.src_plain_lock,
                    dest,
                    sold.response,
                );
            } else {
                self.send_cancel(sold.friend, request_id);
            }
        }
        // Only the buyer knows the lock the commit opened, so `from` is the buyer.
        self.out.push(Output::Send {
            to: from,
            message: answer,
        });
        self.out.push(Output::Event(Event::InvoicePaid {
            invoice_id,
            amount: delivered,
        }));
    }

    /// As the seller, after answering a route of `invoice_id`: whether an early commit for its
    /// lock is held (then the answer waits for the collect), and if one now covers the
    /// invoice, accept it.
    fn take_held_commit(&mut self, invoice_id: InvoiceId, lock: HashedLock) -> bool {
        let Some(s) = self.selling.get(&invoice_id) else {
            return false;
        };
        let mut holding = false;
        let mut ready = None;
        for h in &s.held {
            if h.commit.src_plain_lock.hashed() != lock {
                continue;
            }
            holding = true;
            if ready.is_none() && delivered_by(s, &h.commit) >= s.invoice.terms.amount {
                ready = Some(h.clone());
            }
        }
        if let Some(h) = ready {
            self.accept_commit(h.from, h.commit, true);
        }
        holding
    }

    /// The seller accepted our commit: with its secret, each committed route's response (which
    /// our channel checked, signature included, when it arrived) and our own secret make the
    /// receipt, so the payment completes now; the collects that move the credit come back hop
    /// by hop after it. From anyone but the seller, for a payment we did not commit, or with a
    /// secret that does not open the responses' lock, it changes nothing (an error says which).
    fn on_paid(&mut self, from: NodeId, paid: Paid) -> Result<(), ProtocolError> {
        let Some(b) = self.buying.get(&paid.invoice_id) else {
            return Err(ProtocolError::NotOurPayment);
        };
        if b.invoice.terms.seller != from {
            return Err(ProtocolError::NotTheSeller);
        }
        let Some(committed) = &b.committed else {
            return Ok(());
        };
        let dest_hashed = paid.dest_plain_lock.hashed();
        let mut receipts = Vec::new();
        for id in committed {
            let Some(route) = b.routes.get(id) else {
                continue;
            };
            let RouteStatus::Responded(response) = &route.status else {
                continue;
            };
            if response.dest_hashed_lock != dest_hashed {
                return Err(ProtocolError::WrongPaidLock);
            }
            let receipt = Receipt::from_response(
                from,
                &route.request.terms,
                response,
                b.src_plain_lock,
                paid.dest_plain_lock,
            );
            debug_assert!(receipt.verify().is_ok(), "a receipt from a paid message");
            receipts.push((*id, receipt));
        }
        for (id, receipt) in receipts {
            self.route_done(paid.invoice_id, id, RouteStatus::Collected, Some(receipt));
        }
        Ok(())
    }

    /// The seller accepted our early commit: each route it names comes with the seller's
    /// signed answer, checked here against the request we signed (the hops have not seen it
    /// yet: it travels with the collects), and its secret opens each answer's lock. With our
    /// own secret that makes each route's receipt, so the payment completes now, also if we
    /// abandoned it meanwhile (the seller took the commit first). From anyone but the seller,
    /// for a payment we did not commit, or with an answer or a secret that does not check, it
    /// changes nothing (an error says which).
    fn on_accepted(&mut self, from: NodeId, accepted: Accepted) -> Result<(), ProtocolError> {
        let Some(b) = self.buying.get(&accepted.invoice_id) else {
            return Err(ProtocolError::NotOurPayment);
        };
        if b.invoice.terms.seller != from {
            return Err(ProtocolError::NotTheSeller);
        }
        let Some(committed) = &b.committed else {
            return Err(ProtocolError::NotOurPayment);
        };
        if accepted.responses.len() > MAX_ROUTES_PER_PAYMENT {
            return Err(ProtocolError::BadAnswer);
        }
        let dest_hashed = accepted.dest_plain_lock.hashed();
        let mut receipts = Vec::with_capacity(accepted.responses.len());
        for (id, response) in &accepted.responses {
            let route = b
                .routes
                .get(id)
                .filter(|_| committed.contains(id))
                .ok_or(ProtocolError::BadAnswer)?;
            if response.dest_hashed_lock != dest_hashed {
                return Err(ProtocolError::WrongPaidLock);
            }
            response
                .verify(&route.request.terms)
                .map_err(|_| ProtocolError::BadAnswer)?;
            let receipt = Receipt::from_response(
                from,
                &route.request.terms,
                response,
                b.src_plain_lock,
                accepted.dest_plain_lock,
            );
            debug_assert!(
                receipt.verify().is_ok(),
                "a receipt from an accepted message"
            );
            receipts.push((*id, receipt));
        }
        for (id, receipt) in receipts {
            self.route_done(
                accepted.invoice_id,
                id,
                RouteStatus::Collected,
                Some(receipt),
            );
        }
        Ok(())
    }

    fn try_commit(&mut self, invoice_id: InvoiceId) {
        let Some(b) = self.buying.get_mut(&invoice_id) else {
            return;
        };
        if b.committed.is_some() || b.abandoned || b.status != PaymentStatus::InFlight {
            return;
        }
        let answered: Vec<(RequestId, u64)> = b
            .routes
            .iter()
            .filter(|(_, r)| matches!(r.status, RouteStatus::Responded(_)))
            .map(|(id, r)| (*id, r.request.terms.dest_payment))
            .collect();
        let delivered = answered
            .iter()
            .try_fold(0u64, |acc, (_, d)| acc.checked_add(*d))
            .unwrap_or(u64::MAX);
        if delivered < b.invoice.terms.amount {
            return;
        }
        b.committed = Some(answered.into_iter().map(|(id, _)| id).collect());
        self.send_commit(invoice_id, false);
    }

    /// Our early commit was not held (a seller that does not know early commits, or one
    /// holding too many), so its routes were answered hop by hop: when the answer to `just`
    /// makes the answered routes it names cover the invoice, commit again the classic way.
    fn commit_again(&mut self, invoice_id: InvoiceId, just: RequestId) {
        let Some(b) = self.buying.get(&invoice_id) else {
            return;
        };
        let Some(ids) = &b.committed else {
            return;
        };
        if b.abandoned || b.status != PaymentStatus::InFlight || !ids.contains(&just) {
            return;
        }
        let answered = |r: &RouteState| matches!(r.status, RouteStatus::Responded(_));
        let before = committed_delivery(b, |id, r| *id != just && answered(r));
        let amount = b.invoice.terms.amount;
        if before < amount && committed_delivery(b, |_, r| answered(r)) >= amount {
            self.send_commit(invoice_id, false);
        }
    }

    /// Send our commit of `invoice_id` again, if the routes it names can still cover the
    /// invoice: the classic way once the answered ones cover it here (the seller's "paid" then
    /// suffices), else early (the seller then answers with its responses).
    fn resend_commit(&mut self, invoice_id: InvoiceId) {
        let Some(b) = self.buying.get(&invoice_id) else {
            return;
        };
        if !commit_covers(b) {
            return;
        }
        let answered = committed_delivery(b, |_, r| matches!(r.status, RouteStatus::Responded(_)));
        self.send_commit(invoice_id, answered < b.invoice.terms.amount);
    }

    fn send_commit(&mut self, invoice_id: InvoiceId, early: bool) {
        let Some(b) = self.buying.get(&invoice_id) else {
            return;
        };
        let Some(ids) = &b.committed else {
            return;
        };
        self.out.push(Output::Send {
            to: b.invoice.terms.seller,
            message: {
                let commit = Commit {
                    invoice_id,
                    src_plain_lock: b.src_plain_lock,
                    request_ids: ids.clone(),
                };
                if early {
                    Message::EarlyCommit(commit)
                } else {
                    Message::Commit(commit)
                }
            },
        });
    }

    fn resend_commits(&mut self) {
        let open: Vec<InvoiceId> = self
            .buying
            .iter()
            .filter(|(_, b)| {
                b.status == PaymentStatus::InFlight && b.committed.is_some() && !b.abandoned
            })
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.resend_commit(id);
        }
    }

    /// One of our payment's routes ended with `status`; `receipt` (for a collected route) must
    /// be one that verifies: the callers check it, or built it from a response and locks their
    /// channel already checked.
    fn route_done(
        &mut self,
        invoice_id: InvoiceId,
        request_id: RequestId,
        status: RouteStatus,
        receipt: Option<Receipt>,
    ) {
        let Some(b) = self.buying.get_mut(&invoice_id) else {
            return;
        };
        if let Some(r) = b.routes.get_mut(&request_id) {
            r.status = status;
        }
        if b.receipt.is_none() {
            b.receipt = receipt;
        }
        if b.status != PaymentStatus::InFlight {
            return;
        }
        let open = b
            .routes
            .values()
            .any(|r| matches!(r.status, RouteStatus::Sent | RouteStatus::Responded(_)));
        if open {
            return;
        }
        match b.receipt.clone() {
            Some(receipt) => {
                b.status = PaymentStatus::Completed;
                self.out.push(Output::Event(Event::PaymentCompleted {
                    receipt: Box::new(receipt),
                }));
            }
            None => {
                b.status = PaymentStatus::Cancelled;
                self.out
                    .push(Output::Event(Event::PaymentCancelled { invoice_id }));
            }
        }
    }

    /// If `terms` is one of our own payment's routes, record how it ended (with the receipt if it
    /// was collected). Used when we learn the outcome other than from the move that ended it.
    fn settle_own_route(&mut self, terms: &RequestTerms, outcome: &Outcome) {
        if terms.buyer() != Some(self.id()) {
            return;
        }
        let (status, receipt) = match outcome {
            Outcome::Collected {
                src_plain_lock,
                dest_plain_lock,
                response,
            } => (
                RouteStatus::Collected,
                terms
                    .seller()
                    .map(|seller| {
                        Receipt::from_response(
                            seller,
                            terms,
                            response,
                            *src_plain_lock,
                            *dest_plain_lock,
                        )
                    })
                    // Learned from a resolution or a reset, not from a move this node checked.
                    .filter(|r| r.verify().is_ok()),
            ),
            Outcome::Cancelled => (RouteStatus::Cancelled, None),
        };
        self.route_done(terms.invoice_id, terms.request_id, status, receipt);
    }

    /// A request we sent ended in its channel with nothing moved (cancelled downstream, refused
    /// when we came to send it, or dropped by a reset): the buyer's route is over; a mediator
    /// cancels upstream.
    fn sent_request_ended(&mut self, terms: &RequestTerms) {
        let me = self.id();
        if terms.buyer() == Some(me) {
            self.route_done(
                terms.invoice_id,
                terms.request_id,
                RouteStatus::Cancelled,
                None,
            );
        } else if let Some(prev) = upstream_of(terms, &me) {
            self.send_cancel(prev, terms.request_id);
        }
    }

    /// A queued operation no longer applied when we came to send it.
    fn on_dropped(&mut self, friend: NodeId, op: Op, reason: OpError) {
        match op {
            // Already pending with that friend (sent before a resync): it is on its way.
            Op::Request(_) if matches!(reason, OpError::DuplicateRequest(_)) => {}
            Op::Request(request) => self.sent_request_ended(&request.terms),
            Op::SetLimit { .. } => self
                .out
                .push(Output::Event(Event::LimitNotSet { friend, reason })),
            // Answers to requests that are gone: nothing left to do.
            Op::Response { .. } | Op::Cancel { .. } | Op::Collect { .. } => {}
        }
    }

    fn enqueue(&mut self, friend: NodeId, op: Op) {
        if let Some(ch) = self.friends.get_mut(&friend) {
            ch.enqueue(op);
            self.dirty.insert(friend);
        }
    }

    fn send_cancel(&mut self, friend: NodeId, request_id: RequestId) {
        self.remember(request_id, Outcome::Cancelled);
        self.enqueue(friend, Op::Cancel { request_id });
    }

    fn send_collect(
        &mut self,
        friend: NodeId,
        request_id: RequestId,
        src_plain_lock: PlainLock,
        dest_plain_lock: PlainLock,
        response: Response,
    ) {
        self.remember(
            request_id,
            Outcome::Collected {
                src_plain_lock,
                dest_plain_lock,
                response: response.clone(),
            },
        );
        self.enqueue(
            friend,
            Op::Collect {
                request_id,
                src_plain_lock,
                dest_plain_lock,
            },
        );
        self.ensure_answered(friend, request_id, response);
    }

    /// A collect needs the seller's answer in the channel first. If the friend's request has no
    /// answer in our state and none is queued (a reset or resync dropped it), queue it ahead of
    /// the collect.
    fn ensure_answered(&mut self, friend: NodeId, request_id: RequestId, response: Response) {
        let Some(ch) = self.friends.get_mut(&friend) else {
            return;
        };
        let unanswered = ch
            .state()
            .pending
            .get(&request_id)
            .is_some_and(|p| p.response.is_none());
        let queued = ch
            .queue()
            .iter()
            .any(|op| matches!(op, Op::Response { request_id: r, .. } if *r == request_id));
        if unanswered && !queued {
            ch.enqueue_before_same_request(Op::Response {
                request_id,
                response,
            });
            self.dirty.insert(friend);
        }
    }

    /// A place never given before by this node, nor by any node its store held: the outcomes'
    /// order, and the rows of payments and invoices (a row is never reused, so a record deleted
    /// and one made in the same step never share a row).
    fn take_place(&mut self) -> u64 {
        let place = self.next_place;
        self.next_place += 1;
        if self.next_place > self.reserved_place {
            self.reserved_place = self.next_place.saturating_add(PLACE_BLOCK);
        }
        place
    }

    /// How a request ended, if we remember.
    fn outcome(&self, id: &RequestId) -> Option<&Outcome> {
        self.outcomes.get(id).map(|o| &o.outcome)
    }

    /// Remember how a request ended. The first outcome recorded stands: a request ends once.
    fn remember(&mut self, request_id: RequestId, outcome: Outcome) {
        if !self.outcomes.contains_key(&request_id) {
            let seq = self.take_place();
            self.outcomes.insert(
                request_id,
                StoredOutcome {
                    request_id,
                    seq,
                    outcome,
                },
            );
            self.outcome_order.push_back(request_id);
            while self.outcome_order.len() > MAX_REMEMBERED_OUTCOMES {
                if let Some(forgotten) = self
                    .outcome_order
                    .pop_front()
                    .and_then(|old| self.outcomes.remove(&old))
                {
                    self.forgotten_outcomes.push(forgotten.seq);
                }
            }
        }
    }

    fn send_offer(&mut self, friend: NodeId, resolutions: Vec<Resolution>, reply_wanted: bool) {
        if let Some(ch) = self.friends.get(&friend) {
            self.out.push(Output::Send {
                to: friend,
                message: Message::Offer(Box::new(Offer {
                    tip: ch.tip().clone(),
                    resolutions,
                    reply_wanted,
                })),
            });
        }
    }

    fn on_offer(&mut self, now_ms: u64, from: NodeId, offer: Offer) -> Result<(), ProtocolError> {
        let ch = self
            .friends
            .get_mut(&from)
            .ok_or(ProtocolError::NotAFriend(from))?;
        let was_confirmed = ch.confirmed();
        // Requests the friend still holds as pending, so we can tell them how they ended.
        let mut theirs: BTreeSet<RequestId> =
            offer.tip.prev_state.pending.keys().copied().collect();
        if let Some(last) = &offer.tip.last {
            theirs.extend(last.ops.iter().filter_map(|op| match op {
                Op::Request(r) => Some(r.terms.request_id),
                _ => None,
            }));
        }
        // Learn how requests we held ended, before the state that forgets them replaces ours.
        let ours_before = ch.state().pending.clone();
        let (epoch_before, state_before) = (ch.epoch(), ch.state().clone());
        let outcome = ch
            .receive_offer(offer.tip)
            .map_err(|error| ProtocolError::Channel {
                friend: from,
                error,
            })?;
        for r in offer.resolutions {
            let Some(p) = ours_before.get(&r.request_id) else {
                continue;
            };
            let valid = match &r.outcome {
                Outcome::Collected {
                    src_plain_lock,
                    response,
                    dest_plain_lock,
                } => {
                    src_plain_lock.hashed() == p.request.terms.src_hashed_lock
                        && dest_plain_lock.hashed() == response.dest_hashed_lock
                        && response.verify(&p.request.terms).is_ok()
                }
                Outcome::Cancelled => true,
            };
            if !valid {
                continue;
            }
            // Our own payment's route ended while we were behind: settle our record of it.
            let terms = &p.request.terms;
            let still_pending = self
                .friends
                .get(&from)
                .is_some_and(|ch| ch.state().pending.contains_key(&r.request_id));
            if !still_pending {
                self.settle_own_route(terms, &r.outcome);
            }
            self.remember(r.request_id, r.outcome);
        }
        let resolutions = |node: &Node, ch: &Channel| -> Vec<Resolution> {
            theirs
                .iter()
                .filter(|id| !ch.state().pending.contains_key(id))
                .filter_map(|id| {
                    node.outcome(id).map(|o| Resolution {
                        request_id: *id,
                        outcome: o.clone(),
                    })
                })
                .collect()
        };
        match outcome {
            OfferOutcome::InSync => {
                if offer.reply_wanted {
                    self.send_offer(from, Vec::new(), false);
                }
            }
            OfferOutcome::Adopted { ref new_ops, .. } => {
                if self
                    .friends
                    .get(&from)
                    .is_some_and(|ch| ch.epoch() > epoch_before)
                {
                    // The friend reset the channel with us and we missed the certificate.
                    self.epoch_started(from, &state_before);
                }
                self.on_ops(now_ms, from, new_ops.clone());
                let counter = self.friends.get(&from).map_or(0, Channel::counter);
                self.out.push(Output::Event(Event::Resynced {
                    friend: from,
                    counter,
                }));
                if offer.reply_wanted {
                    self.send_offer(from, Vec::new(), false);
                }
            }
            OfferOutcome::OursIsAhead => {
                let Some(ch) = self.friends.get(&from) else {
                    return Ok(());
                };
                let res = resolutions(self, ch);
                let want = !ch.confirmed();
                self.send_offer(from, res, want);
            }
        }
        let confirmed = self.friends.get(&from).is_some_and(Channel::confirmed);
        if confirmed && (!was_confirmed || matches!(outcome, OfferOutcome::Adopted { .. })) {
            self.reconcile();
        }
        // The friend asked for the token before the move we just adopted reached us: now that
        // we hold it, pass it (the move itself will arrive as a copy and change nothing).
        let waiting = self
            .friends
            .get_mut(&from)
            .is_some_and(|ch| ch.holds_token() && ch.take_peer_waiting());
        if waiting {
            self.flush(from, true);
        } else {
            self.dirty.insert(from);
        }
        Ok(())
    }

    /// After a resync, make sure every request we hold from a friend is on its way to an end:
    /// answered, forwarded, collected or cancelled, from what this node knows.
    fn reconcile(&mut self) {
        let me = self.id();
        let friends: Vec<NodeId> = self.friends.keys().copied().collect();
        for friend in friends {
            let Some(ch) = self.friends.get(&friend) else {
                continue;
            };
            if !ch.confirmed() {
                continue;
            }
            let local = ch.local_side();
            let incoming: Vec<SharedPending> = ch
                .state()
                .pending
                .values()
                .filter(|p| p.payer != local)
                .cloned()
                .collect();
            for p in incoming {
                self.reconcile_incoming(me, friend, p);
            }
        }
        // Our own routes that left their first channel in a way we did not see (an adopted tip,
        // a reset) but whose outcome we learned: record it.
        let mut learned = Vec::new();
        for b in self
            .buying
            .values()
            .filter(|b| b.status == PaymentStatus::InFlight)
        {
            for (id, route) in &b.routes {
                if !matches!(route.status, RouteStatus::Sent | RouteStatus::Responded(_)) {
                    continue;
                }
                let Some(outcome) = self.outcome(id) else {
                    continue;
                };
                let first = route.request.terms.route.get(1).copied();
                let gone = first.and_then(|f| self.friends.get(&f)).is_some_and(|ch| {
                    ch.confirmed()
                        && !ch.state().pending.contains_key(id)
                        && !ch.queue().iter().any(|op| op.request_id() == Some(*id))
                });
                if gone {
                    learned.push((route.request.terms.clone(), outcome.clone()));
                }
            }
        }
        for (terms, outcome) in learned {
            self.settle_own_route(&terms, &outcome);
        }
        self.resend_commits();
    }

    /// Whether a collect or cancel for `id` already waits in our queue for `friend`.
    fn settling_queued(&self, friend: &NodeId, id: &RequestId) -> bool {
        self.friends.get(friend).is_some_and(|ch| {
            ch.queue().iter().any(|op| {
                matches!(op, Op::Cancel { request_id } | Op::Collect { request_id, .. } if request_id == id)
            })
        })
    }

    /// Whether a request `id` already waits in our queue for `friend`.
    fn request_queued(&self, friend: &NodeId, id: &RequestId) -> bool {
        self.friends.get(friend).is_some_and(|ch| {
            ch.queue()
                .iter()
                .any(|op| matches!(op, Op::Request(r) if r.terms.request_id == *id))
        })
    }

    fn reconcile_incoming(&mut self, me: NodeId, from: NodeId, p: SharedPending) {
        let terms = p.request.terms.clone();
        let id = terms.request_id;
        if self.settling_queued(&from, &id) {
            if let Some(Outcome::Collected { response, .. }) = self.outcome(&id).cloned() {
                self.ensure_answered(from, id, response);
            }
            return;
        }
        if let Some(outcome) = self.outcome(&id).cloned() {
            match outcome {
                Outcome::Collected {
                    src_plain_lock,
                    dest_plain_lock,
                    response,
                } => self.send_collect(from, id, src_plain_lock, dest_plain_lock, response),
                Outcome::Cancelled => self.send_cancel(from, id),
            }
            return;
        }
        if terms.seller() == Some(me) {
            let Some(s) = self.selling.get(&terms.invoice_id) else {
                return self.send_cancel(from, id);
            };
            let response = match s.routes.get(&id) {
                Some(sold) => sold.response.clone(),
                None => Response::sign(&self.identity, &terms, s.dest_plain_lock.hashed()),
            };
            let answer = p.response.is_none().then(|| Op::Response {
                request_id: id,
                response: response.clone(),
            });
            match (&s.status, s.src_plain_lock) {
                (InvoiceStatus::Open, _) => {
                    // With the buyer's early commit held, the answer waits for the collect.
                    let held = s
                        .held
                        .iter()
                        .any(|h| h.commit.src_plain_lock.hashed() == terms.src_hashed_lock);
                    if s.routes.contains_key(&id) {
                        if let Some(op) = answer.filter(|_| !held) {
                            self.enqueue(from, op);
                        }
                    } else {
                        // Not on record (we were restored): treat it as new.
                        self.sell(self.now_ms, from, &p.request);
                    }
                }
                (InvoiceStatus::Paid(named), Some(src)) if named.contains(&id) => {
                    let dest = s.dest_plain_lock;
                    self.send_collect(from, id, src, dest, response);
                }
                _ => self.send_cancel(from, id),
            }
            return;
        }
        let Some(pos) = terms.position(&me) else {
            return self.send_cancel(from, id);
        };
        let Some(next) = terms.route.get(pos + 1).copied() else {
            return;
        };
        let Some(nch) = self.friends.get(&next) else {
            return self.send_cancel(from, id);
        };
        if !nch.confirmed() {
            return;
        }
        if let Some(np) = nch.state().pending.get(&id) {
            if let (Some(response), None) = (np.response.clone(), &p.response) {
                self.enqueue(
                    from,
                    Op::Response {
                        request_id: id,
                        response,
                    },
                );
            }
            return;
        }
        if self.request_queued(&next, &id) {
            return;
        }
        self.forward(from, pos, p.request.clone());
    }
}

/// The answered routes of `s` that `commit` names (at most [`MAX_ROUTES_PER_PAYMENT`]).
fn named_routes(s: &Selling, commit: &Commit) -> BTreeSet<RequestId> {
    commit
        .request_ids
        .iter()
        .filter(|r| s.routes.contains_key(r))
        .copied()
        .take(MAX_ROUTES_PER_PAYMENT)
        .collect()
}

/// What the routes [`named_routes`] finds deliver.
fn delivered_by(s: &Selling, commit: &Commit) -> u64 {
    named_routes(s, commit)
        .iter()
        .filter_map(|r| s.routes.get(r).map(|sold| sold.dest_payment))
        .try_fold(0u64, u64::checked_add)
        .unwrap_or(u64::MAX)
}

/// The seller's word to a buyer whose commit it accepted, collecting the routes `named`: its
/// secret, with its answers after an early commit.
fn answer_to(s: &Selling, early: bool, named: &BTreeSet<RequestId>) -> Message {
    if early {
        Message::Accepted(Accepted {
            invoice_id: s.invoice.terms.id,
            dest_plain_lock: s.dest_plain_lock,
            responses: named
                .iter()
                .filter_map(|id| s.routes.get(id).map(|sold| (*id, sold.response.clone())))
                .collect(),
        })
    } else {
        Message::Paid(Paid {
            invoice_id: s.invoice.terms.id,
            dest_plain_lock: s.dest_plain_lock,
        })
    }
}

/// Whether our payment's commit is out and the routes it names, not cancelled, still deliver
/// the invoice: the seller may take it, so no route is added.
fn commit_covers(b: &Buying) -> bool {
    b.committed.is_some()
        && committed_delivery(b, |_, r| r.status != RouteStatus::Cancelled)
            >= b.invoice.terms.amount
}

/// What the routes our commit names, and `keep` keeps, deliver to the seller (0 without a
/// commit).
fn committed_delivery(b: &Buying, keep: impl Fn(&RequestId, &RouteState) -> bool) -> u64 {
    b.committed
        .iter()
        .flatten()
        .filter_map(|id| b.routes.get(id).map(|r| (id, r)))
        .filter(|(id, r)| keep(id, r))
        .try_fold(0u64, |acc, (_, r)| {
            acc.checked_add(r.request.terms.dest_payment)
        })
        .unwrap_or(u64::MAX)
}

/// The friend before `me` on a request's route.
fn upstream_of(terms: &RequestTerms, me: &NodeId) -> Option<NodeId> {
    let pos = terms.position(me)?;
    pos.checked_sub(1).and_then(|p| terms.route.get(p).copied())
}

fn derive(entropy: &[u8; 32], what: &'static str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("offst node derive v1");
    hasher.update(what.as_bytes());
    hasher.update(entropy);
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::{Op, StoredQueue};
    use crate::protocol::payment::RequestId;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    /// What a step does to a channel's queue.
    #[derive(Clone, Debug)]
    enum Change {
        Push(u8),
        Pop(u8),
        Insert(u8, u8),
        PushFront(u8),
    }

    fn op(id: u8) -> Op {
        // Few ids, so that equal operations sit in the same queue.
        Op::Cancel {
            request_id: RequestId([id % 8; 32]),
        }
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            4 => any::<u8>().prop_map(Change::Push),
            3 => (1u8..6).prop_map(Change::Pop),
            1 => (any::<u8>(), any::<u8>()).prop_map(|(at, id)| Change::Insert(at, id)),
            1 => any::<u8>().prop_map(Change::PushFront),
        ]
    }

    proptest! {
        /// A store fed only with what `update` reports holds the queue, in order, after every
        /// step, and places never repeat.
        #[test]
        fn the_rows_are_the_queue(steps in prop::collection::vec(prop::collection::vec(change(), 0..4), 1..40)) {
            let mut queue: VecDeque<Op> = VecDeque::new();
            let mut stored = StoredQueue::default();
            let mut store: BTreeMap<u64, Op> = BTreeMap::new();
            let mut given = std::collections::BTreeSet::new();
            for step in steps {
                for c in step {
                    match c {
                        Change::Push(id) => queue.push_back(op(id)),
                        Change::Pop(n) => {
                            for _ in 0..n {
                                queue.pop_front();
                            }
                        }
                        Change::Insert(at, id) => {
                            let at = usize::from(at) % (queue.len() + 1);
                            queue.insert(at, op(id));
                        }
                        Change::PushFront(id) => queue.push_front(op(id)),
                    }
                }
                for (seq, row) in stored.update(&queue) {
                    match row {
                        Some(op) => {
                            prop_assert!(given.insert(seq), "place {} given twice", seq);
                            store.insert(seq, op.clone());
                        }
                        None => {
                            prop_assert!(store.remove(&seq).is_some(), "deleted a missing row");
                        }
                    }
                }
                let back: Vec<&Op> = store.values().collect();
                let want: Vec<&Op> = queue.iter().collect();
                prop_assert_eq!(back, want);
            }
        }
    }

    /// Sending from the front and queueing at the back touch only those rows.
    #[test]
    fn a_fifo_writes_each_operation_once() {
        let mut queue: VecDeque<Op> = (0..5).map(op).collect();
        let mut stored = StoredQueue::default();
        assert_eq!(stored.update(&queue).len(), 5);
        queue.pop_front();
        queue.pop_front();
        queue.push_back(op(5));
        let changes = stored.update(&queue);
        let written = changes.iter().filter(|(_, o)| o.is_some()).count();
        let deleted = changes.iter().filter(|(_, o)| o.is_none()).count();
        assert_eq!((written, deleted), (1, 2));
        assert!(stored.update(&queue).is_empty());
    }
    /// Outcomes past `MAX_REMEMBERED_OUTCOMES` are forgotten oldest first, and a store fed only
    /// the node's changes (rows keyed by place) holds exactly the outcomes the node remembers,
    /// also for one remembered and forgotten within a single step, and after the node is
    /// rebuilt from that store.
    #[test]
    fn a_store_fed_the_changes_forgets_the_outcomes_the_node_forgot() {
        use super::{MAX_REMEMBERED_OUTCOMES, Node, Outcome};
        use crate::protocol::amount::Rate;
        use crate::protocol::identity::Identity;
        let identity = Identity::from_seed([9; 32]);
        let mut node = Node::new(identity.clone(), Rate { base: 0, ppm: 0 });
        let mut store: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let apply = |node: &mut Node, store: &mut BTreeMap<u64, Vec<u8>>| {
            for (seq, row) in node.take_changes().outcomes {
                match row {
                    Some(bytes) => {
                        assert!(store.insert(seq, bytes).is_none(), "a place written twice");
                    }
                    None => {
                        store.remove(&seq);
                    }
                }
            }
        };
        let id = |n: u64| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&n.to_le_bytes());
            b[8] = 0xa5;
            RequestId(b)
        };
        // Fill to the bound, 4,096 a step.
        let bound = MAX_REMEMBERED_OUTCOMES as u64;
        for n in 0..bound {
            node.remember(id(n), Outcome::Cancelled);
            if n % 4096 == 4095 {
                apply(&mut node, &mut store);
            }
        }
        apply(&mut node, &mut store);
        assert_eq!(store.len(), MAX_REMEMBERED_OUTCOMES);
        // Three more: the three oldest go, in the same step.
        for n in bound..bound + 3 {
            node.remember(id(n), Outcome::Cancelled);
        }
        apply(&mut node, &mut store);
        assert_eq!(store.len(), MAX_REMEMBERED_OUTCOMES);
        assert_eq!(store.keys().next(), Some(&3));
        assert!(node.outcome(&id(2)).is_none() && node.outcome(&id(3)).is_some());
        // The store rebuilds the same node, which goes on forgetting in order.
        let mut parts = node.parts();
        parts.outcomes = store.values().cloned().collect();
        let mut back = Node::from_parts(identity, &parts).unwrap();
        assert_eq!(back.parts(), node.parts());
        back.remember(id(bound + 3), Outcome::Cancelled);
        apply(&mut back, &mut store);
        assert_eq!(store.keys().next(), Some(&4));
        let mut held = back.parts().outcomes;
        held.sort();
        let mut stored: Vec<Vec<u8>> = store.values().cloned().collect();
        stored.sort();
        assert!(
            held == stored,
            "the store holds other outcomes than the node"
        );
    }

    /// The settings are written seldom: places are reserved a block at a time and the clock
    /// stored once a minute, so most steps that give places or move the time leave them as
    /// they were. Whatever step the store stops at (a crash), a node rebuilt from it gives no
    /// place the live node gave before, and its clock is at most a minute behind.
    #[test]
    fn settings_change_seldom_and_a_rebuilt_node_never_gives_a_place_again() {
        use super::{NOW_STORED_EVERY_MS, Node, Outcome, PLACE_BLOCK};
        use crate::protocol::amount::Rate;
        use crate::protocol::identity::Identity;
        let identity = Identity::from_seed([7; 32]);
        let mut node = Node::new(identity.clone(), Rate { base: 0, ppm: 0 });
        let mut settings = node.take_changes().settings;
        let mut written = 0u64;
        let steps = 3 * PLACE_BLOCK;
        for n in 0..steps {
            // A step every 100 ms that remembers an outcome (one place).
            node.now_ms = n * 100;
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&n.to_le_bytes());
            node.remember(RequestId(b), Outcome::Cancelled);
            let changes = node.take_changes();
            if changes.settings != settings {
                written += 1;
                settings = changes.settings;
            }
            // The store holds `settings` now: a node rebuilt from them alone (without the
            // outcomes' rows, whose places would also lift it) goes on above every place
            // given, and its clock is recent.
            let parts = super::Parts {
                settings: settings.clone(),
                ..Default::default()
            };
            let back = Node::from_parts(identity.clone(), &parts).unwrap();
            assert!(
                back.next_place >= node.next_place,
                "step {n}: a place given again"
            );
            assert!(back.now_ms + NOW_STORED_EVERY_MS > node.now_ms, "step {n}");
        }
        // 3 blocks of places and about 5 minutes: a handful of writes, not one a step.
        assert!(written <= 10, "{written} settings written in {steps} steps");
        assert!(
            written >= 6,
            "{written}: the blocks or the clock were never stored"
        );
    }
}
