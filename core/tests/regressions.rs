//! Bugs found by the simulator, each pinned by the smallest test that shows it.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{hours, identity};
use offst_core::protocol::amount::Rate;
use offst_core::protocol::identity::NodeId;
use offst_core::protocol::message::Message;
use offst_core::protocol::node::{Event, Node, Output, PaymentStatus, RoutePlan};
use offst_core::sim::local::{LocalNet, entropy};

fn sends(out: &[Output]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { message, .. } => Some(message),
            Output::Event(_) => None,
        })
        .collect()
}

/// A token request can overtake the move sent just before it. The friend must pass the token
/// back as soon as that move arrives, even though the move carried a request (after which it
/// would normally keep the token to answer).
#[test]
fn token_request_that_overtakes_its_move_is_honoured() {
    let mut net = LocalNet::new();
    let a = net.add_node(1, Rate::default());
    let b = net.add_node(2, Rate::default());
    let c = net.add_node(3, Rate::default());
    // Answers and commits in the order of the classic way (commit after the answers).
    net.commit_after_answers();
    net.befriend(a, b, &hours(), 100).unwrap();
    net.befriend(b, c, &hours(), 100).unwrap();
    common::give_token(&mut net, a, b);
    // `a` pays `c` through `b` (a move with a request), then wants to send more.
    let invoice = net.invoice(c, &hours(), 5, 1).unwrap();
    let plan = net.plan(&[a, b, c], 5).unwrap();
    let out1 = net
        .node_mut(&a)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(1, 2))
        .unwrap();
    let out2 = net.node_mut(&a).unwrap().set_limit(b, hours(), 90).unwrap();
    let (m1, m2) = (sends(&out1), sends(&out2));
    assert!(matches!(m1.as_slice(), [Message::Move(_)]));
    assert!(matches!(m2.as_slice(), [Message::RequestToken { .. }]));
    // Deliver them to `b` in the wrong order.
    let nb = net.node_mut(&b).unwrap();
    let out = nb.handle_message(0, a, m2[0].clone()).unwrap();
    assert!(
        sends(&out).is_empty(),
        "b cannot pass a token it does not hold yet"
    );
    let out = nb.handle_message(0, a, m1[0].clone()).unwrap();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { to, message: Message::Move(_) } if *to == a)),
        "b must pass the token back to a: {out:?}"
    );
}

/// When a node adopts its friend's tip in a resync, the friend's last move may hold operations
/// the node never saw (here: the seller's cancel). The node must act on them.
#[test]
fn operations_in_an_adopted_tip_are_acted_on() {
    let mut net = LocalNet::new();
    let a = net.add_node(1, Rate::default());
    let b = net.add_node(2, Rate::default());
    // Answers and commits in the order of the classic way (commit after the answers).
    net.commit_after_answers();
    net.befriend(a, b, &hours(), 100).unwrap();
    let mut invoice_node = net.node(&b).unwrap().clone();
    let _ = &mut invoice_node;
    // The invoice expires at 10 ms; the request reaches the seller at 20 ms, so it cancels.
    let invoice = net
        .node_mut(&b)
        .unwrap()
        .create_invoice(hours(), 5, 10, String::new(), entropy(7, 1))
        .unwrap();
    let plan = RoutePlan {
        route: vec![a, b],
        fees: vec![],
        dest_payment: 5,
    };
    let out = net
        .node_mut(&a)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(7, 2))
        .unwrap();
    net.absorb(a, out);
    net.now_ms = 20;
    // Deliver until the seller's cancel is on its way to `a`, then snapshot `a`.
    while let Some((from, to, msg)) = net.queue.pop_front() {
        if to == a && matches!(&msg, Message::Move(m) if !m.ops.is_empty()) {
            let snapshot = net.node(&a).unwrap().clone();
            // `a` gets the cancel, then is restored to before it and resyncs.
            let out = net
                .node_mut(&a)
                .unwrap()
                .handle_message(20, from, msg)
                .unwrap();
            net.absorb(a, out);
            net.run().unwrap();
            *net.node_mut(&a).unwrap() = snapshot;
            break;
        }
        let out = net
            .node_mut(&to)
            .unwrap()
            .handle_message(20, from, msg)
            .unwrap();
        net.absorb(to, out);
    }
    assert_eq!(
        net.node(&a).unwrap().payment(&invoice.terms.id).unwrap().0,
        PaymentStatus::InFlight
    );
    let out = net.node_mut(&a).unwrap().restored();
    net.absorb(a, out);
    net.run().unwrap();
    let (status, _) = net.node(&a).unwrap().payment(&invoice.terms.id).unwrap();
    assert_eq!(status, PaymentStatus::Cancelled);
    assert!(
        net.node(&a)
            .unwrap()
            .channel(&b)
            .unwrap()
            .state()
            .pending
            .is_empty()
    );
}

