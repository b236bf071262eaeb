//! A buyer that gives up before committing asks the seller to cancel now; the seller still
//! decides, and nobody but the buyer can ask.

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
use offst_core::protocol::message::Message;
use offst_core::protocol::node::{InvoiceStatus, NodeError, PaymentStatus, ProtocolError};
use offst_core::protocol::payment::{Abandon, AbandonTerms};
use offst_core::sim::local::entropy;

#[test]
fn abandoning_frees_the_credit_before_the_invoice_expires() {
    // Both orders: the abandon overtakes the requests, or arrives after the seller answered.
    for overtakes in [true, false] {
        let (mut net, ids) = chain(3, 100, Rate::default());
        // Answered before the buyer committed: the classic way (an early commit is accepted
        // as soon as the requests arrive; see `early_commit.rs` for abandons with it).
        net.commit_after_answers();
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        give_token(&mut net, a, b);
        let invoice = net.invoice(c, &hours(), 30, 41).unwrap();
        let plan = net.plan(&[a, b, c], 30).unwrap();
        let out = net
            .node_mut(&a)
            .unwrap()
            .pay(0, &invoice, vec![plan], entropy(41, 2))
            .unwrap();
        net.absorb(a, out);
        if !overtakes {
            // The requests reach the seller, which answers; the answers have not reached the
            // buyer yet (held), so it has not committed.
            let mut held = Vec::new();
            while let Some((from, to, msg)) = net.queue.pop_front() {
                if to == a {
                    held.push((from, to, msg));
                    continue;
                }
                let out = net
                    .node_mut(&to)
                    .unwrap()
                    .handle_message(0, from, msg)
                    .unwrap();
                net.absorb(to, out);
            }
            assert!(!held.is_empty());
            net.queue.extend(held);
        }
        let out = net
            .node_mut(&a)
            .unwrap()
            .abandon_payment(invoice.terms.id)
            .unwrap();
        net.absorb(a, out);
        if overtakes {
            // The abandon goes straight to the seller, ahead of the requests.
            let abandon = net.queue.pop_back().unwrap();
            net.queue.push_front(abandon);
        }
        net.run().unwrap();
        let paid = net.node(&a).unwrap().payment(&invoice.terms.id).unwrap().0;
        assert_eq!(paid, PaymentStatus::Cancelled, "overtakes: {overtakes}");
        for (x, y) in [(a, b), (b, c)] {
            assert!(
                net.node(&x)
                    .unwrap()
                    .channel(&y)
                    .unwrap()
                    .state()
                    .pending
                    .is_empty()
            );
        }
        assert_eq!((net.net(&a, &hours()), net.net(&c, &hours())), (0, 0));
        // Once the seller knew the buyer, it closes the invoice; before that it only refused
        // that buyer's requests, and the invoice stays open for anyone else.
        let expected = if overtakes {
            InvoiceStatus::Open
        } else {
            InvoiceStatus::Cancelled
        };
        assert_eq!(
            net.node(&c).unwrap().invoice_status(&invoice.terms.id),
            Some(&expected)
        );
    }
}

#[test]
fn a_committed_payment_cannot_be_abandoned() {
    let (mut net, ids) = chain(2, 100, Rate::default());
    let invoice = net.buy_along(&ids, &hours(), 10, 42).unwrap();
    assert_eq!(
        net.node_mut(&ids[0])
            .unwrap()
            .abandon_payment(invoice.terms.id)
            .unwrap_err(),
        NodeError::AlreadyCommitted(invoice.terms.id)
    );
}

#[test]
fn only_the_buyer_can_abandon() {
    let (mut net, ids) = chain(2, 100, Rate::default());
    // The commit held back after the answers: the classic way.
    net.commit_after_answers();
    let (a, b) = (ids[0], ids[1]);
    let invoice = net.invoice(b, &hours(), 10, 43).unwrap();
    let plan = net.plan(&[a, b], 10).unwrap();
    // Deliver the request and the answer, but hold the commit.
    let out = net
        .node_mut(&a)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(43, 2))
        .unwrap();
    net.absorb(a, out);
    let mut commit = None;
    while let Some((from, to, msg)) = net.queue.pop_front() {
        if matches!(msg, Message::Commit(_)) {
            commit = Some(msg);
            continue;
        }
        let out = net
            .node_mut(&to)
            .unwrap()
            .handle_message(0, from, msg)
            .unwrap();
        net.absorb(to, out);
    }
    let Some(Message::Commit(commit)) = commit else {
        panic!("no commit")
    };
    let forged = Abandon::sign(
        &identity(66),
        AbandonTerms {
            invoice_id: invoice.terms.id,
            src_hashed_lock: commit.src_plain_lock.hashed(),
        },
    );
    let err = net
        .node_mut(&b)
        .unwrap()
        .handle_message(0, a, Message::Abandon(forged))
        .unwrap_err();
    assert_eq!(err, ProtocolError::NotTheBuyer);
    assert_eq!(
        net.node(&b).unwrap().invoice_status(&invoice.terms.id),
        Some(&InvoiceStatus::Open)
    );
    // The real commit still goes through.
    let out = net
        .node_mut(&b)
        .unwrap()
        .handle_message(0, a, Message::Commit(commit))
        .unwrap();
    net.absorb(b, out);
    net.run().unwrap();
    assert_eq!(
        net.node(&a).unwrap().payment(&invoice.terms.id).unwrap().0,
        PaymentStatus::Completed
    );
}
