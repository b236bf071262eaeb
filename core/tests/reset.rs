//! Manual reset: the last resort when friends' logs can no longer be reconciled. Nothing moves
//! without both friends' signatures, the friend who accepts sees exactly what changes, moves of
//! the closed epoch are refused, and requests the agreed state drops end cleanly.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{chain, give_token, hours, identity};
use offst_core::protocol::amount::Rate;
use offst_core::protocol::channel::{ChannelError, ResetError, ResetProposal};
use offst_core::protocol::message::Message;
use offst_core::protocol::node::{Event, NodeError, PaymentStatus, ProtocolError};
use offst_core::sim::local::{LocalNet, entropy};

fn last_event(net: &LocalNet, who: &offst_core::protocol::identity::NodeId) -> Event {
    net.events
        .get(who)
        .and_then(|e| e.last().cloned())
        .expect("an event")
}

#[test]
fn reset_restarts_both_logs_from_the_agreed_state() {
    let (mut net, ids) = chain(2, 100, Rate::default());
    let (a, b) = (ids[0], ids[1]);
    net.buy_along(&[a, b], &hours(), 30, 1).unwrap();
    let old_move = net
        .node(&b)
        .unwrap()
        .channel(&a)
        .unwrap()
        .tip()
        .last
        .clone()
        .unwrap();
    let out = net.node_mut(&a).unwrap().propose_reset(b).unwrap();
    net.absorb(a, out);
    net.run().unwrap();
    // b's user is asked, and told nothing would change.
    let Event::ResetProposed { friend, changes } = last_event(&net, &b) else {
        panic!("b was not asked")
    };
    assert_eq!(friend, a);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(
        net.node(&b).unwrap().channel(&a).unwrap().epoch(),
        0,
        "nothing before accepting"
    );
    let out = net.node_mut(&b).unwrap().accept_reset(a).unwrap();
    net.absorb(b, out);
    net.run().unwrap();
    for (x, y) in [(a, b), (b, a)] {
        let ch = net.node(&x).unwrap().channel(&y).unwrap();
        assert_eq!((ch.epoch(), ch.counter()), (1, 0));
        assert!(matches!(
            last_event(&net, &x),
            Event::ChannelReset { epoch: 1, .. }
        ));
    }
    assert_eq!(
        net.balance(&a, &b, &hours()),
        -30,
        "the balance carries over"
    );
    // The new epoch's debt note verifies offline with the two keys alone.
    let tip = net.node(&a).unwrap().channel(&b).unwrap().tip().clone();
    let view = tip.verify(a, b).unwrap();
    assert_eq!(view.epoch, 1);
    assert_eq!(
        tip.mutually_signed_state().unwrap().lines[&hours()]
            .balance_of(net.node(&a).unwrap().channel(&b).unwrap().local_side()),
        -30
    );
    // Payments go on in the new epoch.
    net.buy_along(&[b, a], &hours(), 10, 2).unwrap();
    assert_eq!(net.balance(&a, &b, &hours()), -20);
    let ch = net.node(&a).unwrap().channel(&b).unwrap();
    assert!(ch.counter() > 0);
    assert_eq!(ch.tip().last.as_ref().unwrap().header.epoch, 1);
    // A move of the closed epoch is refused and changes nothing.
    let before = format!("{:?}", net.node(&b).unwrap().channel(&a).unwrap().tip());
    let err = net
        .node_mut(&b)
        .unwrap()
        .handle_message(0, a, Message::Move(old_move))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Channel {
                error: ChannelError::OldEpoch {
                    epoch: 0,
                    current: 1
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        before,
        format!("{:?}", net.node(&b).unwrap().channel(&a).unwrap().tip())
    );
}

#[test]
fn the_friend_sees_every_difference_and_nothing_moves_unless_it_accepts() {
    let (mut net, ids) = chain(2, 100, Rate::default());
    let (a, b) = (ids[0], ids[1]);
    // a sends b a request that never arrives (lost to a bug), so their views differ.
    give_token(&mut net, a, b);
    let invoice = net.invoice(b, &hours(), 25, 3).unwrap();
    let plan = net.plan(&[a, b], 25).unwrap();
    let _lost = net
        .node_mut(&a)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(3, 2))
        .unwrap();
    let out = net.node_mut(&a).unwrap().propose_reset(b).unwrap();
    net.absorb(a, out);
    net.run().unwrap();
    let Event::ResetProposed { changes, .. } = last_event(&net, &b) else {
        panic!("b was not asked")
    };
    assert_eq!(
        changes.requests_added.len(),
        1,
        "b is shown the request it never saw"
    );
    assert!(changes.balances.is_empty());
    let b_before = format!("{:?}", net.node(&b).unwrap().channel(&a).unwrap().state());
    net.node_mut(&b).unwrap().decline_reset(a).unwrap();
    assert_eq!(
        b_before,
        format!("{:?}", net.node(&b).unwrap().channel(&a).unwrap().state())
    );
    assert_eq!(
        net.node_mut(&b).unwrap().accept_reset(a).unwrap_err(),
        NodeError::NoResetProposed(a)
    );
    // a proposes again; this time b accepts, takes on the request, and the payment completes.
    let out = net.node_mut(&a).unwrap().propose_reset(b).unwrap();
    net.absorb(a, out);
    net.run().unwrap();
    let out = net.node_mut(&b).unwrap().accept_reset(a).unwrap();
    net.absorb(b, out);
    net.run().unwrap();
    assert_eq!(
        net.node(&a).unwrap().payment(&invoice.terms.id).unwrap().0,
        PaymentStatus::Completed
    );
    assert_eq!(net.balance(&b, &a, &hours()), 25);
}

