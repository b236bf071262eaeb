//! The index: a graph of reported capacities, and fee-aware, capacity-aware route search.
//!
//! Wallets send signed [`CapacityReport`]s (see [`report`]); relays keep the latest one per
//! wallet in an [`Index`] until it expires and answer [`RouteQuery`]s from it. The same code
//! runs in a relay, in tests and in the benchmark.
//!
//! **Fees** are computed with [`Rate::fee`], the rule mediators check a quote against, over the
//! amount a route delivers to the seller; the amount frozen on hop *k* is what
//! [`hop_amount`] says, the rule every hop derives from a signed request. So a route the index
//! offers is priced exactly as its mediators will charge it (at the rates they reported).
//!
//! **Search.** A route is found by a bidirectional Dijkstra search whose weights are the
//! mediators' fees for the part being placed (and one unit per hop, so equal fees prefer
//! shorter routes), over the hops whose capacity left is at least that part. A route set is
//! built greedily on a residual graph, so two routes sharing a hop never together need more
//! than that hop has; each route carries as much as every one of its hops allows once the
//! downstream fees are added. Two greedy orders are tried, largest part first and cheapest
//! route first, and the cheaper set wins. Finding the cheapest set exactly is a fixed-charge
//! flow problem (NP-hard); see `docs/protocol.md` for what the heuristic guarantees.

pub mod report;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

pub use report::{CapacityReport, Privacy, ReportEntry, ReportError, SignedReport};

use crate::protocol::amount::{Currency, Rate};
use crate::protocol::bounds::{MAX_AMOUNT, MAX_ROUTE_LEN, MAX_ROUTES_PER_PAYMENT};
use crate::protocol::identity::NodeId;
use crate::protocol::node::RoutePlan;
pub use crate::protocol::payment::hop_amount;

/// A fast hasher for the search's small integer keys (no untrusted keys reach it: only slot
/// numbers the index assigned).
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Fast = BuildHasherDefault<IntHasher>;
type FastMap<K, V> = HashMap<K, V, Fast>;

const NONE: u64 = u64::MAX;

/// One direction of a channel, u → v, as stored at u (out) and at v (in).
#[derive(Clone, Copy, Debug)]
struct Half {
    peer: u32,
    /// Whether `peer` has a report in force (may mediate): kept here so that the search does
    /// not look it up elsewhere for every hop it considers.
    peer_reports: bool,
    /// What u reported it can send to v.
    by_from: u64,
    /// What v reported it can receive from u.
    by_to: u64,
}

impl Half {
    fn cap(&self) -> u64 {
        match (self.by_from, self.by_to) {
            (NONE, NONE) => 0,
            (a, NONE) => a,
            (NONE, b) => b,
            (a, b) => a.min(b),
        }
    }
}

#[derive(Default)]
struct Graph {
    out: Vec<Vec<Half>>,
    inn: Vec<Vec<Half>>,
    edges: usize,
}

#[derive(Clone, Copy)]
enum Side {
    From,
    To,
}

impl Graph {
    fn grow(&mut self, n: usize) {
        if self.out.len() < n {
            self.out.resize_with(n, Vec::new);
            self.inn.resize_with(n, Vec::new);
        }
    }

    /// Set one side's word on the hop u → v (`NONE` withdraws it). `rates` says who reports.
    fn set(&mut self, u: u32, v: u32, side: Side, value: u64, rates: &[Option<Rate>]) {
        self.grow(u.max(v) as usize + 1);
        let reports = |x: u32| rates.get(x as usize).is_some_and(Option::is_some);
        let (Some(out), Some(inn)) = (self.out.get_mut(u as usize), self.inn.get_mut(v as usize))
        else {
            return;
        };
        let oi = out.iter().position(|h| h.peer == v);
        let ii = inn.iter().position(|h| h.peer == u);
        let mut half = match oi.and_then(|i| out.get(i)) {
            Some(h) => *h,
            None if value == NONE => return,
            None => Half {
                peer: v,
                peer_reports: reports(v),
                by_from: NONE,
                by_to: NONE,
            },
        };
        match side {
            Side::From => half.by_from = value,
            Side::To => half.by_to = value,
        }
        let gone = half.by_from == NONE && half.by_to == NONE;
        match (oi, gone) {
            (Some(i), true) => {
                out.swap_remove(i);
                self.edges -= 1;
            }
            (Some(i), false) => {
                if let Some(h) = out.get_mut(i) {
                    *h = half;
                }
            }
            (None, false) => {
                out.push(half);
                self.edges += 1;
            }
            (None, true) => {}
        }
        match (ii, gone) {
            (Some(i), true) => {
                inn.swap_remove(i);
            }
            (Some(i), false) => {
                if let Some(h) = inn.get_mut(i) {
                    h.by_from = half.by_from;
                    h.by_to = half.by_to;
                }
            }
            (None, false) => inn.push(Half {
                peer: u,
                peer_reports: reports(u),
                ..half
            }),
            (None, true) => {}
        }
    }

