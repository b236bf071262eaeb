//! A seeded network simulator for the protocol.
//!
//! It builds a random friend graph, runs payments over routes it finds from the nodes' own
//! channel states, and delivers messages the way relays would: each after a random delay (so
//! they reorder), some twice, and those for an offline node held until it comes back. Nodes can
//! also be restored from an older snapshot of themselves, as after restoring a backup.
//!
//! After quiescence it checks that every payment has a valid receipt or was cancelled, every
//! pair of friends holds the same log and state, balances sum to zero in every currency, no
//! credit is left frozen, every limit holds, and (without restores) that every node's balance is
//! exactly what its completed payments and fees say. A failure report names the seed, and the
//! same seed replays the same run.

// The simulator indexes its own tables by node indices it created; an index out of range is a
// bug in the simulator, and a panic is the right report of it.
#![allow(clippy::indexing_slicing)]

pub mod local;
pub mod rng;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use serde::Serialize;

pub use self::rng::SimRng;
use crate::protocol::amount::{Currency, Rate};
use crate::protocol::channel::{ChannelError, ResetError};
use crate::protocol::identity::{Identity, NodeId};
use crate::protocol::message::Message;
use crate::protocol::node::{
    Changes, Event, InvoiceStatus, Node, NodeError, Output, Parts, PaymentStatus, ProtocolError,
    RoutePlan,
};
use crate::protocol::payment::{InvoiceId, RequestId};

/// How a simulation runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Number of payments.
    pub payments: usize,
    /// The seed; the same seed replays the same run.
    pub seed: u64,
    /// Fraction of the time each node is offline during the payment phase (0 to 0.95).
    pub offline_fraction: f64,
    /// Probability that a message is delivered twice.
    pub duplicate_fraction: f64,
    /// Longest delivery delay, in ms of simulated time.
    pub max_delay_ms: u64,
    /// Fraction of nodes restored once from an older snapshot of themselves.
    pub restore_fraction: f64,
    /// Fraction of payments whose buyer gives up (abandons) at a random moment before the
    /// invoice expires.
    pub abandon_fraction: f64,
    /// Fraction of friendships that go through a manual reset mid-run (one friend proposes its
    /// view, the other accepts at once).
    pub reset_fraction: f64,
    /// Extra friendships per node beyond the spanning tree that keeps the graph connected.
    pub extra_friends_per_node: usize,
    /// Number of currencies every pair of friends keeps.
    pub currencies: usize,
    /// How long invoices stay open, in ms.
    pub invoice_ttl_ms: u64,
    /// Time between two payments, in ms.
    pub payment_interval_ms: u64,
    /// Most routes one payment is split across.
    pub max_routes: usize,
    /// Probability that the network loses a message. Relays never lose mail they accepted, so
    /// this is 0 except in the test that shows the invariant checks catch a broken network.
    pub drop_fraction: f64,
    /// Keep a shadow store per node, fed only by [`Node::take_changes`] after every input, and
    /// check at the end that every node rebuilt from its store equals the live one. This is
    /// what proves a durable wallet that writes only the changes loses nothing.
    pub verify_persistence: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 50,
            payments: 1000,
            seed: 1,
            offline_fraction: 0.3,
            duplicate_fraction: 0.05,
            max_delay_ms: 300,
            restore_fraction: 0.0,
            reset_fraction: 0.0,
            abandon_fraction: 0.0,
            extra_friends_per_node: 1,
            currencies: 2,
            invoice_ttl_ms: 30_000,
            payment_interval_ms: 20,
            max_routes: 3,
            drop_fraction: 0.0,
            verify_persistence: false,
        }
    }
}

/// What a simulation found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SimReport {
    /// The seed that replays this run.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Friendships (edges).
    pub friendships: usize,
    /// Payments attempted.
    pub payments: usize,
    /// Payments that ended with a valid receipt.
    pub completed: usize,
    /// Payments that ended with nothing moved (refused up front, or every route cancelled).
    pub cancelled: usize,
    /// Of the cancelled: refused before any credit froze (no route with enough capacity).
    pub refused: usize,
    /// Completed payments that used more than one route.
    pub completed_multi_route: usize,
    /// Broken invariants (the first few are described in `violations`).
    pub invariant_violations: usize,
    /// Pairs of friends whose logs or states differ.
    pub disagreeing_pairs: usize,
    /// Sum over every node and friend of the node's balance (0 when nothing is created or lost).
    pub sum_of_balances: i128,
    /// Credit still frozen in pending requests at the end.
    pub frozen_left: u128,
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Channel moves sent.
    pub moves: u64,
    /// Resync offers sent.
    pub offers: u64,
    /// Channels that resynced.
    pub resyncs: u64,
    /// Commits that reached the seller after the invoice expired (refused; the routes are
    /// cancelled, as the seller decides).
    pub late_commits: u64,
    /// Copies of moves that arrived twice and were dropped as replays.
    pub copies_dropped: u64,
    /// Messages the network lost (only with `drop_fraction`, to show the checks catch it).
    pub messages_lost: u64,
    /// Nodes restored from a snapshot.
    pub restores: u64,
    /// Channels reset by both friends.
    pub resets: u64,
    /// Payments the buyer gave up before committing.
    pub abandoned: u64,
    /// Messages refused because a reset overtook them (moves of a closed epoch, superseded
    /// proposals).
    pub stale_after_reset: u64,
    /// Simulated time, in ms.
    pub simulated_ms: u64,
    /// Nodes whose store, fed only with per-step changes, did not rebuild them exactly (only
    /// checked with `verify_persistence`; counted in `invariant_violations` too).
    pub persistence_mismatches: usize,
    /// Wall-clock time, in ms (filled by the caller).
    pub elapsed_ms: u64,
    /// Descriptions of the first violations.
    pub violations: Vec<String>,
}

