//! A channel as a store keeps it: the channel without its pending requests (small, rewritten at
//! every step that touches the channel) and each pending request as its own row, written when
//! it is frozen or answered and deleted once it is settled.
//!
//! Why: a channel holds every request still under way, twice (in the current state and in the
//! last state both friends signed), each about half a kilobyte with its signatures. Written
//! whole, a channel with a hundred payments under way costs about 100 KB at every step; split,
//! a step writes only the requests it changed.
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

/// A pending request as stored beside its channel: where it stands in the current state and in
/// the last state both friends signed (the tip's). Encoded as the [`super::Pending`]s it holds
/// (format 2 and 3 rows alike); held, it shares them with the channel's states, so comparing
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

/// [`StoredPending`], borrowed from the channel.
enum PendingRef<'a> {
    Both(&'a SharedPending),
    Current(&'a SharedPending),
    Signed(&'a SharedPending),
    Differ(&'a SharedPending, &'a SharedPending),
}

impl PendingRef<'_> {
    fn same_as(&self, stored: &StoredPending) -> bool {
        match (self, stored) {
            (PendingRef::Both(a), StoredPending::Both(b))
            | (PendingRef::Current(a), StoredPending::Current(b))
            | (PendingRef::Signed(a), StoredPending::Signed(b)) => *a == b,
            (PendingRef::Differ(a, c), StoredPending::Differ { current, signed }) => {
                *a == current && *c == signed
            }
            _ => false,
        }
    }

    fn to_stored(&self) -> StoredPending {
        match self {
            PendingRef::Both(p) => StoredPending::Both((*p).clone()),
            PendingRef::Current(p) => StoredPending::Current((*p).clone()),
            PendingRef::Signed(p) => StoredPending::Signed((*p).clone()),
            PendingRef::Differ(current, signed) => StoredPending::Differ {
                current: (*current).clone(),
                signed: (*signed).clone(),
            },
        }
    }
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

    /// The channel, with its pending requests put back in both states and `queued` (the queue's
    /// rows, in order) after whatever queue the core itself held (format 2).
    pub fn join(
        self,
        rows: impl IntoIterator<Item = (RequestId, StoredPending)>,
        queued: impl IntoIterator<Item = Op>,
    ) -> Channel {
        let mut queue = self.queue;
        queue.extend(queued);
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
            return postcard::from_bytes(bytes);
        }
        let v2: CoreV2 = postcard::from_bytes(bytes)?;
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

    /// Every pending request with where it stands, in request order.
    fn pending_refs(&self) -> Vec<(RequestId, PendingRef<'_>)> {
        let (cur, signed) = (&self.state.pending, &self.tip.prev_state.pending);
        let mut out = Vec::with_capacity(cur.len().max(signed.len()));
        let mut a = cur.iter().peekable();
        let mut b = signed.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (Some((ka, va)), Some((kb, vb))) => {
                    if ka < kb {
                        out.push((**ka, PendingRef::Current(va)));
                        a.next();
                    } else if kb < ka {
                        out.push((**kb, PendingRef::Signed(vb)));
                        b.next();
                    } else {
                        let row = if va == vb {
                            PendingRef::Both(va)
                        } else {
                            PendingRef::Differ(va, vb)
                        };
                        out.push((**ka, row));
                        a.next();
                        b.next();
                    }
                }
                (Some((ka, va)), None) => {
                    out.push((**ka, PendingRef::Current(va)));
                    a.next();
                }
                (None, Some((kb, vb))) => {
                    out.push((**kb, PendingRef::Signed(vb)));
                    b.next();
                }
                (None, None) => return out,
            }
        }
    }

    /// Every pending request as a store keeps it.
    pub fn pending_rows(&self) -> Vec<(RequestId, StoredPending)> {
        self.pending_refs()
            .into_iter()
            .map(|(id, r)| (id, r.to_stored()))
            .collect()
    }

    /// Bring `stored` (what the store holds for this channel) up to date, and say which rows
    /// changed: `true` when `stored[id]` is to be written, `false` when it is to be deleted.
    ///
    /// With `since_stored`, `stored` is what this channel's rows were when this was last
    /// called on it: only the requests its moves touched since are compared (see
    /// [`super::Touched`]). Without, or when the channel cannot say (it was reset, adopted a
    /// tip, or was built or decoded since), every request is compared, and so every row a
    /// store may hold: the first look after a load or after the store was emptied.
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
            match self.pending_ref(&id) {
                None => {
                    if stored.remove(&id).is_some() {
                        changed.push((id, false));
                    }
                }
                Some(r) => {
                    if !stored.get(&id).is_some_and(|s| r.same_as(s)) {
                        stored.insert(id, r.to_stored());
                        changed.push((id, true));
                    }
                }
            }
        }
        changed
    }

    /// [`Channel::update_pending_rows`] comparing every request under way and every row.
    fn compare_all_pending_rows(
        &self,
        stored: &mut BTreeMap<RequestId, StoredPending>,
    ) -> Vec<(RequestId, bool)> {
        let refs = self.pending_refs();
        let mut changed = Vec::new();
        let gone: Vec<RequestId> = stored
            .keys()
            .filter(|id| !self.has_pending(id))
            .copied()
            .collect();
        for id in gone {
            stored.remove(&id);
            changed.push((id, false));
        }
        for (id, r) in refs {
            if stored.get(&id).is_some_and(|s| r.same_as(s)) {
                continue;
            }
            stored.insert(id, r.to_stored());
            changed.push((id, true));
        }
        changed
    }

    /// Where request `id` stands, as [`Channel::pending_refs`] gives it; `None` when neither
    /// state holds it.
    fn pending_ref(&self, id: &RequestId) -> Option<PendingRef<'_>> {
        match (
            self.state.pending.get(id),
            self.tip.prev_state.pending.get(id),
        ) {
            (Some(c), Some(s)) if c == s => Some(PendingRef::Both(c)),
            (Some(c), Some(s)) => Some(PendingRef::Differ(c, s)),
            (Some(c), None) => Some(PendingRef::Current(c)),
            (None, Some(s)) => Some(PendingRef::Signed(s)),
            (None, None) => None,
        }
    }

    fn has_pending(&self, id: &RequestId) -> bool {
        self.state.pending.contains_key(id) || self.tip.prev_state.pending.contains_key(id)
    }
}
