//! The state two friends keep in common, and the operations that change it.
//!
//! The state is *canonical*: it is written from the side of the friend with the smaller node id
//! ("first"), so both friends hold byte-identical states and can sign the same hash.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::protocol::amount::Currency;
use crate::protocol::bounds::{
    MAX_AMOUNT, MAX_CURRENCIES_PER_FRIEND, MAX_FROZEN_PER_FRIEND, MAX_PENDING_REQUESTS,
};
use crate::protocol::identity::{Hash, NodeId, SignatureBatch};
use crate::protocol::payment::{PaymentError, PlainLock, Request, RequestId, Response};

/// One of the two friends of a channel, in canonical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// The friend with the smaller node id.
    First,
    /// The other friend.
    Second,
}

impl Side {
    /// The other friend.
    pub fn other(self) -> Side {
        match self {
            Side::First => Side::Second,
            Side::Second => Side::First,
        }
    }
}

/// Mutual credit in one currency, seen from `First`.
///
/// Invariant, always: `-limit_of_second <= balance - frozen_by_first` and
/// `balance + frozen_by_second <= limit_of_first`. The first bound is `-md{BA} <= d{AB}` with
/// everything First has frozen counted as already paid; the second is `d{AB} <= md{AB}` likewise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditLine {
    /// `d{first,second}`: what Second owes First (negative: First owes Second).
    pub balance: i128,
    /// `md{first,second}`: how much First lets Second owe it. Set by First.
    pub limit_of_first: u64,
    /// `md{second,first}`: how much Second lets First owe it. Set by Second.
    pub limit_of_second: u64,
    /// Sum of pending requests First sent to Second (paid if collected).
    pub frozen_by_first: u64,
    /// Sum of pending requests Second sent to First.
    pub frozen_by_second: u64,
}

impl CreditLine {
    /// The limit `side` set.
    pub fn limit_of(&self, side: Side) -> u64 {
        match side {
            Side::First => self.limit_of_first,
            Side::Second => self.limit_of_second,
        }
    }

    /// What `side` has frozen toward the other.
    pub fn frozen_by(&self, side: Side) -> u64 {
        match side {
            Side::First => self.frozen_by_first,
            Side::Second => self.frozen_by_second,
        }
    }

    /// The balance seen from `side`: what the other owes `side`.
    pub fn balance_of(&self, side: Side) -> i128 {
        match side {
            Side::First => self.balance,
            Side::Second => -self.balance,
        }
    }

    /// How much more `side` can freeze toward the other without breaking a limit.
    pub fn can_send(&self, side: Side) -> u64 {
        // From `side`'s own view: balance_of(side) - frozen_by(side) - x >= -limit_of(other).
        let room = self.balance_of(side) - i128::from(self.frozen_by(side))
            + i128::from(self.limit_of(side.other()));
        u64::try_from(room.clamp(0, i128::from(MAX_AMOUNT))).unwrap_or(0)
    }

    /// Whether both limit inequalities hold.
    pub fn limits_hold(&self) -> bool {
        let low =
            self.balance - i128::from(self.frozen_by_first) >= -i128::from(self.limit_of_second);
        let high =
            self.balance + i128::from(self.frozen_by_second) <= i128::from(self.limit_of_first);
        low && high
    }

    /// The least limit `side` may set now: what the other side owes it, frozen credit toward it
    /// included. Lowering below that would break the invariant, so it is refused.
    pub fn min_limit(&self, side: Side) -> u64 {
        let owed = self.balance_of(side) + i128::from(self.frozen_by(side.other()));
        u64::try_from(owed.max(0)).unwrap_or(u64::MAX)
    }

    fn frozen_mut(&mut self, side: Side) -> &mut u64 {
        match side {
            Side::First => &mut self.frozen_by_first,
            Side::Second => &mut self.frozen_by_second,
        }
    }
}

/// A request frozen in the channel, waiting to be collected or cancelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The buyer-signed request.
    pub request: Request,
    /// Who sent it (the upstream friend, who pays when it is collected).
    pub payer: Side,
    /// The amount frozen on this hop.
    pub amount: u64,
    /// The seller's answer, once it passed this hop.
    pub response: Option<Response>,
}

/// A [`Pending`] request as a state holds it: shared, not copied, between the states that hold
/// it unchanged (the current state, the last state both signed, the copy a move is checked
/// on), with its hash computed once, when it is made.
///
/// It reads as the [`Pending`] it holds and is encoded as that [`Pending`] alone (the hash is
/// computed again when it is read back), so stores and messages are unchanged by it. Two are
/// equal when their hashes are (BLAKE3: equal hashes mean equal requests).
#[derive(Clone)]
pub struct SharedPending(Arc<(Pending, Hash)>);

