//! The channel between two friends: an ordered, hash-chained, signed log of moves.
//!
//! Moves alternate strictly between the friends, like a token passed back and forth: move 1 is
//! sent by the friend with the smaller id, move 2 by the other, and so on. A move carries a batch
//! of [`Op`]s, the hash of the move before it and the hash of the state after it, and is signed
//! by its sender. The receiver checks everything, recomputes the state and holds the token.
//!
//! - Duplicates and retransmits are recognised by counter and hash and change nothing.
//! - A move that does not extend this side's log (a fork) is answered by a resync offer.
//! - Any move's successor countersigns it, so the state before the last move is signed by both.
//!   [`Tip`] carries exactly that: the last state both signed plus the move after it, which
//!   anyone with both public keys can check offline ([`Tip::verify`]).

mod reset;
mod state;
mod stored;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub use self::reset::{ResetCertificate, ResetError, ResetProposal, ResetTerms};
pub use self::state::{
    ChannelState, CreditLine, Op, OpError, Parties, Pending, SharedPending, Side, Signatures,
};
pub use self::stored::{ChannelCore, CoreKey, StoredPending};
use super::bounds::MAX_OPS_PER_MOVE;
use super::identity::{Hash, Identity, NodeId, Signature, SignatureBatch};
use super::payment::RequestId;

const MOVE_DOMAIN: &str = "offst move v1";

/// What a move's signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveHeader {
    /// Which channel (hash of both ids).
    pub channel: Hash,
    /// Which epoch of the channel (0, or the number of manual resets).
    pub epoch: u64,
    /// Position in the log, from 1.
    pub counter: u64,
    /// Hash of the previous header (or the channel's genesis hash).
    pub prev: Hash,
    /// Hash of the operations.
    pub ops_hash: Hash,
    /// Hash of the state after the operations.
    pub state_hash: Hash,
}

impl MoveHeader {
    /// The hash the next move chains to.
    pub fn hash(&self) -> Hash {
        Hash::of("offst move header v1", self)
    }
}

/// A header with its sender's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeader {
    /// The header.
    pub header: MoveHeader,
    /// The sender's signature.
    pub signature: Signature,
}

/// One move: operations, header, signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The header.
    pub header: MoveHeader,
    /// The operations, applied in order.
    pub ops: Vec<Op>,
    /// The sender's signature over the header.
    pub signature: Signature,
}

impl Move {
    fn signed_header(&self) -> SignedHeader {
        SignedHeader {
            header: self.header.clone(),
            signature: self.signature,
        }
    }
}

/// The end of one friend's log: the last state both friends signed, the header that state
/// belongs to, and the move after it (signed by its sender, countersigning that header).
///
/// Used to resync and to export a debt note that stands on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    /// The state before `last` (signed by both friends once `last` exists).
    pub prev_state: ChannelState,
    /// The header of the move that produced `prev_state` (`None` at the genesis).
    pub prev_header: Option<SignedHeader>,
    /// The last move (`None` when no move was made in this epoch).
    pub last: Option<Move>,
    /// The certificate that started this epoch (`None` in epoch 0).
    pub reset: Option<ResetCertificate>,
}

impl Tip {
    /// Check a tip offline with nothing but the two friends' ids: both signatures, the chain,
    /// and the last move's operations. On success [`Tip::mutually_signed_state`] is a debt note
    /// both friends signed.
    pub fn verify(&self, a: NodeId, b: NodeId) -> Result<TipView, ChannelError> {
        Channel::new(a, b).verify_tip(self)
    }

    /// The last state both friends signed: the state before the last move (the last move
    /// countersigns it). `None` before any move.
    pub fn mutually_signed_state(&self) -> Option<&ChannelState> {
        match (&self.last, &self.reset) {
            (Some(_), _) => Some(&self.prev_state),
            (None, Some(cert)) => Some(&cert.terms.state),
            (None, None) => None,
        }
    }

    /// The epoch this tip belongs to.
    pub fn epoch(&self) -> u64 {
        self.reset.as_ref().map_or(0, |c| c.terms.epoch)
    }
}

impl Move {
    /// Sign a move as given, without checking its operations. For tests of hostile input and
    /// for tools; honest code builds moves with [`Channel::build_move`].
    pub fn sign_unchecked(identity: &Identity, header: MoveHeader, ops: Vec<Op>) -> Move {
        let signature = identity.sign(MOVE_DOMAIN, &header);
        Move {
            header,
            ops,
            signature,
        }
    }

