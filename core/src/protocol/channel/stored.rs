//! A channel as a store keeps it: the channel without its pending requests (small, rewritten at
//! every step that touches the channel) and each pending request as its own row.
//!
//! Why: a channel holds every request still under way, twice (in the current state and in the
//! last state both friends signed), each about half a kilobyte with its signatures. Written
//! whole, a channel with a hundred payments under way costs about 100 KB at every step; split,
//! a step writes only the requests it changed.
//!
//! Since part format 5 the rows hold the signed state's requests only (the tip's previous
//! state): the current state is the signed state with the last move applied, and the last move
//! is in the channel's own part already. A request is then written once when it enters the
//! signed state and deleted when it leaves it, instead of also when a move froze it and when a
//! move settled it (three writes and a delete per request on each side of each hop, before).
//! Reading a channel replays its last move over the signed state and checks the result against
//! the move's signed state hash. Rows of formats 2–4 (where each row says where its request
//! stands in both states) are still read, and rewritten in the new form by the first step that
//! touches their channel.
//!
//! The queue of operations waiting for the channel's turn is stored the same way, one row per
//! operation (part format 3): a busy channel's queue holds tens of requests and changes at
//! nearly every step; written inside the channel it was two thirds of the bytes a step wrote
//! for its channels (`docs/benchmarks.md`).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Channel, ChannelState, CreditLine, Move, Op, Parties, SignedHeader, Tip};
use super::{ResetCertificate, SharedPending, Side};
use crate::protocol::amount::Currency;
use crate::protocol::identity::{Hash, NodeId};
use crate::protocol::payment::RequestId;

/// A pending request as stored beside its channel. Since part format 5 every row is
/// [`StoredPending::Signed`], the request as the signed state holds it (see the module's
/// documentation); rows of formats 2–4 say where it stands in both states. Encoded as the
/// [`super::Pending`]s it holds; held, it shares them with the channel's states, so comparing
/// it with the channel costs a pointer comparison per request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredPending {
    /// The same in both states.
    Both(SharedPending),
    /// Only in the current state (the last move froze it).
    Current(SharedPending),
    /// Only in the signed state (the last move settled it).
    Signed(SharedPending),
    /// In both, changed by the last move (answered).
    Differ {
        /// In the current state.
        current: SharedPending,
        /// In the signed state.
        signed: SharedPending,
    },
}

/// What a store writes for the channel itself (part format 3): everything but the pending
/// requests and the queued operations, which are rows of their own. The same fields as
/// [`Channel`], in the same order, with each state's credit lines only.
#[derive(Serialize)]
struct CoreRef<'a> {
    local: &'a NodeId,
    parties: &'a Parties,
    id: &'a Hash,
    signed_lines: &'a BTreeMap<Currency, CreditLine>,
    prev_header: &'a Option<SignedHeader>,
    last: &'a Option<Move>,
    reset: &'a Option<ResetCertificate>,
    lines: &'a BTreeMap<Currency, CreditLine>,
    token_requested: bool,
    peer_waiting: bool,
    confirmed: bool,
}

/// A channel read back from a store, waiting for its pending requests and queued operations
/// ([`ChannelCore::join`]).
#[derive(Debug, Deserialize)]
pub struct ChannelCore {
    local: NodeId,
    parties: Parties,
    id: Hash,
    signed_lines: BTreeMap<Currency, CreditLine>,
    prev_header: Option<SignedHeader>,
    last: Option<Move>,
    reset: Option<ResetCertificate>,
    lines: BTreeMap<Currency, CreditLine>,
    /// Not in format 3 (rows of their own); format 2 kept the queue here.
    #[serde(skip)]
    queue: VecDeque<Op>,
    token_requested: bool,
    peer_waiting: bool,
    confirmed: bool,
}

/// Format 2 of [`ChannelCore`]: the queue inside, between the lines and the flags.
#[derive(Deserialize)]
struct CoreV2 {
    local: NodeId,
    parties: Parties,
    id: Hash,
    signed_lines: BTreeMap<Currency, CreditLine>,
    prev_header: Option<SignedHeader>,
    last: Option<Move>,
    reset: Option<ResetCertificate>,
    lines: BTreeMap<Currency, CreditLine>,
    queue: VecDeque<Op>,
    token_requested: bool,
    peer_waiting: bool,
    confirmed: bool,
}

