//! The buyer's commit goes out with its requests; the seller holds it and, once the routes it
//! names have arrived, collects them at once and tells the buyer directly ("accepted", with its
//! signed answers). The answers travel hop by hop only with the collects. Each test tries to
//! break one rule of `docs/protocol.md` §4 ("Early commit").

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{chain, hours, identity};
use offst_core::protocol::amount::Rate;
use offst_core::protocol::bounds::MAX_HELD_COMMITS_PER_INVOICE;
use offst_core::protocol::channel::Op;
use offst_core::protocol::identity::NodeId;
use offst_core::protocol::message::Message;
use offst_core::protocol::node::{InvoiceStatus, Node, PaymentStatus, ProtocolError};
use offst_core::protocol::payment::{Accepted, Commit, Invoice, PlainLock};
use offst_core::sim::local::{LocalNet, entropy};

/// A chain of `n` friends with a payment of 10 from the first to the last just started (its
/// messages queued, none delivered).
fn paying(n: u8, nonce: u64) -> (LocalNet, Vec<NodeId>, Invoice) {
    let (mut net, ids) = chain(n, 1_000, Rate { base: 1, ppm: 0 });
    let (buyer, seller) = (ids[0], ids[ids.len() - 1]);
    let invoice = net.invoice(seller, &hours(), 10, nonce).unwrap();
    let plan = net.plan(&ids, 10).unwrap();
    let out = net
        .node_mut(&buyer)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(nonce, 2))
        .unwrap();
    net.absorb(buyer, out);
    (net, ids, invoice)
}

/// Deliver every message, also those a node refuses; the refusals, in order.
fn deliver_all(net: &mut LocalNet) -> Vec<ProtocolError> {
    let mut refused = Vec::new();
    while let Some((from, to, message)) = net.queue.pop_front() {
        match net.node_mut(&to).unwrap().handle_message(0, from, message) {
            Ok(out) => net.absorb(to, out),
            Err(e) => refused.push(e),
        }
    }
    refused
}

/// Deliver until the seller's "accepted" is the next message.
fn run_until_accepted(net: &mut LocalNet) {
    while !matches!(net.queue.front(), Some((_, _, Message::Accepted(_)))) {
        assert!(net.step().unwrap(), "the seller never accepted");
    }
}

/// Every channel's two ends agree, nothing is pending in any, and balances sum to zero.
fn settled(net: &LocalNet, ids: &[NodeId]) {
    for w in ids.windows(2) {
        let a = net.node(&w[0]).unwrap().channel(&w[1]).unwrap();
        let b = net.node(&w[1]).unwrap().channel(&w[0]).unwrap();
        assert_eq!(a.state(), b.state());
        assert!(a.state().pending.is_empty(), "credit still frozen");
    }
    let total: i128 = ids.iter().map(|id| net.net(id, &hours())).sum();
    assert_eq!(total, 0);
}

#[test]
fn the_seller_collects_when_the_requests_arrive_and_no_answer_travels_before_its_collect() {
    let (mut net, ids, invoice) = paying(5, 1);
    let (buyer, seller) = (ids[0], ids[4]);
    let id = invoice.terms.id;
    let mut accepted = 0;
    let mut messages = 0u64;
    while let Some((from, to, message)) = net.queue.front().cloned() {
        messages += 1;
        if let Message::Move(m) = &message {
            // An answer only ever travels in the move that collects it.
            for op in &m.ops {
                if let Op::Response { request_id, .. } = op {
                    assert!(
                        m.ops.iter().any(|o| matches!(o,
                            Op::Collect { request_id: c, .. } if c == request_id)),
                        "an answer travelled before its collect"
                    );
                }
            }
        }
        if matches!(message, Message::Accepted(_)) {
            assert_eq!(
                (from, to),
                (seller, buyer),
                "the seller answers the buyer directly"
            );
            accepted += 1;
        }
        if matches!(message, Message::Paid(_) | Message::Commit(_)) {
            panic!("the classic way was taken: {message:?}");
        }
        net.step().unwrap();
        if accepted == 1 && matches!(message, Message::Accepted(_)) {
            let node = net.node(&buyer).unwrap();
            assert_eq!(
                node.payment_progress(&id).unwrap().status,
                PaymentStatus::Completed
            );
            assert!(node.payment(&id).unwrap().1.unwrap().verify().is_ok());
        }
    }
    assert_eq!(accepted, 1);
    // 4 hops: a request and a collect (with its answer) on each, the commit and "accepted".
    assert_eq!(messages, 2 * 4 + 2);
    assert!(
        net.node(&buyer)
            .unwrap()
            .payment_progress(&id)
            .unwrap()
            .settled
    );
    assert_eq!(net.net(&seller, &hours()), 10);
    assert_eq!(net.net(&buyer, &hours()), -13); // 10 and three fees of 1
    settled(&net, &ids);
}