    /// `w` now reports (or no longer does): tell the halves that name it.
    fn mark(&mut self, w: u32, reporting: bool) {
        let (outs, ins): (Vec<u32>, Vec<u32>) = (
            self.out
                .get(w as usize)
                .map(|o| o.iter().map(|h| h.peer).collect())
                .unwrap_or_default(),
            self.inn
                .get(w as usize)
                .map(|i| i.iter().map(|h| h.peer).collect())
                .unwrap_or_default(),
        );
        for f in outs {
            if let Some(h) = self
                .inn
                .get_mut(f as usize)
                .and_then(|i| i.iter_mut().find(|h| h.peer == w))
            {
                h.peer_reports = reporting;
            }
        }
        for f in ins {
            if let Some(h) = self
                .out
                .get_mut(f as usize)
                .and_then(|o| o.iter_mut().find(|h| h.peer == w))
            {
                h.peer_reports = reporting;
            }
        }
    }

    fn cap(&self, u: u32, v: u32) -> u64 {
        self.out
            .get(u as usize)
            .and_then(|o| o.iter().find(|h| h.peer == v))
            .map_or(0, Half::cap)
    }
}

/// A wallet's report as the index holds it: as signed (what peers are sent), and its entries
/// by slot (what to take back when a newer one comes or it expires).
struct Held {
    signed: SignedReport,
    /// (friend slot, currency slot)
    entries: Vec<(u32, u16)>,
}

/// A route the index offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteQuote {
    /// Buyer, mediators, seller.
    pub route: Vec<NodeId>,
    /// Each mediator's fee for `dest_payment`, in route order.
    pub fees: Vec<u64>,
    /// What this route is to deliver to the seller in this set.
    pub dest_payment: u64,
    /// The most this route could deliver on its own, by the reports.
    pub capacity: u64,
    /// The sum of `fees`.
    pub total_fee: u64,
}

impl RouteQuote {
    /// As the buyer's node takes it.
    pub fn plan(&self) -> RoutePlan {
        RoutePlan {
            route: self.route.clone(),
            fees: self.fees.clone(),
            dest_payment: self.dest_payment,
        }
    }
}

/// Routes that together deliver a query's amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSet {
    /// The routes (at most the query's `max_routes`).
    pub routes: Vec<RouteQuote>,
    /// What they deliver together (the query's amount).
    pub amount: u64,
    /// All their fees.
    pub total_fee: u64,
}

/// A request for routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteQuery {
    /// The buyer.
    pub from: NodeId,
    /// The seller.
    pub to: NodeId,
    /// The currency.
    pub currency: Currency,
    /// What the seller must receive.
    pub amount: u64,
    /// Most routes to split over (1 to [`MAX_ROUTES_PER_PAYMENT`]).
    pub max_routes: u8,
    /// Hops not to use (they failed before).
    pub avoid: Vec<(NodeId, NodeId)>,
    /// The buyer's own channels, exactly (friend, what it can send now). When given, they
    /// replace what the index knows about the buyer's side.
    pub first_hops: Option<Vec<(NodeId, u64)>>,
}

impl RouteQuery {
    /// The route straight to the seller when the seller is the buyer's friend and that channel
    /// carries the whole amount (and was not refused before): no fee and one hop, so no other
    /// set of routes is cheaper, and no index is needed to find it.
    pub fn direct(&self) -> Option<RouteSet> {
        let cap = self
            .first_hops
            .as_ref()?
            .iter()
            .find(|(f, _)| *f == self.to)?
            .1;
        if cap < self.amount || self.avoid.contains(&(self.from, self.to)) || self.amount == 0 {
            return None;
        }
        Some(RouteSet {
            routes: vec![RouteQuote {
                route: vec![self.from, self.to],
                fees: Vec::new(),
                dest_payment: self.amount,
                capacity: cap,
                total_fee: 0,
            }],
            amount: self.amount,
            total_fee: 0,
        })
    }
}

/// Why no routes were found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RouteError {
    /// The index knows nothing of this wallet.
    #[error("the index knows no wallet {0}")]
    UnknownNode(NodeId),
    /// The query makes no sense.
    #[error("bad route query: {0}")]
    BadQuery(String),
    /// Not enough capacity (or no path at all).
    #[error(
        "no routes carry {amount} to the seller now; at most {reachable} would reach it over {max_routes} routes"
    )]
    NoRoute {
        /// What was asked.
        amount: u64,
        /// What the best attempt could place.
        reachable: u64,
        /// The route bound of the query.
        max_routes: u8,
    },
}

/// Reported capacities of many wallets, and route search over them.
#[derive(Default)]
pub struct Index {
    ids: Vec<NodeId>,
    slots: HashMap<NodeId, u32>,
    held: Vec<Option<Held>>,
    /// The rate of each slot with a report in force (kept beside `held` for the search).
    rates: Vec<Option<Rate>>,
    currencies: Vec<Currency>,
    currency_slots: HashMap<Currency, u16>,
    graphs: Vec<Graph>,
}