impl ChannelCore {
    /// The friend.
    pub fn remote(&self) -> NodeId {
        let side = if self.local == self.parties.first {
            Side::First
        } else {
            Side::Second
        };
        self.parties.id(side.other())
    }

    /// Both ids in canonical order.
    pub fn parties(&self) -> &Parties {
        &self.parties
    }

    /// The channel of a part of format 5 or later: its signed state's pending requests from
    /// `rows` (each [`StoredPending::Signed`]), its current state's by applying the last move
    /// to the signed state, and `queued` (the queue's rows, in order). Refuses rows of another
    /// form, a last move that does not apply, and a result that is not the state the move
    /// signed or whose credit lines are not the stored ones: the store is damaged.
    pub fn join_signed(
        self,
        rows: impl IntoIterator<Item = (RequestId, StoredPending)>,
        queued: impl IntoIterator<Item = Op>,
    ) -> Result<Channel, String> {
        let mut signed = BTreeMap::new();
        for (id, row) in rows {
            let StoredPending::Signed(p) = row else {
                return Err(format!(
                    "the row of request {id} says more than the signed state"
                ));
            };
            signed.insert(id, p);
        }
        // The current state's requests come from the replay below; its credit lines are
        // the stored ones, which the replay must give too.
        let mut ch = self.join_states(BTreeMap::new(), signed, queued);
        let state = match &ch.tip.last {
            Some(last) => ch
                .apply_move(&ch.tip.prev_state, last, super::Signatures::Trusted)
                .map_err(|e| format!("the last move does not give the state it signed: {e}"))?,
            None => ch.tip.prev_state.clone(),
        };
        if state.lines != ch.state.lines {
            return Err("the current credit lines are not the last move's".into());
        }
        ch.state = state;
        Ok(ch)
    }

    /// The channel of a part of formats 2–4, with its pending requests put back in both states
    /// as each row says, and `queued` (the queue's rows, in order) after whatever queue the
    /// core itself held (format 2).
    pub fn join(
        self,
        rows: impl IntoIterator<Item = (RequestId, StoredPending)>,
        queued: impl IntoIterator<Item = Op>,
    ) -> Channel {
        let mut current = BTreeMap::new();
        let mut signed = BTreeMap::new();
        for (id, row) in rows {
            match row {
                StoredPending::Both(p) => {
                    current.insert(id, p.clone());
                    signed.insert(id, p);
                }
                StoredPending::Current(p) => {
                    current.insert(id, p);
                }
                StoredPending::Signed(p) => {
                    signed.insert(id, p);
                }
                StoredPending::Differ {
                    current: c,
                    signed: s,
                } => {
                    current.insert(id, c);
                    signed.insert(id, s);
                }
            }
        }
        self.join_states(current, signed, queued)
    }

    /// The channel with `current` and `signed` as its states' pending requests.
    fn join_states(
        self,
        current: BTreeMap<RequestId, SharedPending>,
        signed: BTreeMap<RequestId, SharedPending>,
        queued: impl IntoIterator<Item = Op>,
    ) -> Channel {
        let mut queue = self.queue;
        queue.extend(queued);
        Channel {
            local: self.local,
            parties: self.parties,
            id: self.id,
            tip: Tip {
                prev_state: ChannelState {
                    lines: self.signed_lines,
                    pending: signed,
                },
                prev_header: self.prev_header,
                last: self.last,
                reset: self.reset,
            },
            state: ChannelState {
                lines: self.lines,
                pending: current,
            },
            queue,
            token_requested: self.token_requested,
            peer_waiting: self.peer_waiting,
            confirmed: self.confirmed,
            touched: super::Touched::all(),
        }
    }
}

/// What [`Channel::encode_core`] writes depends on, in short: the last move's hash and the
/// channel's flags. Everything else in the core (both states' credit lines, the last move, the
/// header before it, the reset that opened the epoch) changes only with a new last move (a
/// move made or received, an adopted tip, a reset), and the last move's hash commits to all of
/// it. So a step that changed only a channel's queue leaves its core as the store has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreKey {
    last_hash: Hash,
    token_requested: bool,
    peer_waiting: bool,
    confirmed: bool,
}

impl Channel {
    /// The key of what [`Channel::encode_core`] would write now: equal keys, equal bytes.
    pub fn core_key(&self) -> CoreKey {
        CoreKey {
            last_hash: self.last_hash(),
            token_requested: self.token_requested,
            peer_waiting: self.peer_waiting,
            confirmed: self.confirmed,
        }
    }