#[test]
fn an_early_commit_that_arrives_after_the_requests_is_accepted_at_once() {
    let (mut net, ids, invoice) = paying(4, 2);
    let (buyer, seller) = (ids[0], ids[3]);
    let id = invoice.terms.id;
    // The commits are held back until the requests reached the seller and its answers (sent
    // hop by hop, as it held no commit) reached the buyer, which then commits again the
    // classic way.
    let mut late = Vec::new();
    while let Some((from, to, message)) = net.queue.pop_front() {
        if matches!(message, Message::EarlyCommit(_) | Message::Commit(_)) {
            late.push((from, to, message));
            continue;
        }
        let out = net
            .node_mut(&to)
            .unwrap()
            .handle_message(0, from, message)
            .unwrap();
        net.absorb(to, out);
    }
    let kinds: Vec<bool> = late
        .iter()
        .map(|(_, _, m)| matches!(m, Message::EarlyCommit(_)))
        .collect();
    assert_eq!(
        kinds,
        vec![true, false],
        "the early commit, then the classic one"
    );
    let p = net.node(&buyer).unwrap().payment_progress(&id).unwrap();
    assert_eq!((p.status, p.answered), (PaymentStatus::InFlight, 10));
    // The early commit: the seller accepts at once and says so with its answers; the classic
    // one after it is a repeat, answered with a "paid" that changes nothing.
    let mut answers = Vec::new();
    for (from, to, message) in late {
        let out = net
            .node_mut(&to)
            .unwrap()
            .handle_message(0, from, message)
            .unwrap();
        for o in &out {
            if let offst_core::protocol::node::Output::Send { message, .. } = o
                && matches!(message, Message::Accepted(_) | Message::Paid(_))
            {
                answers.push(matches!(message, Message::Accepted(_)));
            }
        }
        net.absorb(to, out);
    }
    assert_eq!(answers, vec![true, false]);
    net.run().unwrap();
    assert_eq!(
        net.node(&buyer)
            .unwrap()
            .payment_progress(&id)
            .unwrap()
            .status,
        PaymentStatus::Completed
    );
    assert!(matches!(
        net.node(&seller).unwrap().invoice_status(&id),
        Some(InvoiceStatus::Paid(_))
    ));
    assert_eq!(net.net(&seller, &hours()), 10);
    settled(&net, &ids);
}

#[test]
fn strangers_early_commits_cannot_block_a_payment() {
    let (mut net, ids, invoice) = paying(3, 3);
    let (buyer, seller) = (ids[0], ids[2]);
    let id = invoice.terms.id;
    // Strangers who learned the invoice id fill the seller's places for early commits (each
    // with a lock of its own); one more is refused.
    for k in 0..=MAX_HELD_COMMITS_PER_INVOICE {
        let stranger = identity(100 + k as u8).id();
        let commit = Message::EarlyCommit(Commit {
            invoice_id: id,
            src_plain_lock: PlainLock([k as u8; 32]),
            request_ids: Vec::new(),
        });
        let got = net
            .node_mut(&seller)
            .unwrap()
            .handle_message(0, stranger, commit);
        if k < MAX_HELD_COMMITS_PER_INVOICE {
            assert!(got.is_ok(), "{got:?}");
        } else {
            assert_eq!(got.unwrap_err(), ProtocolError::TooManyHeldCommits);
        }
    }
    // The buyer's early commit is refused the same way, and nothing else changes: the seller
    // answers hop by hop, the buyer commits again the classic way, and the payment completes.
    assert_eq!(
        deliver_all(&mut net),
        vec![ProtocolError::TooManyHeldCommits]
    );
    assert_eq!(
        net.node(&buyer)
            .unwrap()
            .payment_progress(&id)
            .unwrap()
            .status,
        PaymentStatus::Completed
    );
    assert_eq!(net.net(&seller, &hours()), 10);
    settled(&net, &ids);
}

