//! The state hash both friends sign (v2, `docs/protocol.md` §3): it commits to every credit
//! line and every pending request, does not depend on how a state was built or whether its
//! requests are shared with another state, and moves signed over the v1 hash (before
//! 2026-12-04, never released) are refused like any other wrong hash.

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
use offst_core::protocol::channel::{
    ChannelError, ChannelState, Move, MoveHeader, Op, Pending, Side, Signatures,
};
use offst_core::protocol::identity::{Hash, NodeId};
use offst_core::protocol::node::ProtocolError;
use offst_core::protocol::payment::{
    HashedLock, InvoiceId, Request, RequestId, RequestTerms, Response,
};
use offst_core::sim::local::LocalNet;

fn request(id: u8) -> Request {
    let route: Vec<NodeId> = (0..3).map(|i| identity(100 + i).id()).collect();
    Request::sign(
        &identity(100),
        RequestTerms {
            request_id: RequestId([id; 32]),
            invoice_id: InvoiceId([1; 32]),
            currency: hours(),
            src_hashed_lock: HashedLock([2; 32]),
            route,
            fees: vec![1],
            dest_payment: 5,
            total_dest_payment: 5,
        },
    )
    .unwrap()
}

fn pending(id: u8, answered: bool) -> Pending {
    let request = request(id);
    let response =
        answered.then(|| Response::sign(&identity(102), &request.terms, HashedLock([3; 32])));
    Pending {
        request,
        payer: Side::First,
        amount: 6,
        response,
    }
}

fn state(ids: &[u8]) -> ChannelState {
    let mut s = ChannelState::default();
    s.lines.insert(hours(), Default::default());
    for &i in ids {
        s.pending
            .insert(RequestId([i; 32]), pending(i, false).into());
    }
    s
}

#[test]
fn the_state_hash_commits_to_every_line_and_request() {
    let base = state(&[1, 2, 3]);
    let h = base.hash();
    // The same content built in another order, and read back from its encoding (fresh,
    // unshared requests), hashes the same.
    assert_eq!(state(&[3, 1, 2]).hash(), h);
    let decoded: ChannelState =
        postcard::from_bytes(&postcard::to_allocvec(&base).unwrap()).unwrap();
    assert_eq!(decoded, base);
    assert_eq!(decoded.hash(), h);
    // Any change changes it: a request more or less, an answer, an amount, a balance.
    assert_ne!(state(&[1, 2]).hash(), h);
    assert_ne!(state(&[1, 2, 3, 4]).hash(), h);
    let mut answered = base.clone();
    answered
        .pending
        .insert(RequestId([2; 32]), pending(2, true).into());
    assert_ne!(answered.hash(), h);
    let mut amount = base.clone();
    let mut p = pending(3, false);
    p.amount = 7;
    amount.pending.insert(RequestId([3; 32]), p.into());
    assert_ne!(amount.hash(), h);
    let mut balance = base.clone();
    balance.lines.get_mut(&hours()).unwrap().balance = 1;
    assert_ne!(balance.hash(), h);
    // A request filed under another id than its own is another state.
    let mut moved = state(&[1, 2]);
    moved
        .pending
        .insert(RequestId([9; 32]), pending(3, false).into());
    assert_ne!(moved.hash(), h);
    // The copy a move is checked on shares the requests, and changing the copy leaves the
    // original and its hash alone.
    let mut copy = base.clone();
    copy.pending.remove(&RequestId([1; 32]));
    assert_eq!(base.hash(), h);
    assert_eq!(base, state(&[1, 2, 3]));
}

#[test]
fn answering_a_shared_request_changes_only_the_state_it_is_applied_to() {
    let (net, ids) = chain(3, 100, Rate::default());
    let (a, b) = (ids[0], ids[1]);
    let ch = net.node(&a).unwrap().channel(&b).unwrap();
    let parties = *ch.parties();
    let payer = ch.local_side();
    // A request a freezes toward b, in a state b then answers in a copy of it.
    let mut terms = (*request(5).terms).clone();
    terms.route = vec![a, b, ids[2]];
    let req = Request::sign(&identity(1), terms).unwrap();
    let mut frozen = ch.state().clone();
    frozen
        .apply(
            &Op::Request(req.clone()),
            payer,
            &parties,
            Signatures::Check,
        )
        .unwrap();
    let before = frozen.hash();
    let mut answered = frozen.clone();
    let response = Response::sign(&identity(3), &req.terms, HashedLock([4; 32]));
    answered
        .apply(
            &Op::Response {
                request_id: req.terms.request_id,
                response,
            },
            payer.other(),
            &parties,
            Signatures::Check,
        )
        .unwrap();
    assert_eq!(frozen.hash(), before);
    assert!(frozen.pending[&req.terms.request_id].response.is_none());
    assert!(answered.pending[&req.terms.request_id].response.is_some());
    assert_ne!(answered.hash(), before);
}