    /// The hash of a list of operations, as a header carries it.
    pub fn ops_hash(ops: &[Op]) -> Hash {
        ops_hash(ops)
    }
}

/// A verified tip: where it leaves the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TipView {
    /// The epoch.
    pub epoch: u64,
    /// Counter of the last move.
    pub counter: u64,
    /// Hash of the last header.
    pub last_hash: Hash,
    /// The state after the last move.
    pub state: ChannelState,
}

/// Why a move or a tip was refused. The channel is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The move belongs to another channel.
    #[error("this move belongs to another channel")]
    WrongChannel,
    /// The signature is not the sender's.
    #[error("move {counter} is not signed by {signer}")]
    BadSignature {
        /// The move.
        counter: u64,
        /// Who should have signed it.
        signer: NodeId,
    },
    /// More operations than allowed.
    #[error("a move carries at most {MAX_OPS_PER_MOVE} operations, this one has {0}")]
    TooManyOps(usize),
    /// The operations do not hash to the header's value.
    #[error("move {0}'s operations do not match its header")]
    OpsHashMismatch(u64),
    /// An operation was refused.
    #[error("operation {index} of move {counter} refused: {error}")]
    Op {
        /// The move.
        counter: u64,
        /// Index of the operation in the move.
        index: usize,
        /// Why.
        error: OpError,
    },
    /// Applying the operations gives another state than the one the sender signed.
    #[error("move {0} claims a state that its operations do not produce")]
    StateHashMismatch(u64),
    /// A tip whose parts do not chain together.
    #[error("resync offer is inconsistent: {0}")]
    BadTip(&'static str),
    /// A move from an epoch that a manual reset closed.
    #[error("move from epoch {epoch}, but this channel was reset to epoch {current}")]
    OldEpoch {
        /// The move's epoch.
        epoch: u64,
        /// The channel's epoch.
        current: u64,
    },
    /// A reset certificate in a tip did not verify.
    #[error("resync offer carries an invalid reset: {0}")]
    BadReset(ResetError),
    /// A copy of a move already applied (a retransmission or a replay). Ignored.
    #[error("move {counter} was already applied; this copy is ignored")]
    Replayed {
        /// The move's counter.
        counter: u64,
    },
}

/// What became of a received move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Applied; the token is now ours. The operations are returned for the node to act on.
    Applied(Vec<Op>),
    /// The move does not extend our log: the friends disagree and must resync.
    OutOfStep,
}

/// What became of a resync offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferOutcome {
    /// Both logs end at the same move.
    InSync,
    /// Their tip was further along and is now ours. `requeued` operations of our own discarded
    /// move were put back in the queue.
    Adopted {
        /// Operations put back in the queue.
        requeued: usize,
        /// Operations of the friend's last move, which we had not seen: act on them as if the
        /// move had just arrived.
        new_ops: Vec<Op>,
    },
    /// Our tip is further along; send it to them.
    OursIsAhead,
}

/// What building a move gave.
#[derive(Debug, Default)]
pub struct Built {
    /// The move to send, if any.
    pub message: Option<Move>,
    /// Queued operations that no longer applied and were left out, with the reason.
    pub dropped: Vec<(Op, OpError)>,
}

/// One friend's view of the channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    local: NodeId,
    parties: Parties,
    id: Hash,
    tip: Tip,
    state: ChannelState,
    queue: VecDeque<Op>,
    token_requested: bool,
    peer_waiting: bool,
    confirmed: bool,
    /// Which pending requests' stored rows the moves since the store last looked may have
    /// changed (see [`Touched`]). Not part of the channel's value: never encoded, never
    /// compared.
    #[serde(skip)]
    touched: Touched,
}

/// The pending requests whose stored row (see [`StoredPending`]) may differ from what the
/// store last wrote, so that a step compares those instead of every request under way.
///
/// The rows hold the signed state's requests (the tip's previous state). That state changes
/// only when the channel advances by a move, and then by the previous move's operations (the
/// signed state becomes the old current one, which is the previous signed state with the
/// previous move applied). So each advance adds the request ids of the move it leaves behind.
/// Anything else that replaces the states (a reset, an adopted tip, a channel built or
/// decoded) makes it [`Touched::all`]: the next look compares everything.
#[derive(Clone, Debug, Default)]
pub(crate) struct Touched(Option<Vec<RequestId>>);

impl Touched {
    /// Past this many ids a full comparison is as cheap: the list is dropped.
    const MAX: usize = 4096;