#[test]
fn a_forged_or_wrong_acceptance_changes_nothing() {
    let (mut net, ids, invoice) = paying(3, 4);
    let (buyer, mediator, seller) = (ids[0], ids[1], ids[2]);
    let id = invoice.terms.id;
    // Run until the seller's "accepted" is the next message to the buyer.
    run_until_accepted(&mut net);
    let Some((_, _, Message::Accepted(real))) = net.queue.pop_front() else {
        panic!("no acceptance")
    };
    let attempts: Vec<(NodeId, Accepted, ProtocolError)> = vec![
        // From someone else than the seller.
        (mediator, real.clone(), ProtocolError::NotTheSeller),
        // A secret that does not open the answer's lock.
        (
            seller,
            Accepted {
                dest_plain_lock: PlainLock([9; 32]),
                ..real.clone()
            },
            ProtocolError::WrongPaidLock,
        ),
        // An answer whose lock is made to match a made-up secret: not the seller's signature.
        (
            seller,
            Accepted {
                dest_plain_lock: PlainLock([9; 32]),
                responses: real
                    .responses
                    .iter()
                    .map(|(r, resp)| {
                        let mut forged = resp.clone();
                        forged.dest_hashed_lock = PlainLock([9; 32]).hashed();
                        (*r, forged)
                    })
                    .collect(),
                ..real.clone()
            },
            ProtocolError::BadAnswer,
        ),
        // A route the buyer never sent.
        (
            seller,
            Accepted {
                responses: real
                    .responses
                    .iter()
                    .map(|(_, resp)| {
                        (
                            offst_core::protocol::payment::RequestId([7; 32]),
                            resp.clone(),
                        )
                    })
                    .collect(),
                ..real.clone()
            },
            ProtocolError::BadAnswer,
        ),
    ];
    for (from, forged, why) in attempts {
        let got = net
            .node_mut(&buyer)
            .unwrap()
            .handle_message(0, from, Message::Accepted(forged));
        assert_eq!(got.unwrap_err(), why);
        let p = net.node(&buyer).unwrap().payment_progress(&id).unwrap();
        assert_eq!(p.status, PaymentStatus::InFlight);
        assert!(net.node(&buyer).unwrap().payment(&id).unwrap().1.is_none());
    }
    // The real one completes the payment.
    net.queue
        .push_front((seller, buyer, Message::Accepted(real)));
    net.run().unwrap();
    assert_eq!(
        net.node(&buyer)
            .unwrap()
            .payment_progress(&id)
            .unwrap()
            .status,
        PaymentStatus::Completed
    );
    settled(&net, &ids);
}

#[test]
fn an_abandon_that_overtakes_the_requests_cancels_them_and_its_commit() {
    let (mut net, ids, invoice) = paying(3, 5);
    let (buyer, seller) = (ids[0], ids[2]);
    let id = invoice.terms.id;
    let out = net.node_mut(&buyer).unwrap().abandon_payment(id).unwrap();
    net.absorb(buyer, out);
    // The abandon reaches the seller first, then the commit, then the requests.
    let abandon = net.queue.pop_back().unwrap();
    assert!(matches!(abandon.2, Message::Abandon(_)));
    net.queue.push_front(abandon);
    net.run().unwrap();
    assert_eq!(
        net.node(&buyer)
            .unwrap()
            .payment_progress(&id)
            .unwrap()
            .status,
        PaymentStatus::Cancelled
    );
    // The invoice stays open for anyone else; the buyer's credit is free.
    assert_eq!(
        net.node(&seller).unwrap().invoice_status(&id),
        Some(&InvoiceStatus::Open)
    );
    assert_eq!(net.net(&seller, &hours()), 0);
    settled(&net, &ids);
}

