//! A synchronous in-process network: every message is delivered in order, at once. The
//! simplest honest world, for stories, tests and benchmarks. (The simulator proper adds delays,
//! duplicates, reordering and offline periods.)

use std::collections::{BTreeMap, VecDeque};

use crate::protocol::amount::{Currency, Rate};
use crate::protocol::identity::{Identity, NodeId};
use crate::protocol::message::Message;
use crate::protocol::node::{Event, Node, NodeError, Output, ProtocolError, RoutePlan};
use crate::protocol::payment::Invoice;

/// Nodes by id and the messages between them.
#[derive(Clone, Debug, Default)]
pub struct LocalNet {
    /// The nodes.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Messages not yet delivered: (from, to, message).
    pub queue: VecDeque<(NodeId, NodeId, Message)>,
    /// Events per node, oldest first.
    pub events: BTreeMap<NodeId, Vec<Event>>,
    /// Messages delivered so far.
    pub delivered: u64,
    /// The time given to every call, in ms.
    pub now_ms: u64,
    /// When set, every message goes through its wire encoding.
    pub encode: bool,
}

/// Why a [`LocalNet`] step failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalNetError {
    /// A node refused a user action.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A node refused a message.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No such node.
    #[error("no node {0}")]
    NoNode(NodeId),
    /// A message failed to encode or decode.
    #[error("wire: {0}")]
    Wire(String),
}

impl LocalNet {
    /// An empty network.
    pub fn new() -> LocalNet {
        LocalNet::default()
    }

    /// Add a node from a seed byte (deterministic ids for tests) with a forwarding rate.
    pub fn add_node(&mut self, seed: u8, rate: Rate) -> NodeId {
        let node = Node::new(Identity::from_seed([seed; 32]), rate);
        let id = node.id();
        self.nodes.insert(id, node);
        id
    }

    /// Make every node's payments commit the classic way, after the seller's answers came
    /// back hop by hop ([`Node::set_early_commit`]), as with sellers that do not know early
    /// commits.
    pub fn commit_after_answers(&mut self) {
        for node in self.nodes.values_mut() {
            node.set_early_commit(false);
        }
    }

    /// The node `id`.
    pub fn node(&self, id: &NodeId) -> Result<&Node, LocalNetError> {
        self.nodes.get(id).ok_or(LocalNetError::NoNode(*id))
    }

    /// The node `id`, mutably.
    pub fn node_mut(&mut self, id: &NodeId) -> Result<&mut Node, LocalNetError> {
        self.nodes.get_mut(id).ok_or(LocalNetError::NoNode(*id))
    }

    /// Queue a node's outputs.
    pub fn absorb(&mut self, from: NodeId, outputs: Vec<Output>) {
        for out in outputs {
            match out {
                Output::Send { to, message } => self.queue.push_back((from, to, message)),
                Output::Event(e) => self.events.entry(from).or_default().push(e),
            }
        }
    }

    /// Make `a` and `b` friends, each letting the other owe `limit` in `currency`.
    pub fn befriend(
        &mut self,
        a: NodeId,
        b: NodeId,
        currency: &Currency,
        limit: u64,
    ) -> Result<(), LocalNetError> {
        self.node_mut(&a)?.add_friend(b)?;
        self.node_mut(&b)?.add_friend(a)?;
        self.set_limit(a, b, currency, limit)?;
        self.set_limit(b, a, currency, limit)?;
        Ok(())
    }

    /// `a` lets `b` owe it `limit`.
    pub fn set_limit(
        &mut self,
        a: NodeId,
        b: NodeId,
        currency: &Currency,
        limit: u64,
    ) -> Result<(), LocalNetError> {
        let out = self.node_mut(&a)?.set_limit(b, *currency, limit)?;
        self.absorb(a, out);
        self.run()
    }