    /// Every request may have changed.
    fn all() -> Touched {
        Touched(None)
    }

    /// Add the requests `ops` are about.
    fn add(&mut self, ops: &[Op]) {
        if let Some(ids) = &mut self.0 {
            ids.extend(ops.iter().filter_map(Op::request_id));
            if ids.len() > Touched::MAX {
                self.0 = None;
            }
        }
    }

    /// The ids touched since the last call, sorted and without repeats (`None`: every
    /// request may have changed); starts a new list.
    pub(crate) fn take(&mut self) -> Option<Vec<RequestId>> {
        let mut ids = self.0.replace(Vec::new())?;
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }
}

/// Bookkeeping, not a value: two channels that differ only in it are equal.
impl PartialEq for Touched {
    fn eq(&self, _: &Touched) -> bool {
        true
    }
}

impl Eq for Touched {}

impl Channel {
    /// A new channel between `local` and `remote`, at the genesis.
    pub fn new(local: NodeId, remote: NodeId) -> Channel {
        let (first, second) = if local < remote {
            (local, remote)
        } else {
            (remote, local)
        };
        let parties = Parties { first, second };
        Channel {
            local,
            parties,
            id: Hash::of("offst channel v1", &(first, second)),
            tip: Tip {
                prev_state: ChannelState::default(),
                prev_header: None,
                last: None,
                reset: None,
            },
            state: ChannelState::default(),
            queue: VecDeque::new(),
            token_requested: false,
            peer_waiting: false,
            confirmed: true,
            touched: Touched::all(),
        }
    }

    /// This side.
    pub fn local_side(&self) -> Side {
        if self.local == self.parties.first {
            Side::First
        } else {
            Side::Second
        }
    }

    /// The friend.
    pub fn remote(&self) -> NodeId {
        self.parties.id(self.local_side().other())
    }

    /// Both ids in canonical order.
    pub fn parties(&self) -> &Parties {
        &self.parties
    }

    /// The channel id.
    pub fn id(&self) -> Hash {
        self.id
    }

    /// The current state (after the last move, ours or theirs).
    pub fn state(&self) -> &ChannelState {
        &self.state
    }

    /// The current tip, to send in a resync offer or to export.
    pub fn tip(&self) -> &Tip {
        &self.tip
    }

    /// Counter of the last move.
    pub fn counter(&self) -> u64 {
        self.tip.last.as_ref().map_or(0, |m| m.header.counter)
    }

    /// Hash of the last header (the genesis hash before any move).
    pub fn last_hash(&self) -> Hash {
        self.tip.last.as_ref().map_or_else(
            || genesis_hash(&self.id, self.tip.reset.as_ref()),
            |m| m.header.hash(),
        )
    }

    /// Who signs move `counter`.
    pub fn signer(&self, counter: u64) -> Side {
        if counter % 2 == 1 {
            Side::First
        } else {
            Side::Second
        }
    }

    /// Whether we may send the next move.
    pub fn holds_token(&self) -> bool {
        self.signer(self.counter() + 1) == self.local_side()
    }

    /// Operations waiting for the token.
    pub fn queue(&self) -> &VecDeque<Op> {
        &self.queue
    }

    /// Queue an operation to send with our next move.
    pub fn enqueue(&mut self, op: Op) {
        self.queue.push_back(op);
    }

    /// Queue an operation ahead of the first queued operation about the same request (at the
    /// back if there is none): an answer must go before the collect that needs it.
    pub fn enqueue_before_same_request(&mut self, op: Op) {
        let id = op.request_id();
        match self
            .queue
            .iter()
            .position(|q| id.is_some() && q.request_id() == id)
        {
            Some(i) => self.queue.insert(i, op),
            None => self.queue.push_back(op),
        }
    }

    /// Whether we asked the friend for the token and are waiting for it.
    pub fn token_requested(&self) -> bool {
        self.token_requested
    }

    /// Remember that we asked for the token.
    pub fn set_token_requested(&mut self) {
        self.token_requested = true;
    }

    /// The friend asked for the token before their last move reached us (messages reorder):
    /// pass it back as soon as that move arrives.
    pub fn set_peer_waiting(&mut self) {
        self.peer_waiting = true;
    }

    /// Whether the friend is waiting for the token; clears the mark.
    pub fn take_peer_waiting(&mut self) -> bool {
        std::mem::take(&mut self.peer_waiting)
    }

    /// Whether the friend confirmed our log since we were restored from a backup.
    pub fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// Mark the log as unconfirmed (after a restore): nothing is reconciled until the friend
    /// answers our resync offer.
    pub fn set_unconfirmed(&mut self) {
        self.confirmed = false;
    }