#[test]
fn requests_the_agreed_state_drops_end_cleanly() {
    let (mut net, ids) = chain(2, 100, Rate::default());
    let (a, b) = (ids[0], ids[1]);
    give_token(&mut net, a, b);
    let invoice = net.invoice(b, &hours(), 25, 4).unwrap();
    let plan = net.plan(&[a, b], 25).unwrap();
    let _lost = net
        .node_mut(&a)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(4, 2))
        .unwrap();
    // b, which never saw the request, proposes its own view; a accepts.
    let out = net.node_mut(&b).unwrap().propose_reset(a).unwrap();
    net.absorb(b, out);
    net.run().unwrap();
    let Event::ResetProposed { changes, .. } = last_event(&net, &a) else {
        panic!("a was not asked")
    };
    assert_eq!(changes.requests_dropped.len(), 1);
    let out = net.node_mut(&a).unwrap().accept_reset(b).unwrap();
    net.absorb(a, out);
    net.run().unwrap();
    assert_eq!(
        net.node(&a).unwrap().payment(&invoice.terms.id).unwrap().0,
        PaymentStatus::Cancelled,
        "the dropped route is over, and nothing moved"
    );
    assert!(
        net.node(&a)
            .unwrap()
            .channel(&b)
            .unwrap()
            .state()
            .pending
            .is_empty()
    );
    assert_eq!(net.balance(&a, &b, &hours()), 0);
}

#[test]
fn forged_and_out_of_date_resets_are_refused() {
    let (mut net, ids) = chain(2, 100, Rate::default());
    let (a, b) = (ids[0], ids[1]);
    let terms = net.node(&a).unwrap().channel(&b).unwrap().reset_terms();
    // Signed by someone else, claiming to be a.
    let mut forged = ResetProposal::sign(&identity(77), terms.clone());
    forged.proposer = a;
    let err = net
        .node_mut(&b)
        .unwrap()
        .handle_message(0, a, Message::ResetProposal(Box::new(forged)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Reset {
                error: ResetError::BadSignature(_),
                ..
            }
        ),
        "{err}"
    );
    // The right signer, a stale epoch.
    let mut stale = terms;
    stale.epoch = 5;
    let err = net
        .node_mut(&b)
        .unwrap()
        .handle_message(
            0,
            a,
            Message::ResetProposal(Box::new(ResetProposal::sign(&identity(1), stale))),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Reset {
                error: ResetError::WrongEpoch {
                    got: 5,
                    expected: 1
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(net.node(&b).unwrap().reset_proposed_by(&a).is_none());
}

#[test]
fn a_friend_that_missed_the_certificate_catches_up() {
    // a proposes twice; b accepts the first. a's later proposal does not matter: the
    // certificate carries a's signature. Even if the certificate itself is lost, the next token
    // request shows the epochs differ and the tips settle it.
    let (mut net, ids) = chain(2, 100, Rate::default());
    let (a, b) = (ids[0], ids[1]);
    let first = net.node_mut(&a).unwrap().propose_reset(b).unwrap();
    net.buy_along(&[a, b], &hours(), 5, 21).unwrap();
    let second = net.node_mut(&a).unwrap().propose_reset(b).unwrap();
    drop(second);
    net.absorb(a, first);
    // Deliver the first proposal to b; b accepts; the certificate to a is lost.
    net.run().unwrap();
    let _lost = net.node_mut(&b).unwrap().accept_reset(a).unwrap();
    assert_eq!(net.node(&b).unwrap().channel(&a).unwrap().epoch(), 1);
    assert_eq!(net.node(&a).unwrap().channel(&b).unwrap().epoch(), 0);
    // b has something to send and asks a for the token, from epoch 1.
    net.buy_along(&[b, a], &hours(), 3, 22).unwrap();
    for (x, y) in [(a, b), (b, a)] {
        let ch = net.node(&x).unwrap().channel(&y).unwrap();
        assert_eq!(ch.epoch(), 1, "both in the new epoch");
    }
    let x = net.node(&a).unwrap().channel(&b).unwrap();
    let y = net.node(&b).unwrap().channel(&a).unwrap();
    assert_eq!((x.counter(), x.last_hash()), (y.counter(), y.last_hash()));
    assert!(x.state().pending.is_empty());
}