/// A move from `a` to `b` that sets a limit, claiming `state_hash` for the result.
fn limit_move(net: &LocalNet, a: NodeId, b: NodeId, claim: impl Fn(&ChannelState) -> Hash) -> Move {
    let ch = net.node(&b).unwrap().channel(&a).unwrap();
    let ops = vec![Op::SetLimit {
        currency: hours(),
        limit: 77,
    }];
    let mut after = ch.state().clone();
    after
        .apply(
            &ops[0],
            ch.local_side().other(),
            ch.parties(),
            Signatures::Trusted,
        )
        .unwrap();
    let header = MoveHeader {
        channel: ch.id(),
        epoch: ch.epoch(),
        counter: ch.counter() + 1,
        prev: ch.last_hash(),
        ops_hash: Move::ops_hash(&ops),
        state_hash: claim(&after),
    };
    Move::sign_unchecked(&identity(1), header, ops)
}

use common::deliver_move as deliver;

#[test]
fn a_move_signed_over_the_v1_state_hash_is_refused_and_changes_nothing() {
    let (mut net, ids) = chain(2, 100, Rate::default());
    let (a, b) = (ids[0], ids[1]);
    net.buy_along(&[a, b], &hours(), 5, 1).expect("pay");
    give_token(&mut net, a, b);
    let tip = |net: &LocalNet| format!("{:?}", net.node(&b).unwrap().channel(&a).unwrap().tip());
    let before = tip(&net);
    // A hash of nothing in particular, and v1 (the whole state encoded and hashed, what
    // development builds before 2026-12-04 signed): both refused, and nothing changes.
    for claim in [
        Box::new(|_: &ChannelState| Hash([5; 32])) as Box<dyn Fn(&ChannelState) -> Hash>,
        Box::new(|s: &ChannelState| Hash::of("offst channel state v1", s)),
    ] {
        let m = limit_move(&net, a, b, claim);
        let err = deliver(&mut net, a, b, m).unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::Channel {
                    error: ChannelError::StateHashMismatch(_),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(before, tip(&net));
    }
    // The same change over the v2 hash is accepted.
    let good = limit_move(&net, a, b, |s| s.hash());
    deliver(&mut net, a, b, good).expect("a v2 move is accepted");
    let ch = net.node(&b).unwrap().channel(&a).unwrap();
    assert_eq!(
        ch.state().lines[&hours()].limit_of(ch.local_side().other()),
        77
    );
    ch.tip().verify(a, b).expect("the tip verifies");
}

/// The state hash as specified (`docs/protocol.md` §3), fed piece by piece: the lines'
/// encoding, the number of pending requests, then each one's id and hash.
fn reference_hash(s: &ChannelState) -> Hash {
    let mut h = blake3::Hasher::new_derive_key("offst channel state v2");
    offst_core::protocol::identity::hash_encoded(&mut h, &s.lines);
    h.update(&(s.pending.len() as u64).to_le_bytes());
    for (id, p) in &s.pending {
        h.update(&id.0);
        h.update(&p.hash().0);
    }
    Hash(*h.finalize().as_bytes())
}

/// However the hash feeds its input to BLAKE3 (in pieces of 64 requests, for speed), it is
/// the specified hash, which moves already signed depend on: around each piece's edge, and
/// with more requests than one piece holds.
#[test]
fn the_state_hash_is_the_specified_one_for_any_number_of_requests() {
    for n in [0u16, 1, 2, 63, 64, 65, 127, 128, 129, 256, 300] {
        let mut s = state(&[]);
        for i in 0..n {
            let mut id = [9u8; 32];
            id[..2].copy_from_slice(&i.to_be_bytes());
            s.pending
                .insert(RequestId(id), pending((i % 200) as u8, i % 3 == 0).into());
        }
        assert_eq!(s.hash(), reference_hash(&s), "{n} pending requests");
    }
}