    /// Our last move, if the last move is ours (for retransmission).
    pub fn last_own_move(&self) -> Option<&Move> {
        let last = self.tip.last.as_ref()?;
        (self.signer(last.header.counter) == self.local_side()).then_some(last)
    }

    /// Build and sign our next move from the queue (at most [`MAX_OPS_PER_MOVE`] operations).
    ///
    /// No move is built when we do not hold the token, or when nothing applies and `force` is
    /// off. With `force` an empty move is built: it passes the token and countersigns the
    /// friend's last move.
    pub fn build_move(&mut self, identity: &Identity, force: bool) -> Built {
        if !self.holds_token() {
            return Built::default();
        }
        let side = self.local_side();
        let mut state = self.state.clone();
        let mut ops = Vec::new();
        let mut dropped = Vec::new();
        while ops.len() < MAX_OPS_PER_MOVE {
            let Some(op) = self.queue.pop_front() else {
                break;
            };
            match state.apply(&op, side, &self.parties, Signatures::Trusted) {
                Ok(()) => ops.push(op),
                Err(e) => {
                    // A failed apply may have touched `state`; rebuild it from what was kept.
                    state = self.state.clone();
                    for kept in &ops {
                        // Re-applying operations that just succeeded in the same order succeeds.
                        let _ = state.apply(kept, side, &self.parties, Signatures::Trusted);
                    }
                    dropped.push((op, e));
                }
            }
        }
        if ops.is_empty() && !force {
            return Built {
                message: None,
                dropped,
            };
        }
        let header = MoveHeader {
            channel: self.id,
            epoch: self.epoch(),
            counter: self.counter() + 1,
            prev: self.last_hash(),
            ops_hash: ops_hash(&ops),
            state_hash: state.hash(),
        };
        let signature = identity.sign(MOVE_DOMAIN, &header);
        let message = Move {
            header,
            ops,
            signature,
        };
        self.advance(message.clone(), state);
        Built {
            message: Some(message),
            dropped,
        }
    }

    fn advance(&mut self, m: Move, new_state: ChannelState) {
        // The signed state becomes the old current one: the last move's operations applied.
        if let Some(last) = &self.tip.last {
            self.touched.add(&last.ops);
        }
        let prev_state = std::mem::replace(&mut self.state, new_state);
        let prev_header = self.tip.last.take().map(|l| l.signed_header());
        self.tip = Tip {
            prev_state,
            prev_header,
            last: Some(m),
            reset: self.tip.reset.take(),
        };
    }

    /// The epoch: 0, or the number of manual resets.
    pub fn epoch(&self) -> u64 {
        self.tip.epoch()
    }

    /// The terms of a reset to our current view of the state, in the next epoch.
    pub fn reset_terms(&self) -> ResetTerms {
        ResetTerms {
            channel: self.id,
            epoch: self.epoch() + 1,
            state: self.state.clone(),
        }
    }

    /// Start the epoch a certificate signed by both friends opens. Our queue is kept and checked
    /// again when we next hold the token.
    pub fn apply_reset(&mut self, cert: ResetCertificate) -> Result<(), ResetError> {
        cert.verify(&self.id, &self.parties)?;
        let expected = self.epoch() + 1;
        if cert.terms.epoch != expected {
            return Err(ResetError::WrongEpoch {
                got: cert.terms.epoch,
                expected,
            });
        }
        self.state = cert.terms.state.clone();
        self.touched = Touched::all();
        self.tip = Tip {
            prev_state: cert.terms.state.clone(),
            prev_header: None,
            last: None,
            reset: Some(cert),
        };
        self.token_requested = false;
        self.peer_waiting = false;
        self.confirmed = true;
        Ok(())
    }