/// What the index holds, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    /// Wallets with a report in force.
    pub reporting: u64,
    /// Wallets known (reporting or named by a report).
    pub known: u64,
    /// Hops with a capacity, all currencies.
    pub hops: u64,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    fn slot(&mut self, id: NodeId) -> u32 {
        if let Some(s) = self.slots.get(&id) {
            return *s;
        }
        let s = self.ids.len() as u32;
        self.ids.push(id);
        self.held.push(None);
        self.rates.push(None);
        self.slots.insert(id, s);
        s
    }

    fn currency_slot(&mut self, c: &Currency) -> u16 {
        if let Some(s) = self.currency_slots.get(c) {
            return *s;
        }
        let s = self.currencies.len() as u16;
        self.currencies.push(*c);
        self.currency_slots.insert(*c, s);
        self.graphs.push(Graph::default());
        s
    }

    /// Take `signed` if it verifies at `now_ms` and is newer than the report held for its
    /// wallet. Returns whether anything changed.
    pub fn apply(&mut self, signed: &SignedReport, now_ms: u64) -> Result<(), ReportError> {
        signed.verify(now_ms)?;
        let r = &signed.report;
        let w = self.slot(r.node);
        if let Some(Some(old)) = self.held.get(w as usize)
            && old.signed.report.issued_ms >= r.issued_ms
        {
            return Err(ReportError::Stale {
                issued_ms: r.issued_ms,
                held_ms: old.signed.report.issued_ms,
            });
        }
        if self.currency_slots.len() + r.entries.len() > u16::MAX as usize {
            // Unreachable with sane reports; refuse rather than wrap.
            return Err(ReportError::TooManyEntries {
                got: r.entries.len(),
                max: 0,
            });
        }
        self.withdraw(w);
        let mut entries = Vec::with_capacity(r.entries.len());
        for e in &r.entries {
            let f = self.slot(e.friend);
            let c = self.currency_slot(&e.currency);
            if let Some(g) = self.graphs.get_mut(c as usize) {
                g.set(w, f, Side::From, e.send.min(MAX_AMOUNT), &self.rates);
                g.set(f, w, Side::To, e.recv.min(MAX_AMOUNT), &self.rates);
            }
            entries.push((f, c));
        }
        if let Some(rate) = self.rates.get_mut(w as usize) {
            *rate = Some(r.rate);
        }
        for g in &mut self.graphs {
            g.mark(w, true);
        }
        if let Some(h) = self.held.get_mut(w as usize) {
            *h = Some(Held {
                signed: signed.clone(),
                entries,
            });
        }
        Ok(())
    }

    /// Take back everything wallet `w` reported.
    fn withdraw(&mut self, w: u32) {
        let Some(old) = self.held.get_mut(w as usize).and_then(Option::take) else {
            return;
        };
        if let Some(rate) = self.rates.get_mut(w as usize) {
            *rate = None;
        }
        for (f, c) in old.entries {
            if let Some(g) = self.graphs.get_mut(c as usize) {
                g.set(w, f, Side::From, NONE, &self.rates);
                g.set(f, w, Side::To, NONE, &self.rates);
            }
        }
        for g in &mut self.graphs {
            g.mark(w, false);
        }
    }

    /// Drop reports that expired by `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let due: Vec<u32> = self
            .held
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match h {
                Some(h) if h.signed.report.expires_ms <= now_ms => Some(i as u32),
                _ => None,
            })
            .collect();
        for w in &due {
            self.withdraw(*w);
        }
        due.len()
    }

    /// When the report held for `node` was issued.
    pub fn issued_ms(&self, node: &NodeId) -> Option<u64> {
        let s = *self.slots.get(node)?;
        self.held
            .get(s as usize)?
            .as_ref()
            .map(|h| h.signed.report.issued_ms)
    }

    /// Every report in force, as signed (for a peer index).
    pub fn reports(&self) -> impl Iterator<Item = &SignedReport> {
        self.held.iter().flatten().map(|h| &h.signed)
    }

    /// Hops with a capacity, all currencies (as in [`Index::stats`], without counting the
    /// reports).
    pub fn hop_count(&self) -> u64 {
        self.graphs.iter().map(|g| g.edges as u64).sum()
    }

    /// Counts, for logs.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            reporting: self.held.iter().filter(|h| h.is_some()).count() as u64,
            known: self.ids.len() as u64,
            hops: self.hop_count(),
        }
    }

    fn rate(&self, s: u32) -> Option<Rate> {
        *self.rates.get(s as usize)?
    }

    /// Routes for `q`: the cheapest set the search finds that delivers `q.amount`.
    pub fn find_routes(&self, q: &RouteQuery) -> Result<RouteSet, RouteError> {
        if q.amount == 0 || q.amount > MAX_AMOUNT {
            return Err(RouteError::BadQuery(format!(
                "the amount must be 1 to {MAX_AMOUNT}"
            )));
        }
        if q.from == q.to {
            return Err(RouteError::BadQuery("buyer and seller are the same".into()));
        }
        if q.max_routes == 0 || q.max_routes as usize > MAX_ROUTES_PER_PAYMENT {
            return Err(RouteError::BadQuery(format!(
                "max_routes must be 1 to {MAX_ROUTES_PER_PAYMENT}"
            )));
        }
        let to = *self.slots.get(&q.to).ok_or(RouteError::UnknownNode(q.to))?;
        let from = match (self.slots.get(&q.from), &q.first_hops) {
            (Some(s), _) => *s,
            (None, Some(_)) => VIRTUAL_FROM,
            (None, None) => return Err(RouteError::UnknownNode(q.from)),
        };
        let no_route = |reachable| RouteError::NoRoute {
            amount: q.amount,
            reachable,
            max_routes: q.max_routes,
        };
        // No report names the currency yet: the buyer's own first hops may still reach.
        let empty = Graph::default();
        let graph = self
            .currency_slots
            .get(&q.currency)
            .and_then(|c| self.graphs.get(*c as usize))
            .unwrap_or(&empty);
        let first_hops: Option<FastMap<u32, u64>> = q.first_hops.as_ref().map(|hops| {
            hops.iter()
                .filter_map(|(f, cap)| Some((*self.slots.get(f)?, (*cap).min(MAX_AMOUNT))))
                .collect()
        });
        let avoid: HashSet<(u32, u32), Fast> = q
            .avoid
            .iter()
            .filter_map(|(a, b)| {
                let a = if *a == q.from {
                    from
                } else {
                    *self.slots.get(a)?
                };
                Some((a, *self.slots.get(b)?))
            })
            .collect();
        let search = Search {
            index: self,
            graph,
            from,
            to,
            first_hops,
            avoid,
            hop_cost: hop_cost(q.amount),
            touched: std::cell::RefCell::new(Vec::new()),
        };
        let max = q.max_routes as usize;
        let best = SCRATCH.with(|sc| {
            let mut sc = sc.borrow_mut();
            let largest = search.greedy(&mut sc, q.amount, max, Order::LargestFirst);
            // One route found for the whole amount is the cheapest single route; a split
            // could beat it only by luck of fees, at the cost of more routes.
            // When halving brought the first part down to the cheapest-first part, both
            // orders place the same routes.
            if let Ok(one) = &largest
                && (one.routes.len() == 1 || one.first_part <= q.amount.div_ceil(max as u64))
            {
                return largest.map_err(|_| no_route(0));
            }
            let cheapest = search.greedy(&mut sc, q.amount, max, Order::CheapestFirst);
            match (largest, cheapest) {
                (Ok(a), Ok(b)) => Ok(if (b.cost, b.routes.len()) < (a.cost, a.routes.len()) {
                    b
                } else {
                    a
                }),
                (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
                (Err(a), Err(b)) => Err(no_route(a.max(b))),
            }
        })?;
        Ok(RouteSet {
            routes: best
                .routes
                .iter()
                .map(|r| search.quote(r, q.from))
                .collect(),
            amount: q.amount,
            total_fee: best.total_fee,
        })
    }
}