/// A buyer restored from a snapshot in which a request was still queued sends it again after
/// it completed. Its friend must refuse the replay: carrying it out again would make someone
/// pay twice.
#[test]
fn a_replayed_request_is_refused() {
    let mut net = LocalNet::new();
    let a = net.add_node(1, Rate::default());
    let b = net.add_node(2, Rate { base: 1, ppm: 0 });
    let c = net.add_node(3, Rate::default());
    net.befriend(a, b, &hours(), 100).unwrap();
    net.befriend(b, c, &hours(), 100).unwrap();
    // Make `b` hold the token with `a`, so that `a`'s request waits in its queue.
    common::give_token(&mut net, b, a);
    let invoice = net.invoice(c, &hours(), 10, 3).unwrap();
    let plan = net.plan(&[a, b, c], 10).unwrap();
    let out = net
        .node_mut(&a)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(3, 2))
        .unwrap();
    assert!(
        net.node(&a).unwrap().channel(&b).unwrap().queue().len() == 1,
        "request waits for the token"
    );
    let snapshot = net.node(&a).unwrap().clone();
    net.absorb(a, out);
    net.run().unwrap();
    assert_eq!(
        net.node(&a).unwrap().payment(&invoice.terms.id).unwrap().0,
        PaymentStatus::Completed
    );
    let (ba, bb, bc) = (
        net.net(&a, &hours()),
        net.net(&b, &hours()),
        net.net(&c, &hours()),
    );
    assert_eq!((ba, bb, bc), (-11, 1, 10));
    // Restore `a` from the snapshot with the request still queued, and let it resync.
    *net.node_mut(&a).unwrap() = snapshot;
    let out = net.node_mut(&a).unwrap().restored();
    net.absorb(a, out);
    net.run().unwrap();
    net.now_ms = 120_000;
    for id in [a, b, c] {
        let out = net.node_mut(&id).unwrap().tick(120_000);
        net.absorb(id, out);
    }
    net.run().unwrap();
    assert_eq!(
        (
            net.net(&a, &hours()),
            net.net(&b, &hours()),
            net.net(&c, &hours())
        ),
        (ba, bb, bc),
        "nobody may pay twice"
    );
    for (x, y) in [(a, b), (b, c)] {
        assert!(
            net.node(&x)
                .unwrap()
                .channel(&y)
                .unwrap()
                .state()
                .pending
                .is_empty(),
            "credit left frozen"
        );
    }
    let events = net.events.get(&a).cloned().unwrap_or_default();
    assert!(events.iter().any(|e| matches!(e, Event::Resynced { .. })));
    let _ = (Node::new(identity(9), Rate::default()), 0);
}