impl SharedPending {
    /// Hold `pending`, hashing it.
    pub fn new(pending: Pending) -> SharedPending {
        let hash = Hash::of(PENDING_DOMAIN, &pending);
        SharedPending(Arc::new((pending, hash)))
    }

    /// The hash the state hash is made of.
    pub fn hash(&self) -> Hash {
        self.0.1
    }
}

impl Deref for SharedPending {
    type Target = Pending;

    fn deref(&self) -> &Pending {
        &self.0.0
    }
}

impl PartialEq for SharedPending {
    fn eq(&self, other: &SharedPending) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.1 == other.0.1
    }
}

impl Eq for SharedPending {}

impl std::fmt::Debug for SharedPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.0.fmt(f)
    }
}

impl From<Pending> for SharedPending {
    fn from(pending: Pending) -> SharedPending {
        SharedPending::new(pending)
    }
}

impl Serialize for SharedPending {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedPending {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SharedPending, D::Error> {
        Pending::deserialize(deserializer).map(SharedPending::new)
    }
}

const PENDING_DOMAIN: &str = "offst pending v1";
const STATE_DOMAIN: &str = "offst channel state v2";

/// Everything two friends agree on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// Mutual credit per currency.
    pub lines: BTreeMap<Currency, CreditLine>,
    /// Frozen requests, by id.
    pub pending: BTreeMap<RequestId, SharedPending>,
}

impl ChannelState {
    /// The hash both friends sign (state hash v2): the credit lines, then each pending
    /// request's id and hash ([`SharedPending::hash`]) in id order. Its cost grows with the
    /// number of pending requests by 64 bytes each, not by the requests themselves, which are
    /// hashed once when they are made.
    pub fn hash(&self) -> Hash {
        let mut hasher = blake3::Hasher::new_derive_key(STATE_DOMAIN);
        let lines = crate::protocol::identity::hash_encoded(&mut hasher, &self.lines);
        crate::metrics::hashed(lines + 8 + self.pending.len() * 64);
        hasher.update(&(self.pending.len() as u64).to_le_bytes());
        // Fed in pieces of up to 256 requests (16 KiB): BLAKE3 hashes a long update several
        // 1 KiB chunks at a time with SIMD, and 32-byte updates one block after another. With
        // the 256 requests a channel may hold pending that is 7.6 µs instead of 20.9
        // (`cargo bench -p offst-core -- state/`). The hash is the same however it is split.
        let mut piece = [0u8; 64 * 256];
        let mut len = 0;
        for (id, p) in &self.pending {
            if let Some(slot) = piece.get_mut(len..len + 64) {
                let (id_part, hash_part) = slot.split_at_mut(32);
                id_part.copy_from_slice(&id.0);
                hash_part.copy_from_slice(&p.hash().0);
                len += 64;
            }
            if len == piece.len() {
                hasher.update(&piece);
                len = 0;
            }
        }
        hasher.update(piece.get(..len).unwrap_or_default());
        Hash(*hasher.finalize().as_bytes())
    }

    /// Whether `claimed` is this state's hash ([`ChannelState::hash`], v2). Moves signed over
    /// the v1 hash (the whole state encoded, before 2026-12-04) were accepted until 2026-12-07;
    /// no release ever wrote them, so they are refused now like any other wrong hash
    /// (`docs/protocol.md` §3).
    pub fn hashes_to(&self, claimed: &Hash) -> bool {
        self.hash() == *claimed
    }
}

/// One operation in a move. The sender of the move is the one doing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set how much the sender lets the receiver owe it in `currency` (`md{sender,receiver}`).
    /// The first limit in a currency opens it.
    SetLimit {
        /// The currency.
        currency: Currency,
        /// The new limit.
        limit: u64,
    },
    /// Freeze credit for one route of a payment (sent downstream, toward the seller).
    Request(Request),
    /// Pass the seller's answer upstream.
    Response {
        /// The request answered.
        request_id: RequestId,
        /// The answer.
        response: Response,
    },
    /// Unfreeze a request (sent upstream by the side that received it).
    Cancel {
        /// The request.
        request_id: RequestId,
    },
    /// Settle a request with both secrets (sent upstream): the payer's balance moves.
    Collect {
        /// The request.
        request_id: RequestId,
        /// The buyer's secret.
        src_plain_lock: PlainLock,
        /// The seller's secret.
        dest_plain_lock: PlainLock,
    },
}

impl Op {
    /// The request this operation is about, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Op::SetLimit { .. } => None,
            Op::Request(r) => Some(r.terms.request_id),
            Op::Response { request_id, .. }
            | Op::Cancel { request_id }
            | Op::Collect { request_id, .. } => Some(*request_id),
        }
    }
}