/// The slot standing for a buyer the index has no report from (its `first_hops` describe it).
const VIRTUAL_FROM: u32 = u32::MAX;

/// What each hop adds to a route's cost besides its mediator's fee, when placing `amount`:
/// one unit per 10,000 of the amount, at least 1. Among routes with about the same fees the
/// search prefers the shorter (fewer friends to be online, fewer round trips); without it the
/// cheapest route in a network with many free mediators is absurdly long.
pub fn hop_cost(amount: u64) -> u64 {
    (amount / 10_000).max(1)
}

/// A search label: the cost to (or from) a slot, the slot before (or after) it, the hops.
#[derive(Clone, Copy, Default)]
struct Label {
    cost: u64,
    link: u32,
    stamp: u32,
    done: u32,
    hops: u16,
}

impl Label {
    fn new(cost: u64, link: u32, stamp: u32, hops: u16) -> Label {
        Label {
            cost,
            link,
            stamp,
            done: 0,
            hops,
        }
    }
}

/// Give the node at `ix` the `label` if it has none of this search or a dearer one, and queue
/// it; says whether it did.
fn relax(
    labels: &mut [Label],
    heap: &mut BinaryHeap<Reverse<(u64, u32)>>,
    ix: usize,
    node: u32,
    label: Label,
) -> bool {
    let Some(l) = labels.get_mut(ix) else {
        return false;
    };
    if l.stamp == label.stamp && l.cost <= label.cost {
        return false;
    }
    *l = label;
    heap.push(Reverse((label.cost, node)));
    true
}

/// Settle the cheapest queued node: `None` when the queue is empty, `Some(None)` for a stale
/// entry, else its cost, node and label.
fn settle(
    labels: &mut [Label],
    heap: &mut BinaryHeap<Reverse<(u64, u32)>>,
    stamp: u32,
    ix: impl Fn(u32) -> usize,
) -> Option<Option<(u64, u32, Label)>> {
    let Reverse((d, node)) = heap.pop()?;
    let Some(l) = labels.get_mut(ix(node)) else {
        return Some(None);
    };
    if l.done == stamp || d > l.cost {
        return Some(None);
    }
    l.done = stamp;
    Some(Some((d, node, *l)))
}