/// After a reset or a restore a seller may answer a request and collect it in one move. The
/// buyer must see the answer given earlier in the same move, or it never learns it was paid.
#[test]
fn an_answer_and_a_collect_in_one_move_complete_the_payment() {
    use offst_core::protocol::channel::{Move, MoveHeader, Op, Signatures};
    let mut net = LocalNet::new();
    let a = net.add_node(1, Rate::default());
    let b = net.add_node(2, Rate::default());
    // Answers and commits in the order of the classic way (commit after the answers).
    net.commit_after_answers();
    net.befriend(a, b, &hours(), 100).unwrap();
    common::give_token(&mut net, a, b);
    let invoice = net.invoice(b, &hours(), 7, 11).unwrap();
    let plan = RoutePlan {
        route: vec![a, b],
        fees: vec![],
        dest_payment: 7,
    };
    let out = net
        .node_mut(&a)
        .unwrap()
        .pay(0, &invoice, vec![plan], entropy(11, 2))
        .unwrap();
    let request_move = sends(&out)[0].clone();
    // The seller answers at once; that answer never reaches the real buyer.
    let out = net
        .node_mut(&b)
        .unwrap()
        .handle_message(0, a, request_move)
        .unwrap();
    let answer = sends(&out)[0].clone();
    // Learn the secrets by letting copies of both play the payment out.
    let (mut a2, mut b2) = (net.node(&a).unwrap().clone(), net.node(&b).unwrap().clone());
    let mut queue: Vec<(bool, Message)> = vec![(true, answer)]; // (to_a, message)
    let mut ops_seen: Vec<Op> = Vec::new();
    while let Some((to_a, m)) = queue.pop() {
        if let Message::Move(mv) = &m {
            ops_seen.extend(mv.ops.clone());
        }
        let out = if to_a {
            a2.handle_message(0, b, m).unwrap()
        } else {
            b2.handle_message(0, a, m).unwrap()
        };
        for m in sends(&out) {
            queue.push((!to_a, m.clone()));
        }
    }
    let id = invoice.terms.id;
    assert_eq!(
        a2.payment(&id).unwrap().0,
        PaymentStatus::Completed,
        "the copies completed"
    );
    let response = ops_seen
        .iter()
        .find(|op| matches!(op, Op::Response { .. }))
        .unwrap()
        .clone();
    let collect = ops_seen
        .iter()
        .find(|op| matches!(op, Op::Collect { .. }))
        .unwrap()
        .clone();
    // Now the real buyer gets both in one move from the seller.
    let ch = net.node(&a).unwrap().channel(&b).unwrap();
    let ops = vec![response, collect];
    let mut state = ch.state().clone();
    for op in &ops {
        state
            .apply(op, ch.local_side().other(), ch.parties(), Signatures::Check)
            .unwrap();
    }
    let header = MoveHeader {
        channel: ch.id(),
        epoch: ch.epoch(),
        counter: ch.counter() + 1,
        prev: ch.last_hash(),
        ops_hash: Move::ops_hash(&ops),
        state_hash: state.hash(),
    };
    let m = Move::sign_unchecked(&identity(2), header, ops);
    net.node_mut(&a)
        .unwrap()
        .handle_message(0, b, Message::Move(m))
        .unwrap();
    let (status, receipt) = net.node(&a).unwrap().payment(&id).unwrap();
    assert_eq!(status, PaymentStatus::Completed);
    assert!(receipt.unwrap().verify().is_ok());
}

/// A friend's token request overtakes its move, and we then learn that move from its resync
/// offer rather than from the move itself (which later arrives as a copy). We must still pass
/// the token, or both wait for each other forever (simulator seed 121 with resets and restores).
#[test]
fn a_waiting_friend_gets_the_token_after_we_adopt_its_tip() {
    use offst_core::protocol::message::Offer;
    let mut net = LocalNet::new();
    let a = net.add_node(1, Rate::default());
    let b = net.add_node(2, Rate::default());
    net.befriend(a, b, &hours(), 100).unwrap();
    common::give_token(&mut net, b, a);
    // b makes a move, then has more to send and asks for the token.
    let out1 = net.node_mut(&b).unwrap().set_limit(a, hours(), 90).unwrap();
    let out2 = net.node_mut(&b).unwrap().set_limit(a, hours(), 80).unwrap();
    let (m1, m2) = (sends(&out1), sends(&out2));
    assert!(matches!(m1.as_slice(), [Message::Move(_)]));
    assert!(matches!(m2.as_slice(), [Message::RequestToken { .. }]));
    let tip = net.node(&b).unwrap().channel(&a).unwrap().tip().clone();
    let na = net.node_mut(&a).unwrap();
    // The request first, then b's tip in an offer; the move itself comes last.
    assert!(sends(&na.handle_message(0, b, m2[0].clone()).unwrap()).is_empty());
    let offer = Message::Offer(Box::new(Offer {
        tip,
        resolutions: vec![],
        reply_wanted: false,
    }));
    let out = na.handle_message(0, b, offer).unwrap();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { to, message: Message::Move(_) } if *to == b)),
        "a must pass the token to b: {out:?}"
    );
    assert!(
        na.handle_message(0, b, m1[0].clone()).is_err(),
        "the move is now a copy"
    );
}

/// Found by the load generator: after a collect the payer's side acknowledged with an empty
/// move, which handed the token downstream; the next payment the same way then had to ask for
/// it back (a request and an empty move) on every hop, 7 messages per hop in all. Now the side
/// that received the collect keeps the token: a payment the classic way makes 4 messages per
/// hop (request, response, the acknowledgement that lets the collect go, collect) plus the
/// buyer's commit and the seller's "paid" answer, and the next one starts at once. With the
/// early commit, 2 per hop (the answer goes with the collect) plus the commit and "accepted".
#[test]
fn a_second_payment_the_same_way_needs_no_token_request() {
    for early in [true, false] {
        let (mut net, ids) = common::chain(4, 1_000, Rate { base: 1, ppm: 0 });
        if !early {
            net.commit_after_answers();
        }
        net.buy_along(&ids, &hours(), 10, 1).unwrap();
        for nonce in 2..5 {
            let before = net.delivered;
            net.buy_along(&ids, &hours(), 10, nonce).unwrap();
            let hops = (ids.len() - 1) as u64;
            // With the early commit, 2 per hop (the request; the answer with the collect) and
            // the commit and the seller's "accepted".
            let per_hop = if early { 2 } else { 4 };
            assert_eq!(
                net.delivered - before,
                per_hop * hops + 2,
                "messages for payment {nonce} over {hops} hops (early commit: {early})"
            );
        }
        // Both ends of every channel agree, and the money adds up.
        for w in ids.windows(2) {
            let a = net.node(&w[0]).unwrap().channel(&w[1]).unwrap();
            let b = net.node(&w[1]).unwrap().channel(&w[0]).unwrap();
            assert_eq!(a.state(), b.state());
            assert!(a.tip().verify(w[0], w[1]).is_ok());
        }
        assert_eq!(net.net(&ids[3], &hours()), 40);
    }
}