/// Why an operation was refused. The move that carries it is refused whole and the state is
/// left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// No limit was ever set in this currency between these friends.
    #[error("no credit line in {0}: one of you must set a limit in it first")]
    UnknownCurrency(Currency),
    /// Too many currencies.
    #[error("friends may keep at most {MAX_CURRENCIES_PER_FRIEND} currencies")]
    TooManyCurrencies,
    /// A limit below what is already owed.
    #[error(
        "the limit in {currency} can't go below {min}, which is already owed or frozen toward you (asked for {limit})"
    )]
    LimitBelowDebt {
        /// The currency.
        currency: Currency,
        /// The refused limit.
        limit: u64,
        /// The least limit allowed now.
        min: u64,
    },
    /// An amount outside the protocol's range.
    #[error("amount {0} is above the protocol maximum")]
    AmountOutOfRange(u64),
    /// The request's route does not pass from the sender to the receiver.
    #[error("the request's route does not go from the sender to the receiver of this move")]
    NotOnRoute,
    /// The request failed its own checks (bad buyer signature, bad route, ...). A mediator that
    /// changes a request to keep more than its fee lands here: the buyer's signature breaks.
    #[error("invalid request: {0}")]
    BadRequest(PaymentError),
    /// A request with this id is already pending.
    #[error("request {0:?} is already pending in this channel")]
    DuplicateRequest(RequestId),
    /// Too many pending requests.
    #[error("this channel already holds {MAX_PENDING_REQUESTS} pending requests")]
    TooManyPending,
    /// The request would break a limit (pending credit included).
    #[error("request for {amount} {currency} is over the limit: only {available} can be sent now")]
    OverLimit {
        /// The currency.
        currency: Currency,
        /// The amount of the request.
        amount: u64,
        /// What the sender could still send.
        available: u64,
    },
    /// No such pending request.
    #[error("no pending request {0:?} in this channel")]
    UnknownRequest(RequestId),
    /// Only the receiver of a request may answer, cancel or collect it.
    #[error("only the friend who received request {0:?} may answer, cancel or collect it")]
    WrongDirection(RequestId),
    /// The request already has a response.
    #[error("request {0:?} already has a response")]
    AlreadyAnswered(RequestId),
    /// The response is not the seller's.
    #[error("invalid response: {0}")]
    BadResponse(PaymentError),
    /// Collecting a request the seller never answered.
    #[error("request {0:?} can't be collected: the seller has not answered it")]
    CollectWithoutResponse(RequestId),
    /// A plain lock that does not open its hash.
    #[error("collect for {request_id:?} reveals a wrong {which} lock")]
    WrongLock {
        /// The request.
        request_id: RequestId,
        /// Which lock: "buyer's" or "seller's".
        which: &'static str,
    },
}

/// The two node ids of a channel in canonical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parties {
    /// The smaller id.
    pub first: NodeId,
    /// The larger id.
    pub second: NodeId,
}

impl Parties {
    /// The id of `side`.
    pub fn id(&self, side: Side) -> NodeId {
        match side {
            Side::First => self.first,
            Side::Second => self.second,
        }
    }
}

/// How the signatures inside operations (a request's buyer's, a response's seller's) are
/// checked when they are applied.
pub enum Signatures<'a> {
    /// Not at all: operations this node built itself from objects it already checked.
    Trusted,
    /// Each one, at once.
    Check,
    /// Put into a batch that the caller checks before it keeps the result.
    Batch(&'a mut SignatureBatch),
}

impl Signatures<'_> {
    /// The same, lent for one operation (a move applies several with one batch).
    pub fn reborrow(&mut self) -> Signatures<'_> {
        match self {
            Signatures::Trusted => Signatures::Trusted,
            Signatures::Check => Signatures::Check,
            Signatures::Batch(b) => Signatures::Batch(b),
        }
    }
}