enum Ev {
    Deliver {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Online(usize),
    Offline(usize),
    Tick(usize),
    Pay(usize),
    Snapshot(usize),
    Restore(usize),
    ProposeReset(usize, usize),
    Abandon(usize, InvoiceId),
}

struct PaymentRecord {
    buyer: usize,
    seller: usize,
    invoice: Option<InvoiceId>,
    routes: usize,
}

/// A simulation in progress.
pub struct Sim {
    cfg: SimConfig,
    rng: SimRng,
    nodes: Vec<Node>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    adj: Vec<Vec<usize>>,
    currencies: Vec<Currency>,
    online: Vec<bool>,
    mailbox: Vec<Vec<(usize, Vec<u8>)>>,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    now: u64,
    in_flight: u64,
    snapshots: Vec<Option<Node>>,
    restored: Vec<bool>,
    edges: Vec<(usize, usize)>,
    accepts: Vec<(usize, NodeId)>,
    payments: Vec<PaymentRecord>,
    payment_end: u64,
    last_expiry: u64,
    report: SimReport,
    /// Nodes whose messages to each other are printed (`OFFST_SIM_TRACE=3,17`).
    trace: Vec<usize>,
    /// The identities, to rebuild nodes from their stores.
    identities: Vec<Identity>,
    /// Per node, a store fed only with its changes (with `verify_persistence`).
    stores: Vec<ShadowStore>,
}

/// An in-memory store that keeps what [`Node::take_changes`] reports, as a durable wallet
/// does with its tables.
#[derive(Clone, Debug, Default)]
struct ShadowStore {
    channels: BTreeMap<NodeId, Vec<u8>>,
    pending: BTreeMap<(NodeId, RequestId), Vec<u8>>,
    queued: BTreeMap<(NodeId, u64), Vec<u8>>,
    payments: BTreeMap<u64, Vec<u8>>,
    invoices: BTreeMap<u64, Vec<u8>>,
    outcomes: BTreeMap<u64, Vec<u8>>,
    settings: Vec<u8>,
}

impl ShadowStore {
    /// A fresh store holding the whole node, keyed the way changes are. The node's own record of
    /// what its store holds is reset to match (as a wallet restored from a backup reads it back
    /// from the restored file), so its next changes apply to this store.
    fn from_parts(node: &mut Node) -> ShadowStore {
        let mut store = ShadowStore::default();
        node.mark_all_changed();
        store.apply(node.take_changes());
        store
    }

    fn apply(&mut self, changes: Changes) {
        fn put<K: Ord>(map: &mut BTreeMap<K, Vec<u8>>, rows: Vec<(K, Option<Vec<u8>>)>) {
            for (k, v) in rows {
                match v {
                    Some(bytes) => map.insert(k, bytes),
                    None => map.remove(&k),
                };
            }
        }
        put(&mut self.channels, changes.channels);
        put(&mut self.pending, changes.pending);
        put(&mut self.queued, changes.queued);
        put(&mut self.payments, changes.payments);
        put(&mut self.invoices, changes.invoices);
        put(&mut self.outcomes, changes.outcomes);
        self.settings = changes.settings;
    }