    /// Deliver one message. Returns false when none is waiting.
    pub fn step(&mut self) -> Result<bool, LocalNetError> {
        let Some((from, to, message)) = self.queue.pop_front() else {
            return Ok(false);
        };
        let message = if self.encode {
            let bytes = message
                .encode()
                .map_err(|e| LocalNetError::Wire(e.to_string()))?;
            Message::decode(&bytes).map_err(|e| LocalNetError::Wire(e.to_string()))?
        } else {
            message
        };
        let now = self.now_ms;
        let out = self.node_mut(&to)?.handle_message(now, from, message)?;
        self.delivered += 1;
        self.absorb(to, out);
        Ok(true)
    }

    /// Deliver until nothing is waiting.
    pub fn run(&mut self) -> Result<(), LocalNetError> {
        while self.step()? {}
        Ok(())
    }

    /// Issue an invoice at `seller` (entropy derived from `nonce`).
    pub fn invoice(
        &mut self,
        seller: NodeId,
        currency: &Currency,
        amount: u64,
        nonce: u64,
    ) -> Result<Invoice, LocalNetError> {
        let expires = self.now_ms + 60_000;
        let invoice = self.node_mut(&seller)?.create_invoice(
            *currency,
            amount,
            expires,
            String::new(),
            entropy(nonce, 1),
        )?;
        Ok(invoice)
    }

    /// Pay `invoice` from `buyer` over `routes` and run to quiescence.
    pub fn pay(
        &mut self,
        buyer: NodeId,
        invoice: &Invoice,
        routes: Vec<RoutePlan>,
        nonce: u64,
    ) -> Result<(), LocalNetError> {
        let now = self.now_ms;
        let out = self
            .node_mut(&buyer)?
            .pay(now, invoice, routes, entropy(nonce, 2))?;
        self.absorb(buyer, out);
        self.run()
    }

    /// Buy `amount` from `seller` along `path` (buyer first), quoting each mediator its rate.
    pub fn buy_along(
        &mut self,
        path: &[NodeId],
        currency: &Currency,
        amount: u64,
        nonce: u64,
    ) -> Result<Invoice, LocalNetError> {
        let (Some(&buyer), Some(&seller)) = (path.first(), path.last()) else {
            return Err(LocalNetError::Wire("empty path".into()));
        };
        let invoice = self.invoice(seller, currency, amount, nonce)?;
        let plan = self.plan(path, amount)?;
        self.pay(buyer, &invoice, vec![plan], nonce)?;
        Ok(invoice)
    }

    /// A route plan along `path` delivering `dest_payment`, with every mediator's current fee.
    pub fn plan(&self, path: &[NodeId], dest_payment: u64) -> Result<RoutePlan, LocalNetError> {
        let mediators = path.get(1..path.len().saturating_sub(1)).unwrap_or(&[]);
        let mut fees = Vec::new();
        for m in mediators {
            let fee = self
                .node(m)?
                .rate()
                .fee(dest_payment)
                .ok_or_else(|| LocalNetError::Wire("fee overflow".into()))?;
            fees.push(fee);
        }
        Ok(RoutePlan {
            route: path.to_vec(),
            fees,
            dest_payment,
        })
    }

    /// `a`'s balance with `b` in `currency` (what `b` owes `a`).
    pub fn balance(&self, a: &NodeId, b: &NodeId, currency: &Currency) -> i128 {
        self.nodes
            .get(a)
            .and_then(|n| n.balance(b, currency))
            .map_or(0, |(bal, _)| bal)
    }

    /// `a`'s balance summed over all its friends.
    pub fn net(&self, a: &NodeId, currency: &Currency) -> i128 {
        self.nodes.get(a).map_or(0, |n| {
            n.friends()
                .filter_map(|f| n.balance(f, currency))
                .map(|(b, _)| b)
                .sum()
        })
    }
}

/// Deterministic 32 bytes for tests.
pub fn entropy(nonce: u64, salt: u8) -> [u8; 32] {
    let mut e = [salt; 32];
    e[..8].copy_from_slice(&nonce.to_le_bytes());
    e
}
