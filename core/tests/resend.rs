//! `Node::resend`: after a reconnect, whatever may not have arrived is sent again, and copies
//! are harmless. (Relays do not lose mail they accepted; this covers a wallet that crashed or
//! lost its connection before a message was accepted.)

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{chain, give_token, hours};
use offst_core::protocol::amount::Rate;
use offst_core::protocol::message::Message;
use offst_core::protocol::node::PaymentStatus;
use offst_core::sim::local::entropy;

#[test]
fn lost_moves_and_commits_are_recovered_by_resend() {
    let (mut net, ids) = chain(3, 100, Rate { base: 1, ppm: 0 });
    // The commit after the answers (the classic way), so it is lost after they came.
    net.commit_after_answers();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    give_token(&mut net, a, b);
    let invoice = net.invoice(c, &hours(), 10, 31).unwrap();
    let plan = net.plan(&[a, b, c], 10).unwrap();
    // The move carrying the request is lost.
    let _lost = net
        .node_mut(&a)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(31, 2))
        .unwrap();
    net.run().unwrap();
    assert!(
        net.node(&b)
            .unwrap()
            .channel(&c)
            .unwrap()
            .state()
            .pending
            .is_empty()
    );
    // Reconnect: resend. Twice, to show copies are harmless.
    for _ in 0..2 {
        let out = net.node_mut(&a).unwrap().resend();
        net.absorb(a, out);
    }
    // Deliver, but lose the buyer's commit the first time it is sent.
    let mut dropped_commit = false;
    while let Some((from, to, msg)) = net.queue.pop_front() {
        if matches!(msg, Message::Commit(_)) && !dropped_commit {
            dropped_commit = true;
            continue;
        }
        // Copies of moves are refused as replays; that is the point.
        if let Ok(out) = net.node_mut(&to).unwrap().handle_message(0, from, msg) {
            net.absorb(to, out);
        }
    }
    assert!(dropped_commit);
    assert_eq!(
        net.node(&a).unwrap().payment(&invoice.terms.id).unwrap().0,
        PaymentStatus::InFlight
    );
    let out = net.node_mut(&a).unwrap().resend();
    net.absorb(a, out);
    while let Some((from, to, msg)) = net.queue.pop_front() {
        if let Ok(out) = net.node_mut(&to).unwrap().handle_message(0, from, msg) {
            net.absorb(to, out);
        }
    }
    let (status, receipt) = net.node(&a).unwrap().payment(&invoice.terms.id).unwrap();
    assert_eq!(status, PaymentStatus::Completed);
    assert!(receipt.unwrap().verify().is_ok());
    assert_eq!(
        (
            net.net(&a, &hours()),
            net.net(&b, &hours()),
            net.net(&c, &hours())
        ),
        (-11, 1, 10),
        "paid exactly once, fee included"
    );
}