    fn parts(&self) -> Parts {
        fn rows(table: &BTreeMap<u64, Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
            table.iter().map(|(row, v)| (*row, v.clone())).collect()
        }
        Parts {
            channels: self.channels.values().cloned().collect(),
            pending: self.pending.values().cloned().collect(),
            queued: self.queued.values().cloned().collect(),
            payments: rows(&self.payments),
            invoices: rows(&self.invoices),
            outcomes: self.outcomes.values().cloned().collect(),
            settings: self.settings.clone(),
        }
    }
}

/// A request's id as traces and reports show it: its first two bytes.
fn short(id: &crate::protocol::payment::RequestId) -> String {
    format!("{:02x}{:02x}", id.0[0], id.0[1])
}

/// Operations in one line, for traces.
fn ops_of(ops: &[crate::protocol::channel::Op]) -> String {
    use crate::protocol::channel::Op;
    ops.iter()
        .map(|op| {
            let id = op.request_id().map(|r| short(&r)).unwrap_or_default();
            match op {
                Op::SetLimit { .. } => "limit".to_string(),
                Op::Request(_) => format!("req {id}"),
                Op::Response { .. } => format!("resp {id}"),
                Op::Cancel { .. } => format!("cancel {id}"),
                Op::Collect { .. } => format!("collect {id}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A channel in one line, for traces: the counter of the move before the last, the last move
/// with its operations, and how many operations wait in the queue.
pub fn describe_channel(ch: &crate::protocol::channel::Channel) -> String {
    let tip = ch.tip();
    format!(
        "base {} last {} queue {}",
        tip.prev_header.as_ref().map_or(0, |h| h.header.counter),
        tip.last.as_ref().map_or(String::new(), |m| {
            format!("{} [{}]", m.header.counter, ops_of(&m.ops))
        }),
        ch.queue().len()
    )
}

/// What handling a message gave, in one line, for traces: the messages sent, or the error.
pub fn describe_outcome(result: &Result<Vec<Output>, ProtocolError>) -> String {
    match result {
        Ok(out) => out
            .iter()
            .filter_map(|o| match o {
                Output::Send { message, .. } => Some(describe(message)),
                Output::Event(_) => None,
            })
            .collect::<Vec<_>>()
            .join(" | "),
        Err(e) => format!("error: {e}"),
    }
}

/// A one-line summary of a message, for traces (here and in the channel property test).
pub fn describe(m: &Message) -> String {
    match m {
        Message::Move(mv) => format!("move {} [{}]", mv.header.counter, ops_of(&mv.ops)),
        Message::RequestToken { epoch, counter } => format!("token? (has {epoch}.{counter})"),
        Message::Offer(o) => format!(
            "offer tip {} [{}] reply {} resolutions {}",
            o.tip.last.as_ref().map_or(0, |l| l.header.counter),
            o.tip
                .last
                .as_ref()
                .map_or(String::new(), |l| ops_of(&l.ops)),
            o.reply_wanted,
            o.resolutions.len()
        ),
        Message::Commit(c) => format!("commit ({} routes)", c.request_ids.len()),
        Message::Abandon(_) => "abandon".to_string(),
        Message::ResetProposal(p) => format!("reset proposal (epoch {})", p.terms.epoch),
        Message::ResetAccept(c) => format!("reset accepted (epoch {})", c.terms.epoch),
        Message::Paid(_) => "paid".to_string(),
        Message::EarlyCommit(c) => format!("early commit ({} routes)", c.request_ids.len()),
        Message::Accepted(a) => format!("accepted ({} routes)", a.responses.len()),
    }
}

const MAX_VIOLATION_NOTES: usize = 20;
const TICK_MS: u64 = 1000;

impl Sim {
    /// Build the network and its friendships for `cfg`.
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = SimRng::new(cfg.seed);
        let n = cfg.nodes.max(2);
        let mut nodes = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut identities = Vec::with_capacity(n);
        for _ in 0..n {
            let rate = Rate {
                base: rng.range(0, 2),
                ppm: rng.range(0, 20_000) as u32,
            };
            let identity = Identity::from_seed(rng.bytes32());
            let node = Node::new(identity.clone(), rate);
            ids.push(node.id());
            nodes.push(node);
            identities.push(identity);
        }
        let index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let currencies = (0..cfg.currencies.max(1))
            .filter_map(|i| Currency::new(["hours", "EUR", "loaves", "USD"][i % 4]).ok())
            .collect();
        let mut sim = Sim {
            report: SimReport {
                seed: cfg.seed,
                nodes: n,
                payments: cfg.payments,
                ..SimReport::default()
            },
            cfg,
            rng,
            nodes,
            ids,
            index,
            adj: vec![Vec::new(); n],
            currencies,
            online: vec![true; n],
            mailbox: vec![Vec::new(); n],
            heap: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now: 0,
            in_flight: 0,
            snapshots: vec![None; n],
            restored: vec![false; n],
            edges: Vec::new(),
            accepts: Vec::new(),
            payments: Vec::new(),
            payment_end: 0,
            last_expiry: 0,
            trace: std::env::var("OFFST_SIM_TRACE")
                .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
                .unwrap_or_default(),
            identities,
            stores: vec![ShadowStore::default(); n],
        };
        sim.build_graph();
        sim.persist();
        sim
    }

    fn build_graph(&mut self) {
        let n = self.nodes.len();
        let mut edges = Vec::new();
        for i in 1..n {
            let j = self.rng.below(i as u64) as usize;
            edges.push((i, j));
        }
        for i in 0..n {
            for _ in 0..self.cfg.extra_friends_per_node {
                let j = self.rng.below(n as u64) as usize;
                if j != i
                    && !edges
                        .iter()
                        .any(|&(a, b)| (a, b) == (i, j) || (a, b) == (j, i))
                {
                    edges.push((i, j));
                }
            }
        }
        for &(a, b) in &edges {
            self.adj[a].push(b);
            self.adj[b].push(a);
            let (ia, ib) = (self.ids[a], self.ids[b]);
            let ok = self.nodes[a].add_friend(ib).is_ok() && self.nodes[b].add_friend(ia).is_ok();
            if !ok {
                self.violation(format!("could not befriend {a} and {b}"));
            }
        }
        self.report.friendships = edges.len();
        self.edges = edges.clone();
        // Limits, both ways, in every currency.
        for &(a, b) in &edges {
            for (x, y) in [(a, b), (b, a)] {
                for c in self.currencies.clone() {
                    let limit = self.rng.range(50, 300);
                    let friend = self.ids[y];
                    match self.nodes[x].set_limit(friend, c, limit) {
                        Ok(out) => self.emit(x, out),
                        Err(e) => self.violation(format!("set_limit: {e}")),
                    }
                }
            }
        }
        // Let the limits settle with everyone online.
        self.run_until(u64::MAX, true);
    }

    fn traced(&self, a: usize, b: usize) -> bool {
        self.trace.contains(&a) && self.trace.contains(&b)
    }

    fn violation(&mut self, what: String) {
        self.report.invariant_violations += 1;
        if self.report.violations.len() < MAX_VIOLATION_NOTES {
            self.report.violations.push(what);
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        if matches!(ev, Ev::Deliver { .. }) {
            self.in_flight += 1;
        }
        self.events.insert(self.seq, ev);
        self.heap.push(Reverse((at, self.seq)));
    }

    fn delay(&mut self) -> u64 {
        self.rng.range(1, self.cfg.max_delay_ms.max(1))
    }

    fn emit(&mut self, from: usize, outputs: Vec<Output>) {
        for out in outputs {
            match out {
                Output::Send { to, message } => {
                    let Some(&to) = self.index.get(&to) else {
                        self.violation(format!("node {from} sent to an unknown node"));
                        continue;
                    };
                    match message {
                        Message::Move(_) => self.report.moves += 1,
                        Message::Offer(_) => self.report.offers += 1,
                        _ => {}
                    }
                    let bytes = match message.encode() {
                        Ok(b) => b,
                        Err(e) => {
                            self.violation(format!("node {from} could not encode: {e}"));
                            continue;
                        }
                    };
                    self.report.messages += 1;
                    self.report.bytes += bytes.len() as u64;
                    if self.cfg.drop_fraction > 0.0 && self.rng.chance(self.cfg.drop_fraction) {
                        self.report.messages_lost += 1;
                        continue;
                    }
                    if self.rng.chance(self.cfg.duplicate_fraction) {
                        let at = self.now + self.delay();
                        self.schedule(
                            at,
                            Ev::Deliver {
                                to,
                                from,
                                bytes: bytes.clone(),
                            },
                        );
                    }
                    let at = self.now + self.delay();
                    self.schedule(at, Ev::Deliver { to, from, bytes });
                }
                Output::Event(Event::Resynced { .. }) => self.report.resyncs += 1,
                Output::Event(Event::ResetProposed { friend, .. }) => {
                    self.accepts.push((from, friend))
                }
                Output::Event(Event::ChannelReset { .. }) => self.report.resets += 1,
                Output::Event(_) => {}
            }
        }
    }

    /// Process events until `until`; with `drain`, stop as soon as no message is in flight.
    fn run_until(&mut self, until: u64, drain: bool) {
        while let Some(Reverse((at, seq))) = self.heap.peek().copied() {
            if at > until || (drain && self.in_flight == 0) {
                break;
            }
            self.heap.pop();
            self.now = self.now.max(at);
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.step(ev);
            // A proposed reset is accepted by the simulated user as soon as it is shown.
            while let Some((who, friend)) = self.accepts.pop() {
                match self.nodes[who].accept_reset(friend) {
                    Ok(out) => self.emit(who, out),
                    // Superseded by a crossing proposal: nothing to accept.
                    Err(NodeError::NoResetProposed(_)) => {}
                    Err(e) => self.violation(format!("accept_reset: {e}")),
                }
            }
            self.persist();
        }
    }

    /// With `verify_persistence`, hand every node's changes to its shadow store, as a durable
    /// step does after each input.
    fn persist(&mut self) {
        if !self.cfg.verify_persistence {
            return;
        }
        for (node, store) in self.nodes.iter_mut().zip(&mut self.stores) {
            store.apply(node.take_changes());
        }
    }

    /// With `verify_persistence`, rebuild every node from its store alone and compare.
    fn check_persistence(&mut self) {
        if !self.cfg.verify_persistence {
            return;
        }
        self.persist();
        for i in 0..self.nodes.len() {
            let parts = self.stores[i].parts();
            let note = match Node::from_parts(self.identities[i].clone(), &parts) {
                Ok(rebuilt) if rebuilt.parts() == self.nodes[i].parts() => continue,
                Ok(_) => format!("node {i} rebuilt from its store differs from the live node"),
                Err(e) => format!("node {i} can't be rebuilt from its store: {e}"),
            };
            self.report.persistence_mismatches += 1;
            self.violation(note);
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, bytes } => {
                self.in_flight -= 1;
                if !self.online[to] {
                    self.mailbox[to].push((from, bytes));
                    return;
                }
                let message = match Message::decode(&bytes) {
                    Ok(m) => m,
                    Err(e) => return self.violation(format!("decode at {to}: {e}")),
                };
                let sender = self.ids[from];
                if self.traced(from, to) {
                    eprintln!(
                        "{:>7} {from:>3} -> {to:>3} {}",
                        self.now,
                        describe(&message)
                    );
                }
                let result = self.nodes[to].handle_message(self.now, sender, message);
                if self.traced(from, to) {
                    let channel = self.nodes[to]
                        .channel(&sender)
                        .map_or(String::new(), describe_channel);
                    eprintln!(
                        "          at {to}: {channel} sends {}",
                        describe_outcome(&result)
                    );
                }
                match result {
                    Ok(out) => self.emit(to, out),
                    Err(ProtocolError::InvoiceClosed) => self.report.late_commits += 1,
                    Err(ProtocolError::Channel {
                        error: ChannelError::Replayed { .. },
                        ..
                    }) => self.report.copies_dropped += 1,
                    // Moves of an epoch a reset closed, and proposals overtaken by another
                    // reset, are refused by design.
                    Err(ProtocolError::Channel {
                        error: ChannelError::OldEpoch { .. },
                        ..
                    })
                    | Err(ProtocolError::Reset {
                        error: ResetError::WrongEpoch { .. } | ResetError::NothingProposed,
                        ..
                    }) => self.report.stale_after_reset += 1,
                    Err(e) => {
                        let note = format!("node {to} refused a message from {from}: {e}");
                        if !(self.restored[to] || self.restored[from]) {
                            self.violation(note);
                        }
                    }
                }
            }
            Ev::Online(n) => {
                self.online[n] = true;
                // The relay hands over held mail; it arrives in no particular order.
                for (from, bytes) in std::mem::take(&mut self.mailbox[n]) {
                    let at = self.now + self.delay();
                    self.schedule(at, Ev::Deliver { to: n, from, bytes });
                }
            }
            Ev::Offline(n) => {
                if self.now < self.payment_end {
                    self.online[n] = false;
                }
            }
            Ev::Tick(n) => {
                if self.online[n] {
                    let out = self.nodes[n].tick(self.now);
                    self.emit(n, out);
                }
                if self.now <= self.last_expiry + 2 * TICK_MS || self.now < self.payment_end {
                    self.schedule(self.now + TICK_MS, Ev::Tick(n));
                }
            }
            Ev::Pay(i) => self.pay(i),
            Ev::Abandon(buyer, invoice) => match self.nodes[buyer].abandon_payment(invoice) {
                Ok(out) => {
                    self.report.abandoned += 1;
                    self.emit(buyer, out);
                }
                // Too late (committed) or the buyer forgot it (restored): nothing to do.
                Err(NodeError::AlreadyCommitted(_) | NodeError::UnknownPayment(_)) => {}
                Err(e) => self.violation(format!("abandon: {e}")),
            },
            Ev::ProposeReset(a, b) => {
                let friend = self.ids[b];
                match self.nodes[a].propose_reset(friend) {
                    Ok(out) => self.emit(a, out),
                    Err(e) => self.violation(format!("propose_reset: {e}")),
                }
            }
            Ev::Snapshot(n) => self.snapshots[n] = Some(self.nodes[n].clone()),
            Ev::Restore(n) => {
                if let Some(old) = self.snapshots[n].take() {
                    if self.trace.contains(&n) {
                        eprintln!("{:>7} node {n} restored from its snapshot", self.now);
                    }
                    self.nodes[n] = old;
                    // Restoring a backup replaces the whole store.
                    if self.cfg.verify_persistence {
                        self.stores[n] = ShadowStore::from_parts(&mut self.nodes[n]);
                    }
                    self.restored[n] = true;
                    self.report.restores += 1;
                    let out = self.nodes[n].restored();
                    self.emit(n, out);
                }
            }
        }
    }

    fn pay(&mut self, i: usize) {
        let n = self.nodes.len() as u64;
        let buyer = self.rng.below(n) as usize;
        let mut seller = self.rng.below(n - 1) as usize;
        if seller >= buyer {
            seller += 1;
        }
        let currency = self.currencies[self.rng.below(self.currencies.len() as u64) as usize];
        let amount = self.rng.range(1, 40);
        let expires = self.now + self.cfg.invoice_ttl_ms;
        self.last_expiry = self.last_expiry.max(expires);
        let entropy = self.rng.bytes32();
        let invoice = match self.nodes[seller].create_invoice(
            currency,
            amount,
            expires,
            format!("payment {i}"),
            entropy,
        ) {
            Ok(inv) => inv,
            Err(e) => return self.violation(format!("create_invoice: {e}")),
        };
        let plans = self.plan_routes(buyer, seller, amount, &currency);
        let routes = plans.len();
        let entropy = self.rng.bytes32();
        let result = if plans.is_empty() {
            None
        } else {
            self.nodes[buyer]
                .pay(self.now, &invoice, plans, entropy)
                .ok()
        };
        let paid = result.is_some();
        if let Some(out) = result {
            self.emit(buyer, out);
            if self.rng.chance(self.cfg.abandon_fraction) {
                let at = self.now + self.rng.below(self.cfg.invoice_ttl_ms);
                self.schedule(at, Ev::Abandon(buyer, invoice.terms.id));
            }
        }
        self.payments.push(PaymentRecord {
            buyer,
            seller,
            invoice: paid.then_some(invoice.terms.id),
            routes,
        });
    }

    /// Capacity left for `a` to send to `b`, from `a`'s own view of the channel.
    fn capacity(&self, a: usize, b: usize, currency: &Currency) -> u64 {
        self.nodes[a]
            .channel(&self.ids[b])
            .and_then(|ch| {
                let line = ch.state().lines.get(currency)?;
                Some(line.can_send(ch.local_side()))
            })
            .unwrap_or(0)
    }

    /// Routes that together deliver `amount`, fees quoted from each mediator's rate; empty if
    /// none are found. Sometimes splits on purpose so that multi-route payments are common.
    fn plan_routes(
        &mut self,
        buyer: usize,
        seller: usize,
        amount: u64,
        c: &Currency,
    ) -> Vec<RoutePlan> {
        let mut used: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        let mut plans = Vec::new();
        let mut remaining = amount;
        let split = if self.rng.chance(0.25) {
            self.rng.range(2, 3)
        } else {
            1
        };
        let per_route_cap = amount.div_ceil(split);
        let mut blocked: Vec<(usize, usize)> = Vec::new();
        let mut attempts = 0;
        while remaining > 0 && plans.len() < self.cfg.max_routes && attempts < 8 {
            attempts += 1;
            let Some(path) = self.bfs(buyer, seller, c, &used, &blocked) else {
                break;
            };
            let cap = |sim: &Sim, a: usize, b: usize| {
                sim.capacity(a, b, c)
                    .saturating_sub(used.get(&(a, b)).copied().unwrap_or(0))
            };
            let fees_for = |dest: u64| -> Option<Vec<u64>> {
                path[1..path.len() - 1]
                    .iter()
                    .map(|&m| self.nodes[m].rate().fee(dest))
                    .collect()
            };
            let fits = |dest: u64| -> bool {
                let Some(fees) = fees_for(dest) else {
                    return false;
                };
                (0..path.len() - 1).all(|k| {
                    let need: u64 = dest + fees[k..].iter().sum::<u64>();
                    cap(self, path[k], path[k + 1]) >= need
                })
            };
            let (mut lo, mut hi) = (0, remaining.min(per_route_cap));
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if fits(mid) { lo = mid } else { hi = mid - 1 }
            }
            if lo == 0 {
                // The narrowest hop can't carry anything: avoid it and look again.
                let narrow = (0..path.len() - 1)
                    .min_by_key(|&k| cap(self, path[k], path[k + 1]))
                    .unwrap_or(0);
                blocked.push((path[narrow], path[narrow + 1]));
                continue;
            }
            let Some(fees) = fees_for(lo) else { break };
            for k in 0..path.len() - 1 {
                let need = lo + fees[k..].iter().sum::<u64>();
                *used.entry((path[k], path[k + 1])).or_default() += need;
            }
            remaining -= lo;
            plans.push(RoutePlan {
                route: path.iter().map(|&i| self.ids[i]).collect(),
                fees,
                dest_payment: lo,
            });
        }
        if remaining > 0 {
            return Vec::new();
        }
        plans
    }

    /// A shortest path with some capacity on every hop, neighbours visited in random order.
    fn bfs(
        &mut self,
        from: usize,
        to: usize,
        c: &Currency,
        used: &BTreeMap<(usize, usize), u64>,
        blocked: &[(usize, usize)],
    ) -> Option<Vec<usize>> {
        let n = self.nodes.len();
        let mut prev = vec![usize::MAX; n];
        let mut depth = vec![0usize; n];
        prev[from] = from;
        let mut queue = VecDeque::from([from]);
        while let Some(a) = queue.pop_front() {
            if a == to {
                break;
            }
            if depth[a] + 2 > 10 {
                continue;
            }
            let mut next = self.adj[a].clone();
            for i in (1..next.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                next.swap(i, j);
            }
            for b in next {
                let room = self
                    .capacity(a, b, c)
                    .saturating_sub(used.get(&(a, b)).copied().unwrap_or(0));
                if prev[b] == usize::MAX && room > 0 && !blocked.contains(&(a, b)) {
                    prev[b] = a;
                    depth[b] = depth[a] + 1;
                    queue.push_back(b);
                }
            }
        }
        if prev[to] == usize::MAX {
            return None;
        }
        let mut path = vec![to];
        while let Some(&last) = path.last() {
            if last == from {
                break;
            }
            path.push(prev[last]);
        }
        path.reverse();
        Some(path)
    }

    /// Schedule payments, offline periods, restores and ticks, run to quiescence and check.
    pub fn run(mut self) -> SimReport {
        let n = self.nodes.len();
        let start = self.now + 1000;
        let interval = self.cfg.payment_interval_ms.max(1);
        self.payment_end = start + interval * self.cfg.payments as u64 + 1;
        for i in 0..self.cfg.payments {
            self.schedule(start + interval * i as u64, Ev::Pay(i));
        }
        let f = self.cfg.offline_fraction.clamp(0.0, 0.95);
        if f > 0.0 {
            let cycle = 10_000.0;
            for node in 0..n {
                let mut t = start + self.rng.below(cycle as u64);
                while t < self.payment_end {
                    let off = (cycle * f * (0.5 + self.rng.below(1000) as f64 / 1000.0)) as u64;
                    let on =
                        (cycle * (1.0 - f) * (0.5 + self.rng.below(1000) as f64 / 1000.0)) as u64;
                    self.schedule(t, Ev::Offline(node));
                    self.schedule(t + off.max(1), Ev::Online(node));
                    t += off.max(1) + on.max(1);
                }
            }
        }
        let restores = (self.cfg.restore_fraction.clamp(0.0, 1.0) * n as f64).round() as usize;
        for _ in 0..restores {
            let node = self.rng.below(n as u64) as usize;
            let span = self.payment_end - start;
            let snap = start + self.rng.below(span / 2 + 1);
            let back = snap + self.rng.below(span / 2 + 1) + 1;
            self.schedule(snap, Ev::Snapshot(node));
            self.schedule(back, Ev::Restore(node));
        }
        let resets =
            (self.cfg.reset_fraction.clamp(0.0, 1.0) * self.edges.len() as f64).round() as usize;
        for _ in 0..resets {
            let (a, b) = self.edges[self.rng.below(self.edges.len() as u64) as usize];
            let (a, b) = if self.rng.chance(0.5) { (a, b) } else { (b, a) };
            let at = start + self.rng.below(self.payment_end - start);
            self.schedule(at, Ev::ProposeReset(a, b));
        }
        for node in 0..n {
            let at = start + self.rng.below(TICK_MS);
            self.schedule(at, Ev::Tick(node));
        }
        self.run_until(self.payment_end, false);
        // Quiescence: everyone comes online for good, time runs past every expiry.
        for node in 0..n {
            self.schedule(self.now, Ev::Online(node));
        }
        self.run_until(u64::MAX, false);
        self.report.simulated_ms = self.now;
        self.check_persistence();
        self.check();
        self.report
    }

    fn check(&mut self) {
        let n = self.nodes.len();
        // Restores and resets may legitimately change what one side believes it is owed, so
        // the per-node accounting check only applies without them.
        let any_restore = self.restored.iter().any(|r| *r) || self.report.resets > 0;
        // Friends agree.
        let mut notes: Vec<String> = Vec::new();
        let mut sums: BTreeMap<Currency, i128> = BTreeMap::new();
        for a in 0..n {
            for &b in &self.adj[a].clone() {
                let (ia, ib) = (self.ids[a], self.ids[b]);
                let (Some(x), Some(y)) = (self.nodes[a].channel(&ib), self.nodes[b].channel(&ia))
                else {
                    continue;
                };
                if a < b {
                    if x.counter() != y.counter()
                        || x.last_hash() != y.last_hash()
                        || x.state() != y.state()
                    {
                        self.report.disagreeing_pairs += 1;
                        let note = format!(
                            "friends {a} and {b} disagree: moves {} vs {}",
                            x.counter(),
                            y.counter()
                        );
                        // A disagreement explains the rest: report it first.
                        notes.insert(0, note);
                    }
                    let frozen: u128 = x
                        .state()
                        .pending
                        .values()
                        .map(|p| u128::from(p.amount))
                        .sum();
                    self.report.frozen_left += frozen;
                    for p in x.state().pending.values() {
                        let route: Vec<String> = p
                            .request
                            .terms
                            .route
                            .iter()
                            .map(|id| {
                                let i = self.index[id];
                                if self.restored[i] {
                                    format!("{i}*")
                                } else {
                                    i.to_string()
                                }
                            })
                            .collect();
                        let payer = self.index[&x.parties().id(p.payer)];
                        notes.push(format!(
                            "request {} frozen between {a} and {b} (payer {payer}, answered {}), route {} (* = restored)",
                            short(&p.request.terms.request_id),
                            p.response.is_some(),
                            route.join("-")
                        ));
                    }
                }
                let side = x.local_side();
                let mut bad_limits = Vec::new();
                for (c, line) in &x.state().lines {
                    *sums.entry(*c).or_default() += line.balance_of(side);
                    if !line.limits_hold() {
                        bad_limits.push(format!("limits broken between {a} and {b} in {c}"));
                    }
                }
                notes.extend(bad_limits);
                if !x.queue().is_empty() {
                    notes.push(format!(
                        "node {a} still has {} operations queued for {b} (moves {} / {}, token {} / {}, asked {})",
                        x.queue().len(), x.counter(), y.counter(), x.holds_token(), y.holds_token(), x.token_requested()
                    ));
                }
            }
        }
        for note in notes.drain(..) {
            self.violation(note);
        }
        self.report.sum_of_balances = sums.values().sum();
        for (c, s) in sums {
            if s != 0 {
                self.violation(format!("balances in {c} sum to {s}, not 0"));
            }
        }
        // Every payment ended, consistently at buyer and seller.
        let mut expected: Vec<BTreeMap<Currency, i128>> = vec![BTreeMap::new(); n];
        for i in 0..self.payments.len() {
            let (buyer, seller, routes) = (
                self.payments[i].buyer,
                self.payments[i].seller,
                self.payments[i].routes,
            );
            let Some(invoice) = self.payments[i].invoice else {
                self.report.cancelled += 1;
                self.report.refused += 1;
                continue;
            };
            let sold = self.nodes[seller].invoice_status(&invoice).cloned();
            let bought = self.nodes[buyer]
                .payment(&invoice)
                .map(|(s, r)| (s, r.cloned()));
            match bought {
                Some((PaymentStatus::Completed, Some(receipt))) => {
                    self.report.completed += 1;
                    if routes > 1 {
                        self.report.completed_multi_route += 1;
                    }
                    if receipt.verify().is_err() || receipt.invoice_id() != invoice {
                        self.violation(format!("payment {i}: receipt does not verify"));
                    }
                    if !matches!(sold, Some(InvoiceStatus::Paid(_))) && !self.restored[seller] {
                        self.violation(format!("payment {i}: receipt but seller shows {sold:?}"));
                    }
                    for terms in self.nodes[buyer].collected_routes(&invoice) {
                        let c = &terms.currency;
                        for (k, node) in terms.route.iter().enumerate() {
                            let idx = self.index[node];
                            let inflow = if k == 0 {
                                0
                            } else {
                                terms.hop_amount(k - 1).unwrap_or(0)
                            };
                            let outflow = if k + 1 == terms.route.len() {
                                0
                            } else {
                                terms.hop_amount(k).unwrap_or(0)
                            };
                            *expected[idx].entry(*c).or_default() +=
                                i128::from(inflow) - i128::from(outflow);
                        }
                    }
                }
                Some((PaymentStatus::Cancelled, _)) => {
                    self.report.cancelled += 1;
                    if matches!(sold, Some(InvoiceStatus::Paid(_))) && !any_restore {
                        self.violation(format!(
                            "payment {i}: cancelled at the buyer but paid at the seller"
                        ));
                    }
                }
                other => {
                    if self.restored[buyer] {
                        // The buyer forgot this payment with its old snapshot; the seller's view
                        // tells how it ended.
                        if matches!(sold, Some(InvoiceStatus::Paid(_))) {
                            self.report.completed += 1;
                        } else {
                            self.report.cancelled += 1;
                        }
                    } else {
                        let routes: Vec<String> = self.nodes[buyer]
                            .route_states(&invoice)
                            .iter()
                            .map(|(id, what)| format!("{} {what}", short(id)))
                            .collect();
                        self.violation(format!(
                            "payment {i} (buyer {buyer}, seller {seller}) did not end: {:?}, routes {routes:?}",
                            other.map(|o| o.0)
                        ));
                    }
                }
            }
        }
        // Every balance is exactly what the completed payments say.
        if !any_restore {
            for (a, exp) in expected.iter().enumerate() {
                let mut actual: BTreeMap<Currency, i128> = BTreeMap::new();
                for &b in &self.adj[a] {
                    if let Some(ch) = self.nodes[a].channel(&self.ids[b]) {
                        for (c, line) in &ch.state().lines {
                            *actual.entry(*c).or_default() += line.balance_of(ch.local_side());
                        }
                    }
                }
                for c in &self.currencies {
                    let want = exp.get(c).copied().unwrap_or(0);
                    let got = actual.get(c).copied().unwrap_or(0);
                    if want != got {
                        notes.push(format!("node {a} holds {got} {c}, its payments say {want}"));
                    }
                }
            }
        }
        for note in notes {
            self.violation(note);
        }
        if self.report.frozen_left != 0 {
            let note = format!("{} credit left frozen", self.report.frozen_left);
            self.violation(note);
        }
        if self.report.completed + self.report.cancelled != self.report.payments {
            self.violation("completed + cancelled != payments".into());
        }
    }
}

/// Run one simulation.
pub fn run(cfg: SimConfig) -> SimReport {
    Sim::new(cfg).run()
}
