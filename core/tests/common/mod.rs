//! Helpers shared by the integration tests.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(dead_code)]

use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::{Identity, NodeId};
use offst_core::sim::local::LocalNet;

pub fn hours() -> Currency {
    Currency::new("hours").expect("valid")
}

/// The identity LocalNet::add_node(seed, ..) uses.
pub fn identity(seed: u8) -> Identity {
    Identity::from_seed([seed; 32])
}

/// A chain of `n` friends (seeds 1..=n), limit `limit` both ways, every mediator charging
/// `rate`.
pub fn chain(n: u8, limit: u64, rate: Rate) -> (LocalNet, Vec<NodeId>) {
    let mut net = LocalNet::new();
    net.encode = true;
    let ids: Vec<NodeId> = (1..=n).map(|s| net.add_node(s, rate)).collect();
    for w in ids.windows(2) {
        net.befriend(w[0], w[1], &hours(), limit).expect("befriend");
    }
    (net, ids)
}

/// Make `holder` hold the token in its channel with `other` (so its next operation is sent at
/// once rather than queued).
pub fn give_token(net: &mut LocalNet, holder: NodeId, other: NodeId) {
    use offst_core::protocol::message::Message;
    let ch = net.node(&holder).unwrap().channel(&other).unwrap();
    if ch.holds_token() {
        return;
    }
    let counter = ch.counter();
    let out = net
        .node_mut(&other)
        .unwrap()
        .handle_message(0, holder, Message::RequestToken { epoch: 0, counter })
        .unwrap();
    net.absorb(other, out);
    net.run().unwrap();
    assert!(
        net.node(&holder)
            .unwrap()
            .channel(&other)
            .unwrap()
            .holds_token()
    );
}

/// Hand `m` from `from` to `to` directly, as if it had just arrived.
pub fn deliver_move(
    net: &mut LocalNet,
    from: NodeId,
    to: NodeId,
    m: offst_core::protocol::channel::Move,
) -> Result<(), offst_core::protocol::node::ProtocolError> {
    let now = net.now_ms;
    net.node_mut(&to)
        .expect("node")
        .handle_message(now, from, offst_core::protocol::message::Message::Move(m))
        .map(|_| ())
}