    /// The channel without its pending requests, encoded after `prefix` (see
    /// [`ChannelCore`]).
    pub fn encode_core(&self, prefix: &[u8]) -> Vec<u8> {
        let core = CoreRef {
            local: &self.local,
            parties: &self.parties,
            id: &self.id,
            signed_lines: &self.tip.prev_state.lines,
            prev_header: &self.tip.prev_header,
            last: &self.tip.last,
            reset: &self.tip.reset,
            lines: &self.state.lines,
            token_requested: self.token_requested,
            peer_waiting: self.peer_waiting,
            confirmed: self.confirmed,
        };
        // Encoding our own values into a Vec cannot fail (see `canonical_bytes`).
        crate::protocol::identity::encode_after(&[prefix], &core).unwrap_or_default()
    }

    /// Read back what [`Channel::encode_core`] wrote (`version` 3), or format 2, which kept the
    /// queue inside.
    pub fn decode_core(version: u8, bytes: &[u8]) -> Result<ChannelCore, postcard::Error> {
        if version >= 3 {
            return crate::protocol::identity::decode(bytes);
        }
        let v2: CoreV2 = crate::protocol::identity::decode(bytes)?;
        Ok(ChannelCore {
            local: v2.local,
            parties: v2.parties,
            id: v2.id,
            signed_lines: v2.signed_lines,
            prev_header: v2.prev_header,
            last: v2.last,
            reset: v2.reset,
            lines: v2.lines,
            queue: v2.queue,
            token_requested: v2.token_requested,
            peer_waiting: v2.peer_waiting,
            confirmed: v2.confirmed,
        })
    }

    /// Every pending request as a store keeps it (format 5): the signed state's, in request
    /// order.
    pub fn pending_rows(&self) -> Vec<(RequestId, StoredPending)> {
        self.tip
            .prev_state
            .pending
            .iter()
            .map(|(id, p)| (*id, StoredPending::Signed(p.clone())))
            .collect()
    }

    /// Bring `stored` (what the store holds for this channel) up to date, and say which rows
    /// changed: `true` when `stored[id]` is to be written, `false` when it is to be deleted.
    /// The rows are the signed state's requests (format 5).
    ///
    /// With `since_stored`, `stored` is what this channel's rows were when this was last
    /// called on it: only the requests the moves since touched are compared (see
    /// [`super::Touched`]). Without, or when the channel cannot say (it was reset, adopted a
    /// tip, or was built or decoded since), every request and every row is compared: the first
    /// look after a load (which also rewrites rows of an older format) or after the store was
    /// emptied.
    pub fn update_pending_rows(
        &mut self,
        stored: &mut BTreeMap<RequestId, StoredPending>,
        since_stored: bool,
    ) -> Vec<(RequestId, bool)> {
        let touched = self.touched.take();
        let Some(ids) = touched.filter(|_| since_stored) else {
            return self.compare_all_pending_rows(stored);
        };
        let mut changed = Vec::new();
        for id in ids {
            self.compare_pending_row(id, stored, &mut changed);
        }
        changed
    }

    /// [`Channel::update_pending_rows`] comparing every request and every row.
    fn compare_all_pending_rows(
        &self,
        stored: &mut BTreeMap<RequestId, StoredPending>,
    ) -> Vec<(RequestId, bool)> {
        let mut ids: Vec<RequestId> = stored.keys().copied().collect();
        ids.extend(self.tip.prev_state.pending.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        let mut changed = Vec::new();
        for id in ids {
            self.compare_pending_row(id, stored, &mut changed);
        }
        changed
    }

    /// Bring `stored[id]` to the signed state's request `id` (or delete it), noting a change.
    fn compare_pending_row(
        &self,
        id: RequestId,
        stored: &mut BTreeMap<RequestId, StoredPending>,
        changed: &mut Vec<(RequestId, bool)>,
    ) {
        match self.tip.prev_state.pending.get(&id) {
            None => {
                if stored.remove(&id).is_some() {
                    changed.push((id, false));
                }
            }
            Some(p) => {
                if !matches!(stored.get(&id), Some(StoredPending::Signed(s)) if s == p) {
                    stored.insert(id, StoredPending::Signed(p.clone()));
                    changed.push((id, true));
                }
            }
        }
    }
}