/// A move carries at most `MAX_OPS_PER_MOVE` operations; what is left waits for the next
/// turn. When the friend keeps the token after that move (it carried only collects, after
/// which a receiver keeps it), the sender must ask for the token for what is left, or those
/// operations, and the credit they would settle, wait until the next payment through the
/// channel: forever on a quiet one. Found by the load generator (a burst of commits at the end
/// of a run left collects queued behind a full move).
#[test]
fn operations_left_behind_a_full_move_are_sent() {
    use offst_core::protocol::bounds::{MAX_OPS_PER_MOVE, MAX_PENDING_REQUESTS};
    use std::collections::VecDeque;
    let mut net = LocalNet::new();
    let a = net.add_node(1, Rate::default());
    let b = net.add_node(2, Rate::default());
    // Answers and commits in the order of the classic way (commit after the answers).
    net.commit_after_answers();
    net.befriend(a, b, &hours(), 100_000).unwrap();
    // More than one move carries, and no more than a channel may hold pending.
    let n = (MAX_OPS_PER_MOVE + 100).min(MAX_PENDING_REQUESTS) as u64;
    assert!(n > MAX_OPS_PER_MOVE as u64 + 1);
    type Mail = VecDeque<(NodeId, NodeId, Message)>;
    fn push(queue: &mut Mail, from: NodeId, out: Vec<Output>) {
        for o in out {
            if let Output::Send { to, message } = o {
                queue.push_back((from, to, message));
            }
        }
    }
    /// Deliver everything; with `held`, keep commits aside instead.
    fn deliver(net: &mut LocalNet, queue: &mut Mail, mut held: Option<&mut Mail>) {
        while let Some((from, to, message)) = queue.pop_front() {
            if let (Some(h), Message::Commit(_)) = (held.as_deref_mut(), &message) {
                h.push_back((from, to, message));
                continue;
            }
            let out = net
                .node_mut(&to)
                .unwrap()
                .handle_message(0, from, message)
                .unwrap();
            push(queue, to, out);
        }
    }
    let mut queue = Mail::new();
    let mut invoices = Vec::new();
    for i in 0..n {
        let invoice = net.invoice(b, &hours(), 1, 1000 + i).unwrap();
        let plan = net.plan(&[a, b], 1).unwrap();
        let out = net
            .node_mut(&a)
            .unwrap()
            .pay(0, &invoice, vec![plan], entropy(1000 + i, 2))
            .unwrap();
        push(&mut queue, a, out);
        invoices.push(invoice);
    }
    // Every request is answered before any commit reaches the seller; then all the commits
    // arrive together, so the seller has more collects queued than one move carries.
    let mut commits = Mail::new();
    deliver(&mut net, &mut queue, Some(&mut commits));
    assert_eq!(commits.len() as u64, n);
    let mut burst = Vec::new();
    for (from, to, message) in commits {
        let out = net
            .node_mut(&to)
            .unwrap()
            .handle_message(0, from, message)
            .unwrap();
        burst.push((to, out));
    }
    for (from, out) in burst {
        push(&mut queue, from, out);
    }
    deliver(&mut net, &mut queue, None);
    for invoice in &invoices {
        let (status, _) = net.node(&a).unwrap().payment(&invoice.terms.id).unwrap();
        assert_eq!(status, PaymentStatus::Completed);
    }
    for (me, friend) in [(a, b), (b, a)] {
        let ch = net.node(&me).unwrap().channel(&friend).unwrap();
        assert!(
            ch.queue().is_empty(),
            "{} operations left queued",
            ch.queue().len()
        );
        assert!(
            ch.state().pending.is_empty(),
            "{} requests left frozen",
            ch.state().pending.len()
        );
    }
    assert_eq!(net.balance(&b, &a, &hours()), i128::from(n));
}