/// Per-thread search memory, reused across queries (a stamp marks which labels are current).
#[derive(Default)]
struct Scratch {
    stamp: u32,
    fwd: Vec<Label>,
    bwd: Vec<Label>,
    heap_f: BinaryHeap<Reverse<(u64, u32)>>,
    heap_b: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Scratch {
    fn begin(&mut self, slots: usize) {
        if self.fwd.len() < slots {
            self.fwd.resize(slots, Label::default());
            self.bwd.resize(slots, Label::default());
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.fwd.fill(Label::default());
            self.bwd.fill(Label::default());
            self.stamp = 1;
        }
        self.heap_f.clear();
        self.heap_b.clear();
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Place as much as one route takes, halving the part when none takes it.
    LargestFirst,
    /// Place parts of amount / max_routes on the cheapest routes first.
    CheapestFirst,
}

struct Placed {
    path: Vec<u32>,
    fees: Vec<u64>,
    dest: u64,
}

struct Greedy {
    /// The part size the first route was placed at.
    first_part: u64,
    routes: Vec<Placed>,
    total_fee: u64,
    cost: u64,
}

/// What the two-sided search saw of the meetings of its two sides.
struct Meetings {
    /// Whether the sides met at all (if not, no path exists even without fees).
    any: bool,
    /// The cheapest meeting refused (its forward half could not carry the fees, or it was
    /// too long).
    refused_below: u64,
    /// The cost of the path returned.
    cost: u64,
}

impl Meetings {
    /// Is the path returned the cheapest that carries the part? Yes unless a cheaper meeting
    /// was refused: every cheaper feasible path would have shown up as one.
    fn sure(&self) -> bool {
        self.refused_below >= self.cost
    }
}

struct Search<'a> {
    index: &'a Index,
    graph: &'a Graph,
    from: u32,
    to: u32,
    first_hops: Option<FastMap<u32, u64>>,
    avoid: HashSet<(u32, u32), Fast>,
    hop_cost: u64,
    /// Per slot: whether a route placed in this greedy pass leaves it.
    touched: std::cell::RefCell<Vec<bool>>,
}

type Used = FastMap<(u32, u32), u64>;

/// Most wallets one exact search settles: it bounds the time of a query on a large index, at
/// the price of missing routes that only a search of more of the network would find (then
/// the buyer pays over a split, or asks again later).
const MAX_SETTLED: usize = 5_000;
/// Most labels one two-sided search takes off its queues (see `docs/benchmarks.md`).
const MAX_SETTLED_FAST: usize = 1_500;

/// Most hops (edges) on a route.
const MAX_HOPS: u16 = (MAX_ROUTE_LEN - 1) as u16;

impl Search<'_> {
    /// A new greedy pass: no route placed yet.
    fn next_pass(&self) {
        self.touched.borrow_mut().fill(false);
    }

    /// Does a route placed in this pass leave `u`? (Saves a map lookup per hop looked at.)
    fn touched(&self, u: u32) -> bool {
        self.touched
            .borrow()
            .get(self.ix(u))
            .copied()
            .unwrap_or(false)
    }

    fn mark(&self, u: u32) {
        let i = self.ix(u);
        let mut t = self.touched.borrow_mut();
        if t.len() <= i {
            t.resize(self.index.ids.len() + 1, false);
        }
        if let Some(slot) = t.get_mut(i) {
            *slot = true;
        }
    }

    fn ix(&self, s: u32) -> usize {
        if s == VIRTUAL_FROM {
            self.index.ids.len()
        } else {
            s as usize
        }
    }

    /// The capacity of hop u → v, before this query's own use.
    fn cap(&self, u: u32, v: u32) -> u64 {
        if u == self.from
            && let Some(hops) = &self.first_hops
        {
            return hops.get(&v).copied().unwrap_or(0);
        }
        if u == VIRTUAL_FROM {
            return 0;
        }
        self.graph.cap(u, v)
    }

    fn left(&self, u: u32, v: u32, used: &Used) -> u64 {
        let cap = self.cap(u, v);
        if used.is_empty() {
            return cap;
        }
        cap.saturating_sub(used.get(&(u, v)).copied().unwrap_or(0))
    }

    /// May `v` be a mediator? Only wallets with a report in force (their rate is known).
    fn mediator(&self, v: u32) -> bool {
        v != self.from && v != self.to && v != VIRTUAL_FROM && self.index.rate(v).is_some()
    }

    /// `u`'s fee for forwarding `part` (0 for the buyer).
    fn fee(&self, u: u32, part: u64) -> u64 {
        if u == self.from {
            0
        } else {
            self.index
                .rate(u)
                .and_then(|r| r.fee(part))
                .unwrap_or(MAX_AMOUNT)
        }
    }

    /// Out-hops of `u` with their capacity (first hops replace the buyer's reported ones).
    fn outs(&self, u: u32, mut each: impl FnMut(u32, u64, bool)) {
        if u == self.from
            && let Some(hops) = &self.first_hops
        {
            for (v, cap) in hops {
                each(*v, *cap, self.index.rate(*v).is_some());
            }
            return;
        }
        for h in self.graph.out.get(u as usize).map_or(&[][..], |v| &v[..]) {
            each(h.peer, h.cap(), h.peer_reports);
        }
    }

    /// In-hops of `v` with their capacity.
    fn ins(&self, v: u32, mut each: impl FnMut(u32, u64, bool)) {
        let replaced = self.first_hops.is_some();
        for h in self.graph.inn.get(v as usize).map_or(&[][..], |x| &x[..]) {
            if !(replaced && h.peer == self.from) {
                each(h.peer, h.cap(), h.peer_reports);
            }
        }
        if let Some(cap) = self.first_hops.as_ref().and_then(|hops| hops.get(&v)) {
            each(self.from, *cap, true);
        }
    }