    /// Take a move from the friend.
    pub fn receive_move(&mut self, m: Move) -> Result<Received, ChannelError> {
        if m.header.channel != self.id {
            return Err(ChannelError::WrongChannel);
        }
        let epoch = self.epoch();
        if m.header.epoch < epoch {
            return Err(ChannelError::OldEpoch {
                epoch: m.header.epoch,
                current: epoch,
            });
        }
        if m.header.epoch > epoch {
            // The friend is in an epoch we have not seen the certificate of yet.
            return Ok(Received::OutOfStep);
        }
        let c = self.counter();
        let n = m.header.counter;
        if n <= c {
            let known = if n == c {
                Some(self.last_hash())
            } else if n + 1 == c {
                self.tip.prev_header.as_ref().map(|h| h.header.hash())
            } else {
                // Older than anything we keep: a late copy of history.
                return Err(ChannelError::Replayed { counter: n });
            };
            if known == Some(m.header.hash()) {
                return Err(ChannelError::Replayed { counter: n });
            }
            return Ok(Received::OutOfStep);
        }
        if n > c + 1 || self.signer(n) == self.local_side() || m.header.prev != self.last_hash() {
            return Ok(Received::OutOfStep);
        }
        let state = self.check_move(&self.state, &m)?;
        self.advance(m.clone(), state);
        self.token_requested = false;
        self.confirmed = true;
        Ok(Received::Applied(m.ops))
    }

    /// The state `m` makes of `from`, if `m` is valid. Every signature in the move (its own,
    /// its requests' and its responses') is checked in one batch; only when something fails
    /// is the move checked again one signature at a time, which names the first thing wrong.
    /// Both agree on what is valid (`SignatureBatch`).
    fn check_move(&self, from: &ChannelState, m: &Move) -> Result<ChannelState, ChannelError> {
        let mut batch = SignatureBatch::new();
        if let Ok(state) = self.check_move_with(from, m, Some(&mut batch))
            && batch.verify()
        {
            return Ok(state);
        }
        self.check_move_with(from, m, None)
    }

    /// Check `m` against `from`: its signatures into `batch` (which the caller checks before
    /// it keeps the result), or each at once without one.
    fn check_move_with(
        &self,
        from: &ChannelState,
        m: &Move,
        mut batch: Option<&mut SignatureBatch>,
    ) -> Result<ChannelState, ChannelError> {
        let counter = m.header.counter;
        let sender = self.signer(counter);
        let signer_id = self.parties.id(sender);
        if m.ops.len() > MAX_OPS_PER_MOVE {
            return Err(ChannelError::TooManyOps(m.ops.len()));
        }
        match batch.as_deref_mut() {
            Some(b) => b.queue(&signer_id, MOVE_DOMAIN, &m.header, &m.signature),
            None => signer_id
                .verify(MOVE_DOMAIN, &m.header, &m.signature)
                .map_err(|_| ChannelError::BadSignature {
                    counter,
                    signer: signer_id,
                })?,
        }
        if ops_hash(&m.ops) != m.header.ops_hash {
            return Err(ChannelError::OpsHashMismatch(counter));
        }
        let signatures = match batch {
            Some(b) => Signatures::Batch(b),
            None => Signatures::Check,
        };
        self.apply_move(from, m, signatures)
    }

    /// `from` with `m`'s operations applied by its signer, their signatures handled as
    /// `signatures` says, and checked against the state hash `m` signed. The one place a
    /// move's operations are applied to a state: to check a move, and to read a stored channel
    /// again (`ChannelCore::join_signed`, its signatures trusted).
    fn apply_move(
        &self,
        from: &ChannelState,
        m: &Move,
        mut signatures: Signatures<'_>,
    ) -> Result<ChannelState, ChannelError> {
        let counter = m.header.counter;
        let sender = self.signer(counter);
        let mut state = from.clone();
        for (index, op) in m.ops.iter().enumerate() {
            state
                .apply(op, sender, &self.parties, signatures.reborrow())
                .map_err(|error| ChannelError::Op {
                    counter,
                    index,
                    error,
                })?;
        }
        if !state.hashes_to(&m.header.state_hash) {
            return Err(ChannelError::StateHashMismatch(counter));
        }
        Ok(state)
    }