#[test]
fn an_abandon_after_the_seller_accepted_leaves_the_payment_completed() {
    let (mut net, ids, invoice) = paying(3, 6);
    let (buyer, seller) = (ids[0], ids[2]);
    let id = invoice.terms.id;
    run_until_accepted(&mut net);
    // The buyer gives up just before the seller's word reaches it: the seller decided first.
    let out = net.node_mut(&buyer).unwrap().abandon_payment(id).unwrap();
    net.absorb(buyer, out);
    assert_eq!(deliver_all(&mut net), vec![ProtocolError::InvoiceClosed]);
    let node = net.node(&buyer).unwrap();
    assert_eq!(
        node.payment_progress(&id).unwrap().status,
        PaymentStatus::Completed
    );
    assert!(node.payment(&id).unwrap().1.unwrap().verify().is_ok());
    assert_eq!(net.net(&seller, &hours()), 10);
    settled(&net, &ids);
}

#[test]
fn a_held_commit_is_stored_and_invoices_of_the_format_before_are_read() {
    let (mut net, ids, invoice) = paying(3, 7);
    let seller = ids[2];
    let id = invoice.terms.id;
    // Deliver only the commit: the seller holds it.
    let at = net
        .queue
        .iter()
        .position(|(_, _, m)| matches!(m, Message::EarlyCommit(_)))
        .unwrap();
    let (from, to, commit) = net.queue.remove(at).unwrap();
    let out = net
        .node_mut(&to)
        .unwrap()
        .handle_message(0, from, commit)
        .unwrap();
    assert!(out.is_empty(), "held, not answered: {out:?}");
    // A seller restored from its stored parts still holds it: the requests complete the
    // payment without the buyer sending anything again.
    let parts = net.node(&seller).unwrap().parts();
    let restored = Node::from_parts(identity(3), &parts).unwrap();
    net.nodes.insert(seller, restored);
    net.run().unwrap();
    assert_eq!(
        net.node(&ids[0])
            .unwrap()
            .payment_progress(&id)
            .unwrap()
            .status,
        PaymentStatus::Completed
    );
    settled(&net, &ids);

    // An invoice stored by the build before (format 3: no held commits) is read with none.
    let fresh = net.invoice(seller, &hours(), 5, 70).unwrap();
    let mut parts = net.node(&seller).unwrap().parts();
    let row = parts
        .invoices
        .iter_mut()
        .find(|(_, row)| {
            let mut one = parts_with_invoice(row);
            one.settings
                .clone_from(&net.node(&seller).unwrap().parts().settings);
            Node::from_parts(identity(3), &one)
                .unwrap()
                .issued_invoice(&fresh.terms.id)
                .is_some()
        })
        .map(|(_, row)| row)
        .unwrap();
    assert_eq!(row.first(), Some(&offst_core::protocol::node::PART_VERSION));
    assert_eq!(row.last(), Some(&0), "an empty list of held commits");
    let mut old = vec![3u8];
    old.extend_from_slice(&row[1..row.len() - 1]);
    *row = old;
    let node = Node::from_parts(identity(3), &parts).unwrap();
    assert_eq!(
        node.invoice_status(&fresh.terms.id),
        Some(&InvoiceStatus::Open)
    );
    // A cut row is a typed error, not a panic nor an empty invoice.
    let row = parts
        .invoices
        .iter_mut()
        .find(|(_, r)| r.first() == Some(&3))
        .map(|(_, row)| row)
        .unwrap();
    row.truncate(row.len() / 2);
    assert!(Node::from_parts(identity(3), &parts).is_err());
}

/// Parts holding nothing but one invoice row.
fn parts_with_invoice(row: &[u8]) -> offst_core::protocol::node::Parts {
    offst_core::protocol::node::Parts {
        invoices: vec![(0, row.to_vec())],
        ..Default::default()
    }
}