    /// What is left of `cap` on u → v after this query's routes so far.
    fn rest(&self, u: u32, v: u32, cap: u64, used: &Used) -> u64 {
        if used.is_empty() || !self.touched(u) {
            return cap;
        }
        cap.saturating_sub(used.get(&(u, v)).copied().unwrap_or(0))
    }

    /// May `u` come before another node on a route (the buyer, or a mediator)? `reports`:
    /// whether `u` has a report in force.
    fn may_lead(&self, u: u32, reports: bool) -> bool {
        u != self.to && (u == self.from || reports)
    }

    /// May `v` come after another node on a route (the seller, or a mediator)?
    fn may_follow(&self, v: u32, reports: bool) -> bool {
        v != self.from && (v == self.to || reports)
    }

    fn not_avoided(&self, u: u32, v: u32) -> bool {
        self.avoid.is_empty() || !self.avoid.contains(&(u, v))
    }

    /// The fees of the mediators from `v` on, by a backward label's cost.
    fn fees_from(&self, label: &Label) -> u64 {
        label
            .cost
            .saturating_sub(self.hop_cost.saturating_mul(u64::from(label.hops)))
    }

    /// The path through `meet` by the labels.
    fn path_through(&self, sc: &Scratch, meet: u32) -> Option<Vec<u32>> {
        let mut path = vec![meet];
        let mut at = meet;
        while at != self.from {
            at = sc.fwd.get(self.ix(at))?.link;
            path.push(at);
            if path.len() > MAX_ROUTE_LEN {
                return None;
            }
        }
        path.reverse();
        let mut at = meet;
        while at != self.to {
            at = sc.bwd.get(self.ix(at))?.link;
            path.push(at);
            if path.len() > MAX_ROUTE_LEN {
                return None;
            }
        }
        Some(path)
    }

    /// Would the forward labels' path into `meet` carry `part`, with the fees after `meet`
    /// (`fees_after`) riding on every hop?
    fn forward_fits(
        &self,
        sc: &Scratch,
        meet: u32,
        part: u64,
        fees_after: u64,
        used: &Used,
    ) -> bool {
        let mut need = part.saturating_add(fees_after);
        let mut at = meet;
        let mut steps = 0;
        while at != self.from {
            let Some(prev) = sc.fwd.get(self.ix(at)).map(|l| l.link) else {
                return false;
            };
            if self.left(prev, at, used) < need {
                return false;
            }
            need = need.saturating_add(self.fee(prev, part));
            at = prev;
            steps += 1;
            if steps > MAX_ROUTE_LEN {
                return false;
            }
        }
        true
    }

    /// The cheapest path the two-sided search finds whose hops carry `part`: the backward side
    /// checks each hop with the fees after it; a meeting is taken only if the forward side's
    /// hops carry them too. Fast; may miss a feasible path (then [`Search::exact_path`]).
    /// Also says how sure it is (see [`Meetings`]).
    fn cheapest_path(
        &self,
        sc: &mut Scratch,
        part: u64,
        used: &Used,
    ) -> (Option<Vec<u32>>, Meetings) {
        let mut met = Meetings {
            any: false,
            refused_below: u64::MAX,
            cost: u64::MAX,
        };
        let path = self.two_sided(sc, part, used, &mut met);
        (path, met)
    }

    fn two_sided(
        &self,
        sc: &mut Scratch,
        part: u64,
        used: &Used,
        met: &mut Meetings,
    ) -> Option<Vec<u32>> {
        sc.begin(self.index.ids.len() + 1);
        let stamp = sc.stamp;
        let (fi, ti) = (self.ix(self.from), self.ix(self.to));
        *sc.fwd.get_mut(fi)? = Label::new(0, self.from, stamp, 0);
        *sc.bwd.get_mut(ti)? = Label::new(0, self.to, stamp, 0);
        sc.heap_f.push(Reverse((0, self.from)));
        sc.heap_b.push(Reverse((0, self.to)));
        let mut best: Option<(u64, u32)> = None;
        let mut settled = 0usize;
        loop {
            settled += 1;
            if settled > MAX_SETTLED_FAST {
                // Keep what was found; a cheaper route may lie beyond.
                met.refused_below = 0;
                break;
            }
            let (Some(Reverse((top_f, _))), Some(Reverse((top_b, _)))) =
                (sc.heap_f.peek().copied(), sc.heap_b.peek().copied())
            else {
                break;
            };
            if let Some((mu, _)) = best
                && top_f.saturating_add(top_b) >= mu
            {
                break;
            }
            if sc.heap_f.len() <= sc.heap_b.len() {
                let Some(next) = settle(&mut sc.fwd, &mut sc.heap_f, stamp, |n| self.ix(n)) else {
                    break;
                };
                let Some((d, u, Label { hops, .. })) = next else {
                    continue;
                };
                if (u != self.from && !self.mediator(u)) || hops >= MAX_HOPS {
                    continue;
                }
                let nd = d
                    .saturating_add(self.fee(u, part))
                    .saturating_add(self.hop_cost);
                let mut meets = Vec::new();
                // `u` was checked when settled: only `v` and the hop remain.
                self.outs(u, |v, cap, reports| {
                    if self.rest(u, v, cap, used) < part
                        || !self.may_follow(v, reports)
                        || !self.not_avoided(u, v)
                    {
                        return;
                    }
                    let label = Label::new(nd, u, stamp, hops + 1);
                    if relax(&mut sc.fwd, &mut sc.heap_f, self.ix(v), v, label) {
                        meets.push(v);
                    }
                });
                for v in meets {
                    self.consider(sc, v, part, used, &mut best, met);
                }
            } else {
                let Some(next) = settle(&mut sc.bwd, &mut sc.heap_b, stamp, |n| self.ix(n)) else {
                    break;
                };
                let Some((d, v, label)) = next else {
                    continue;
                };
                let mut meets = Vec::new();
                self.step_back(sc, (d, v, label), part, used, |u| meets.push(u));
                for u in meets {
                    self.consider(sc, u, part, used, &mut best, met);
                }
            }
        }
        let (cost, meet) = best?;
        met.cost = cost;
        self.path_through(sc, meet)
    }