impl ChannelState {
    /// Apply one operation done by `sender`. On error `self` may be partly changed: callers
    /// apply moves to a copy and keep it only if every operation succeeds.
    pub fn apply(
        &mut self,
        op: &Op,
        sender: Side,
        parties: &Parties,
        signatures: Signatures<'_>,
    ) -> Result<(), OpError> {
        match op {
            Op::SetLimit { currency, limit } => self.set_limit(currency, *limit, sender),
            Op::Request(request) => self.freeze(request, sender, parties, signatures),
            Op::Response {
                request_id,
                response,
            } => {
                let pending = self.answerable(request_id, sender)?;
                if pending.response.is_some() {
                    return Err(OpError::AlreadyAnswered(*request_id));
                }
                match signatures {
                    Signatures::Trusted => {}
                    Signatures::Check => response
                        .verify(&pending.request.terms)
                        .map_err(OpError::BadResponse)?,
                    Signatures::Batch(batch) => response
                        .check_into(&pending.request.terms, batch)
                        .map_err(OpError::BadResponse)?,
                }
                let mut answered = Pending::clone(pending);
                answered.response = Some(response.clone());
                self.pending
                    .insert(*request_id, SharedPending::new(answered));
                Ok(())
            }
            Op::Cancel { request_id } => {
                self.answerable(request_id, sender)?;
                self.unfreeze(request_id, false)
            }
            Op::Collect {
                request_id,
                src_plain_lock,
                dest_plain_lock,
            } => {
                let pending = self.answerable(request_id, sender)?;
                let response = pending
                    .response
                    .as_ref()
                    .ok_or(OpError::CollectWithoutResponse(*request_id))?;
                if src_plain_lock.hashed() != pending.request.terms.src_hashed_lock {
                    return Err(OpError::WrongLock {
                        request_id: *request_id,
                        which: "buyer's",
                    });
                }
                if dest_plain_lock.hashed() != response.dest_hashed_lock {
                    return Err(OpError::WrongLock {
                        request_id: *request_id,
                        which: "seller's",
                    });
                }
                self.unfreeze(request_id, true)
            }
        }
    }

    fn set_limit(&mut self, currency: &Currency, limit: u64, sender: Side) -> Result<(), OpError> {
        if limit > MAX_AMOUNT {
            return Err(OpError::AmountOutOfRange(limit));
        }
        if !self.lines.contains_key(currency) && self.lines.len() >= MAX_CURRENCIES_PER_FRIEND {
            return Err(OpError::TooManyCurrencies);
        }
        let line = self.lines.entry(*currency).or_default();
        let min = line.min_limit(sender);
        if limit < min {
            return Err(OpError::LimitBelowDebt {
                currency: *currency,
                limit,
                min,
            });
        }
        match sender {
            Side::First => line.limit_of_first = limit,
            Side::Second => line.limit_of_second = limit,
        }
        Ok(())
    }

    fn freeze(
        &mut self,
        request: &Request,
        sender: Side,
        parties: &Parties,
        signatures: Signatures<'_>,
    ) -> Result<(), OpError> {
        let terms = &request.terms;
        match signatures {
            Signatures::Trusted => terms.check(),
            Signatures::Check => request.verify(),
            Signatures::Batch(batch) => request.check_into(batch),
        }
        .map_err(OpError::BadRequest)?;
        let from = parties.id(sender);
        let to = parties.id(sender.other());
        let k = terms.position(&from).ok_or(OpError::NotOnRoute)?;
        if terms.route.get(k + 1) != Some(&to) {
            return Err(OpError::NotOnRoute);
        }
        if self.pending.contains_key(&terms.request_id) {
            return Err(OpError::DuplicateRequest(terms.request_id));
        }
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            return Err(OpError::TooManyPending);
        }
        let amount = terms
            .hop_amount(k)
            .ok_or(OpError::BadRequest(PaymentError::AmountOverflow))?;
        let line = self
            .lines
            .get_mut(&terms.currency)
            .ok_or(OpError::UnknownCurrency(terms.currency))?;
        let available = line.can_send(sender);
        let frozen = line.frozen_by(sender).checked_add(amount);
        match frozen {
            Some(f) if amount <= available && f <= MAX_FROZEN_PER_FRIEND => {
                *line.frozen_mut(sender) = f;
            }
            _ => {
                return Err(OpError::OverLimit {
                    currency: terms.currency,
                    amount,
                    available,
                });
            }
        }
        self.pending.insert(
            terms.request_id,
            SharedPending::new(Pending {
                request: request.clone(),
                payer: sender,
                amount,
                response: None,
            }),
        );
        Ok(())
    }

    /// The pending request `id`, if `sender` is the side that may answer it (its receiver).
    fn answerable(&self, id: &RequestId, sender: Side) -> Result<&SharedPending, OpError> {
        let pending = self.pending.get(id).ok_or(OpError::UnknownRequest(*id))?;
        if pending.payer == sender {
            return Err(OpError::WrongDirection(*id));
        }
        Ok(pending)
    }

    fn unfreeze(&mut self, id: &RequestId, settle: bool) -> Result<(), OpError> {
        let pending = self
            .pending
            .remove(id)
            .ok_or(OpError::UnknownRequest(*id))?;
        let currency = &pending.request.terms.currency;
        let line = self
            .lines
            .get_mut(currency)
            .ok_or(OpError::UnknownCurrency(*currency))?;
        let frozen = line.frozen_mut(pending.payer);
        // Cannot underflow: every pending amount was added to this sum when it was frozen.
        *frozen = frozen.saturating_sub(pending.amount);
        if settle {
            let amount = i128::from(pending.amount);
            match pending.payer {
                Side::First => line.balance -= amount,
                Side::Second => line.balance += amount,
            }
        }
        Ok(())
    }
}