    /// Check a tip offline: both signatures, the chain, and that the last move's operations
    /// turn the signed state into the claimed one.
    pub fn verify_tip(&self, tip: &Tip) -> Result<TipView, ChannelError> {
        let (epoch, genesis_state) = match &tip.reset {
            None => (0, ChannelState::default()),
            Some(cert) => {
                cert.verify(&self.id, &self.parties)
                    .map_err(ChannelError::BadReset)?;
                if cert.terms.epoch == 0 {
                    return Err(ChannelError::BadTip("a reset starts epoch 1 or later"));
                }
                (cert.terms.epoch, cert.terms.state.clone())
            }
        };
        let genesis = genesis_hash(&self.id, tip.reset.as_ref());
        let Some(last) = &tip.last else {
            if tip.prev_header.is_some() || tip.prev_state != genesis_state {
                return Err(ChannelError::BadTip(
                    "a tip with no move must be the genesis",
                ));
            }
            return Ok(TipView {
                epoch,
                counter: 0,
                last_hash: genesis,
                state: genesis_state,
            });
        };
        if last.header.channel != self.id {
            return Err(ChannelError::WrongChannel);
        }
        if last.header.epoch != epoch {
            return Err(ChannelError::BadTip("the last move is from another epoch"));
        }
        let counter = last.header.counter;
        match (&tip.prev_header, counter) {
            (None, 1) => {
                if tip.prev_state != genesis_state || last.header.prev != genesis {
                    return Err(ChannelError::BadTip("move 1 must follow the genesis"));
                }
            }
            (Some(prev), c) if c >= 2 => {
                let pc = prev.header.counter;
                if pc + 1 != c || prev.header.channel != self.id || prev.header.epoch != epoch {
                    return Err(ChannelError::BadTip("headers are not consecutive"));
                }
                let signer = self.parties.id(self.signer(pc));
                signer
                    .verify(MOVE_DOMAIN, &prev.header, &prev.signature)
                    .map_err(|_| ChannelError::BadSignature {
                        counter: pc,
                        signer,
                    })?;
                if !tip.prev_state.hashes_to(&prev.header.state_hash) {
                    return Err(ChannelError::BadTip("state does not match its header"));
                }
                if last.header.prev != prev.header.hash() {
                    return Err(ChannelError::BadTip(
                        "last move does not chain to its header",
                    ));
                }
            }
            _ => return Err(ChannelError::BadTip("headers are not consecutive")),
        }
        let state = self.check_move(&tip.prev_state, last)?;
        Ok(TipView {
            epoch,
            counter,
            last_hash: last.header.hash(),
            state,
        })
    }

    /// Take the friend's resync offer. The tip further along wins; at equal counters the version
    /// held by the friend who *received* that move wins, because its signer cannot disown it.
    /// Either way the result is a state both signed plus one valid move.
    pub fn receive_offer(&mut self, theirs: Tip) -> Result<OfferOutcome, ChannelError> {
        let view = self.verify_tip(&theirs)?;
        // The friend was out of step: a token request we sent may have been lost with its old
        // state. Forget that we asked, so that we ask again if we still need the token.
        self.token_requested = false;
        let (epoch, c, ours) = (self.epoch(), self.counter(), self.last_hash());
        if view.epoch == epoch && view.counter == c && view.last_hash == ours {
            self.confirmed = true;
            return Ok(OfferOutcome::InSync);
        }
        // A later epoch wins outright: both friends signed its start.
        let theirs_wins = view.epoch > epoch
            || (view.epoch == epoch
                && (view.counter > c
                    || (view.counter == c && self.signer(c) == self.local_side())));
        if !theirs_wins {
            return Ok(OfferOutcome::OursIsAhead);
        }
        // Our own move that their log does not contain goes back in the queue, to be checked
        // again when we next hold the token.
        let mut requeued = 0;
        if let Some(own) = self
            .last_own_move()
            .filter(|m| m.header.epoch == view.epoch)
        {
            let in_theirs = theirs
                .last
                .as_ref()
                .is_some_and(|m| m.header.hash() == own.header.hash())
                || theirs
                    .prev_header
                    .as_ref()
                    .is_some_and(|h| h.header.hash() == own.header.hash());
            if !in_theirs && own.header.counter >= view.counter.saturating_sub(1) {
                let ops = own.ops.clone();
                requeued = ops.len();
                for op in ops.into_iter().rev() {
                    self.queue.push_front(op);
                }
            }
        }
        let remote = self.local_side().other();
        let new_ops = theirs
            .last
            .as_ref()
            .filter(|m| self.signer(m.header.counter) == remote)
            .map(|m| m.ops.clone())
            .unwrap_or_default();
        self.tip = theirs;
        self.state = view.state;
        self.touched = Touched::all();
        self.token_requested = false;
        self.confirmed = true;
        Ok(OfferOutcome::Adopted { requeued, new_ops })
    }
}

/// The hash move 1 of an epoch chains to: the channel, and the certificate that opened the
/// epoch (none for epoch 0).
fn genesis_hash(channel: &Hash, reset: Option<&ResetCertificate>) -> Hash {
    match reset {
        None => Hash::of("offst channel genesis v1", channel),
        Some(cert) => Hash::of("offst channel genesis v1", &(channel, cert.hash())),
    }
}

fn ops_hash(ops: &[Op]) -> Hash {
    Hash::of("offst ops v1", &ops)
}