    /// A node labelled from both sides: a candidate route, taken if cheaper and if it fits.
    fn consider(
        &self,
        sc: &Scratch,
        x: u32,
        part: u64,
        used: &Used,
        best: &mut Option<(u64, u32)>,
        met: &mut Meetings,
    ) {
        let stamp = sc.stamp;
        let (Some(f), Some(b)) = (sc.fwd.get(self.ix(x)), sc.bwd.get(self.ix(x))) else {
            return;
        };
        if f.stamp != stamp || b.stamp != stamp {
            return;
        }
        met.any = true;
        let total = f.cost.saturating_add(b.cost);
        if best.is_some_and(|(mu, _)| total >= mu) {
            return;
        }
        if f.hops + b.hops <= MAX_HOPS && self.forward_fits(sc, x, part, self.fees_from(b), used) {
            *best = Some((total, x));
        } else {
            met.refused_below = met.refused_below.min(total);
        }
    }

    /// The cheapest path that carries `part` with every hop's fees: a Dijkstra search from the
    /// seller, where the cost behind a node holds the fees after it, so each hop is checked
    /// against exactly what it would freeze. (The cheapest way on from a node also needs the
    /// least capacity, so keeping only it loses nothing.) Explores more than the two-sided
    /// search.
    fn exact_path(&self, sc: &mut Scratch, part: u64, used: &Used) -> Option<Vec<u32>> {
        sc.begin(self.index.ids.len() + 1);
        let stamp = sc.stamp;
        *sc.bwd.get_mut(self.ix(self.to))? = Label::new(0, self.to, stamp, 0);
        sc.heap_b.push(Reverse((0, self.to)));
        let mut settled = 0usize;
        while let Some(next) = settle(&mut sc.bwd, &mut sc.heap_b, stamp, |n| self.ix(n)) {
            let Some((d, v, label)) = next else {
                continue;
            };
            settled += 1;
            if settled > MAX_SETTLED {
                return None;
            }
            if v == self.from {
                let mut path = vec![v];
                let mut at = v;
                while at != self.to {
                    at = sc.bwd.get(self.ix(at))?.link;
                    path.push(at);
                }
                return Some(path);
            }
            self.step_back(sc, (d, v, label), part, used, |_| {});
        }
        None
    }

    /// From the settled node `v` (cost `d`, `label`), label each node that may come before it
    /// on a route and whose hop to `v` carries `part` with the fees after it; `labelled` hears
    /// of each node that got a better label.
    fn step_back(
        &self,
        sc: &mut Scratch,
        (d, v, label): (u64, u32, Label),
        part: u64,
        used: &Used,
        mut labelled: impl FnMut(u32),
    ) {
        if (v != self.to && !self.mediator(v)) || label.hops >= MAX_HOPS {
            return;
        }
        let need = part.saturating_add(self.fees_from(&label));
        let stamp = sc.stamp;
        self.ins(v, |u, cap, reports| {
            if self.rest(u, v, cap, used) < need
                || !self.may_lead(u, reports)
                || !self.not_avoided(u, v)
            {
                return;
            }
            let nd = d
                .saturating_add(self.fee(u, part))
                .saturating_add(self.hop_cost);
            let next = Label::new(nd, v, stamp, label.hops + 1);
            if relax(&mut sc.bwd, &mut sc.heap_b, self.ix(u), u, next) {
                labelled(u);
            }
        });
    }

    /// Mediator fees on `path` for delivering `dest`.
    fn fees(&self, path: &[u32], dest: u64) -> Option<Vec<u64>> {
        path.get(1..path.len().saturating_sub(1))?
            .iter()
            .map(|m| self.index.rate(*m)?.fee(dest))
            .collect()
    }

    /// What each hop of `path` has left (looked up once per path, not once per try).
    fn lefts(&self, path: &[u32], used: Option<&Used>) -> Vec<u64> {
        path.windows(2)
            .map(|hop| match (hop, used) {
                ([u, v], Some(used)) => self.left(*u, *v, used),
                ([u, v], None) => self.cap(*u, *v),
                _ => 0,
            })
            .collect()
    }

    /// Does `dest` fit on every hop of `path` (with `lefts`), fees included?
    fn fits_in(&self, path: &[u32], lefts: &[u64], dest: u64) -> Option<Vec<u64>> {
        let fees = self.fees(path, dest)?;
        for (k, left) in lefts.iter().enumerate() {
            if hop_amount(dest, &fees, k)? > *left {
                return None;
            }
        }
        Some(fees)
    }

