//! The seller's "paid" answer: the buyer has its receipt as soon as the seller accepted the
//! commit, before the collects come back hop by hop; the collects still move the credit; a
//! "paid" from anyone but the seller, or with the wrong secret, changes nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::hours;
use offst_core::protocol::amount::Rate;
use offst_core::protocol::message::Message;
use offst_core::protocol::node::{PaymentStatus, ProtocolError};
use offst_core::protocol::payment::{Paid, PlainLock};

#[test]
fn the_buyer_completes_on_the_sellers_answer_and_the_collects_still_move_the_credit() {
    let (mut net, ids, invoice) = paying(4);
    let (a, b, d) = (ids[0], ids[1], ids[3]);
    let id = invoice.terms.id;
    let mut saw_paid = false;
    while let Some((from, to, message)) = net.queue.front().cloned() {
        let is_paid = matches!(message, Message::Paid(_));
        net.step().unwrap();
        if is_paid {
            assert_eq!((from, to), (d, a), "the seller answers the buyer directly");
            saw_paid = true;
            let buyer = net.node(&a).unwrap();
            let p = buyer.payment_progress(&id).unwrap();
            assert_eq!(p.status, PaymentStatus::Completed);
            assert!(buyer.payment(&id).unwrap().1.unwrap().verify().is_ok());
            // The receipt came first: the credit with b is still frozen, not yet moved.
            assert!(!p.settled);
            assert_eq!(net.balance(&a, &b, &hours()), 0);
        }
    }
    assert!(saw_paid);
    let p = net.node(&a).unwrap().payment_progress(&id).unwrap();
    assert!(p.settled);
    assert_eq!(net.balance(&a, &b, &hours()), -12); // 10 and two fees of 1
    assert_eq!(net.net(&d, &hours()), 10);
}

#[test]
fn a_paid_from_someone_else_or_with_the_wrong_secret_changes_nothing() {
    let (mut net, ids, invoice) = paying(3);
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    // Run until the buyer's commit is on its way: the buyer holds every response.
    while !matches!(net.queue.front(), Some((_, _, Message::Commit(_)))) {
        assert!(net.step().unwrap(), "the commit never left");
    }
    let id = invoice.terms.id;
    let forged = |lock: [u8; 32]| {
        Message::Paid(Paid {
            invoice_id: id,
            dest_plain_lock: PlainLock(lock),
        })
    };
    let buyer = net.node_mut(&a).unwrap();
    assert!(matches!(
        buyer.handle_message(0, b, forged([7; 32])),
        Err(ProtocolError::NotTheSeller)
    ));
    assert!(matches!(
        buyer.handle_message(0, c, forged([7; 32])),
        Err(ProtocolError::WrongPaidLock)
    ));
    assert_eq!(buyer.payment(&id).unwrap().0, PaymentStatus::InFlight);
    // For a payment the buyer did not make: refused too.
    let mut other = forged([7; 32]);
    if let Message::Paid(p) = &mut other {
        p.invoice_id = net.invoice(c, &hours(), 5, 2).unwrap().terms.id;
    }
    assert!(matches!(
        net.node_mut(&a).unwrap().handle_message(0, c, other),
        Err(ProtocolError::NotOurPayment)
    ));
    net.run().unwrap();
    assert_eq!(
        net.node(&a).unwrap().payment(&id).unwrap().0,
        PaymentStatus::Completed
    );
    assert_eq!(net.net(&c, &hours()), 10);
}

/// A chain of `n` (mediators charge 1) whose first node has just started paying the last 10:
/// its first messages are queued, none delivered.
fn paying(
    n: u8,
) -> (
    offst_core::sim::local::LocalNet,
    Vec<offst_core::protocol::identity::NodeId>,
    offst_core::protocol::payment::Invoice,
) {
    let (mut net, ids) = common::chain(n, 1_000, Rate { base: 1, ppm: 0 });
    // A "paid" answers a classic commit (an early one is answered by an "accepted").
    net.commit_after_answers();
    let (buyer, seller) = (ids[0], ids[ids.len() - 1]);
    let invoice = net.invoice(seller, &hours(), 10, 1).unwrap();
    let plan = net.plan(&ids, 10).unwrap();
    let out = net
        .node_mut(&buyer)
        .unwrap()
        .pay(
            0,
            &invoice,
            vec![plan],
            offst_core::sim::local::entropy(1, 2),
        )
        .unwrap();
    net.absorb(buyer, out);
    (net, ids, invoice)
}