    /// The most `path` can deliver, up to `limit`, with its fees.
    fn carry(&self, path: &[u32], limit: u64, used: Option<&Used>) -> (u64, Vec<u64>) {
        let lefts = self.lefts(path, used);
        if let Some(fees) = self.fits_in(path, &lefts, limit) {
            return (limit, fees);
        }
        // The last hop carries no fee: no route delivers more than it has left.
        let (mut lo, mut hi) = (0u64, limit.min(lefts.iter().copied().min().unwrap_or(0)));
        let mut fees = Vec::new();
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match self.fits_in(path, &lefts, mid) {
                Some(f) => {
                    lo = mid;
                    fees = f;
                }
                None => hi = mid - 1,
            }
        }
        (lo, fees)
    }

    /// Fees plus hop costs.
    fn cost_of(&self, p: &Placed) -> u64 {
        p.fees
            .iter()
            .fold(0u64, |a, f| a.saturating_add(*f))
            .saturating_add(self.hop_cost.saturating_mul(p.path.len() as u64 - 1))
    }

    fn place(&self, path: Option<Vec<u32>>, remaining: u64, used: &Used) -> Option<Placed> {
        let path = path?;
        let (dest, fees) = self.carry(&path, remaining, Some(used));
        (dest > 0).then_some(Placed { path, fees, dest })
    }

    /// Place `amount` over at most `max_routes` routes; on failure, how much could be placed.
    fn greedy(
        &self,
        sc: &mut Scratch,
        amount: u64,
        max_routes: usize,
        order: Order,
    ) -> Result<Greedy, u64> {
        let mut used = Used::default();
        let mut routes: Vec<Placed> = Vec::new();
        let mut first_part = 0;
        self.next_pass();
        let mut remaining = amount;
        let mut part = match order {
            Order::LargestFirst => amount,
            Order::CheapestFirst => amount.div_ceil(max_routes as u64),
        };
        while remaining > 0 && routes.len() < max_routes {
            // Any set of the routes still allowed has one route carrying at least this much;
            // below it, no path can complete the payment.
            let floor = remaining.div_ceil((max_routes - routes.len()) as u64);
            if order == Order::CheapestFirst {
                part = part.max(floor).min(remaining);
            }
            let want = part.min(remaining);
            let (path, met) = self.cheapest_path(sc, part, &used);
            let mut placed = self.place(path, remaining, &used);
            // Without a meeting there is no path even without fees. Otherwise ask the exact
            // search when the fast one found nothing, or, for the whole amount, fell short or
            // may have missed a cheaper route. (For the parts of a split, a route carrying a
            // little less than the part, or costing a little more, is not worth an exact
            // search each time: the split is a heuristic anyway, and the rest is placed next.)
            let whole = routes.is_empty() && want == amount;
            let short = placed.as_ref().is_none_or(|p| p.dest < want);
            if met.any && (placed.is_none() || (whole && (short || !met.sure()))) {
                let exact = self.place(self.exact_path(sc, want, &used), remaining, &used);
                let carried = |p: &Option<Placed>| p.as_ref().map_or(0, |p| p.dest.min(want));
                let better = carried(&exact) > carried(&placed)
                    || (carried(&exact) == carried(&placed)
                        && exact.as_ref().map(|p| self.cost_of(p))
                            < placed.as_ref().map(|p| self.cost_of(p)));
                if better {
                    placed = exact;
                }
            }
            match placed {
                Some(p) => {
                    for (k, hop) in p.path.windows(2).enumerate() {
                        if let ([u, v], Some(need)) = (hop, hop_amount(p.dest, &p.fees, k)) {
                            *used.entry((*u, *v)).or_default() += need;
                            self.mark(*u);
                        }
                    }
                    remaining -= p.dest;
                    if routes.is_empty() {
                        first_part = part;
                    }
                    part = part.min(remaining);
                    routes.push(p);
                }
                None => {
                    if part <= floor || part <= 1 {
                        break;
                    }
                    part = (part / 2).max(floor);
                }
            }
        }
        if remaining > 0 {
            return Err(amount - remaining);
        }
        let total_fee = routes
            .iter()
            .flat_map(|r| r.fees.iter())
            .try_fold(0u64, |a, f| a.checked_add(*f))
            .ok_or(0u64)?;
        let hops: u64 = routes.iter().map(|r| r.path.len() as u64 - 1).sum();
        let cost = total_fee.saturating_add(self.hop_cost.saturating_mul(hops));
        Ok(Greedy {
            first_part,
            routes,
            total_fee,
            cost,
        })
    }

    fn quote(&self, p: &Placed, from: NodeId) -> RouteQuote {
        let id = |s: u32| {
            if s == VIRTUAL_FROM {
                from
            } else {
                self.index.ids.get(s as usize).copied().unwrap_or(from)
            }
        };
        let (capacity, _) = self.carry(&p.path, MAX_AMOUNT, None);
        RouteQuote {
            route: p.path.iter().map(|s| id(*s)).collect(),
            fees: p.fees.clone(),
            dest_payment: p.dest,
            capacity,
            total_fee: p.fees.iter().sum(),
        }
    }
}
