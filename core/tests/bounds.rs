//! Every bound in `protocol::bounds`: the over-limit case gets a typed error.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{hours, identity};
use offst_core::protocol::amount::{Currency, CurrencyError, Rate};
use offst_core::protocol::bounds::*;
use offst_core::protocol::channel::{
    Channel, ChannelError, ChannelState, Move, MoveHeader, Op, OpError, Pending, Side, Signatures,
    Tip,
};
use offst_core::protocol::identity::NodeId;
use offst_core::protocol::message::{
    DecodeError, EncodeError, Message, Offer, Outcome, Resolution,
};
use offst_core::protocol::node::{Node, NodeError, RoutePlan};
use offst_core::protocol::payment::{
    HashedLock, Invoice, InvoiceId, InvoiceTerms, PaymentError, PlainLock, Request, RequestId,
    RequestTerms, Response,
};

fn ids(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| identity(100 + i as u8).id()).collect()
}

fn terms(route: Vec<NodeId>, id: u32) -> RequestTerms {
    let mut rid = [0u8; 32];
    rid[..4].copy_from_slice(&id.to_le_bytes());
    let fees = vec![1; route.len().saturating_sub(2)];
    RequestTerms {
        request_id: RequestId(rid),
        invoice_id: InvoiceId([1; 32]),
        currency: hours(),
        src_hashed_lock: HashedLock([2; 32]),
        route,
        fees,
        dest_payment: 1,
        total_dest_payment: 1,
    }
}

#[test]
fn max_ops_per_move() {
    let a = identity(1);
    let b = identity(2);
    let ch = Channel::new(b.id(), a.id());
    let ops: Vec<Op> = (0..=MAX_OPS_PER_MOVE)
        .map(|_| Op::SetLimit {
            currency: hours(),
            limit: 1,
        })
        .collect();
    // Whoever signs move 1 sends it.
    let signer = if a.id() < b.id() { &a } else { &b };
    let (mut receiver, sender_id) = if a.id() < b.id() {
        (Channel::new(b.id(), a.id()), a.id())
    } else {
        (Channel::new(a.id(), b.id()), b.id())
    };
    let header = MoveHeader {
        channel: ch.id(),
        epoch: 0,
        counter: 1,
        prev: receiver.last_hash(),
        ops_hash: Move::ops_hash(&ops),
        state_hash: ChannelState::default().hash(),
    };
    let _ = sender_id;
    let m = Move::sign_unchecked(signer, header, ops);
    assert_eq!(
        receiver.receive_move(m).unwrap_err(),
        ChannelError::TooManyOps(MAX_OPS_PER_MOVE + 1)
    );
    // Our own moves never carry more: a long queue is sent in several moves.
    let mut sender = Channel::new(signer.id(), receiver.remote());
    for _ in 0..(2 * MAX_OPS_PER_MOVE) {
        sender.enqueue(Op::SetLimit {
            currency: hours(),
            limit: 1,
        });
    }
    let built = sender.build_move(signer, false);
    assert_eq!(built.message.expect("a move").ops.len(), MAX_OPS_PER_MOVE);
    assert_eq!(sender.queue().len(), MAX_OPS_PER_MOVE);
}

#[test]
fn max_pending_requests() {
    let n = ids(2);
    let parties = *Channel::new(n[0], n[1]).parties();
    let sender = if n[0] < n[1] {
        Side::First
    } else {
        Side::Second
    };
    let mut state = ChannelState::default();
    state
        .apply(
            &Op::SetLimit {
                currency: hours(),
                limit: 10_000,
            },
            sender.other(),
            &parties,
            Signatures::Trusted,
        )
        .unwrap();
    let sig = identity(100).sign("test", &0u8);
    for i in 0..MAX_PENDING_REQUESTS as u32 {
        let r = Request {
            terms: terms(vec![n[0], n[1]], i).into(),
            signature: sig,
        };
        state
            .apply(&Op::Request(r), sender, &parties, Signatures::Trusted)
            .unwrap();
    }
    let r = Request {
        terms: terms(vec![n[0], n[1]], 99_999).into(),
        signature: sig,
    };
    assert_eq!(
        state
            .apply(&Op::Request(r), sender, &parties, Signatures::Trusted)
            .unwrap_err(),
        OpError::TooManyPending
    );
}

#[test]
fn frozen_credit_is_capped_by_the_limit() {
    let n = ids(2);
    let parties = *Channel::new(n[0], n[1]).parties();
    let sender = if n[0] < n[1] {
        Side::First
    } else {
        Side::Second
    };
    let mut state = ChannelState::default();
    state
        .apply(
            &Op::SetLimit {
                currency: hours(),
                limit: 5,
            },
            sender.other(),
            &parties,
            Signatures::Trusted,
        )
        .unwrap();
    let sig = identity(100).sign("test", &0u8);
    for i in 0..5 {
        let r = Request {
            terms: terms(vec![n[0], n[1]], i).into(),
            signature: sig,
        };
        state
            .apply(&Op::Request(r), sender, &parties, Signatures::Trusted)
            .unwrap();
    }
    let r = Request {
        terms: terms(vec![n[0], n[1]], 5).into(),
        signature: sig,
    };
    assert!(matches!(
        state
            .apply(&Op::Request(r), sender, &parties, Signatures::Trusted)
            .unwrap_err(),
        OpError::OverLimit { available: 0, .. }
    ));
    // And no limit may exceed the protocol maximum that keeps sums from overflowing.
    assert_eq!(
        state
            .apply(
                &Op::SetLimit {
                    currency: hours(),
                    limit: MAX_FROZEN_PER_FRIEND + 1
                },
                sender,
                &parties,
                Signatures::Trusted
            )
            .unwrap_err(),
        OpError::AmountOutOfRange(MAX_FROZEN_PER_FRIEND + 1)
    );
}

#[test]
fn max_route_len() {
    let buyer = identity(100);
    let route = ids(MAX_ROUTE_LEN + 1);
    let err = Request::sign(&buyer, terms(route, 1)).unwrap_err();
    assert_eq!(err, PaymentError::RouteLength(MAX_ROUTE_LEN + 1));
    let ok = Request::sign(&buyer, terms(ids(MAX_ROUTE_LEN), 1));
    assert!(ok.is_ok());
}

#[test]
fn max_message_size() {
    let too_big = vec![1u8; MAX_MESSAGE_SIZE + 1];
    assert_eq!(
        Message::decode(&too_big).unwrap_err(),
        DecodeError::TooLarge(MAX_MESSAGE_SIZE + 1)
    );
    // An oversized message is refused when written, too.
    let huge_memo_resolutions: Vec<Resolution> = (0..20_000u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            Resolution {
                request_id: RequestId(id),
                outcome: Outcome::Cancelled,
            }
        })
        .collect();
    let offer = Message::Offer(Box::new(Offer {
        tip: Tip {
            prev_state: ChannelState::default(),
            prev_header: None,
            last: None,
            reset: None,
        },
        resolutions: huge_memo_resolutions,
        reply_wanted: false,
    }));
    assert!(matches!(
        offer.encode().unwrap_err(),
        EncodeError::TooLarge(_)
    ));
}

#[test]
fn the_largest_legitimate_offer_fits_in_a_message() {
    // A full channel: the most currencies with the longest names, the most pending requests
    // over the longest routes with answers, a full last move, and a resolution for each.
    let route = ids(MAX_ROUTE_LEN);
    let seller = identity(100 + MAX_ROUTE_LEN as u8 - 1);
    let mut state = ChannelState::default();
    for i in 0..MAX_CURRENCIES_PER_FRIEND {
        let name = format!("{i:x<width$}", width = MAX_CURRENCY_LEN);
        state
            .lines
            .insert(Currency::new(name).unwrap(), Default::default());
    }
    let big = |i: u32| {
        let mut t = terms(route.clone(), i);
        t.fees = vec![MAX_AMOUNT / 64; MAX_ROUTE_LEN - 2];
        t.dest_payment = MAX_AMOUNT / 64;
        t.total_dest_payment = MAX_AMOUNT;
        t.currency = Currency::new("x".repeat(MAX_CURRENCY_LEN)).unwrap();
        Request::sign(&identity(100), t).unwrap()
    };
    let mut resolutions = Vec::new();
    for i in 0..MAX_PENDING_REQUESTS as u32 {
        let request = big(i);
        let response = Response::sign(&seller, &request.terms, HashedLock([3; 32]));
        resolutions.push(Resolution {
            request_id: request.terms.request_id,
            outcome: Outcome::Collected {
                src_plain_lock: PlainLock([1; 32]),
                dest_plain_lock: PlainLock([2; 32]),
                response: response.clone(),
            },
        });
        state.pending.insert(
            request.terms.request_id,
            Pending {
                request,
                payer: Side::First,
                amount: MAX_AMOUNT,
                response: Some(response),
            }
            .into(),
        );
    }
    let ops: Vec<Op> = (0..MAX_OPS_PER_MOVE as u32)
        .map(|i| Op::Request(big(10_000 + i)))
        .collect();
    let header = MoveHeader {
        channel: Default::default(),
        epoch: 0,
        counter: u64::MAX,
        prev: Default::default(),
        ops_hash: Default::default(),
        state_hash: Default::default(),
    };
    let last = Move::sign_unchecked(&identity(1), header, ops);
    let offer = Message::Offer(Box::new(Offer {
        tip: Tip {
            prev_state: state,
            prev_header: None,
            last: Some(last),
            reset: None,
        },
        resolutions,
        reply_wanted: true,
    }));
    let bytes = offer.encode().expect("the largest offer fits");
    assert!(bytes.len() <= MAX_MESSAGE_SIZE);
    eprintln!("largest offer: {} bytes of {MAX_MESSAGE_SIZE}", bytes.len());
}

#[test]
fn max_memo_len_and_max_amount() {
    let seller = identity(1);
    let terms = |memo: String, amount: u64| InvoiceTerms {
        id: InvoiceId([0; 32]),
        seller: seller.id(),
        currency: hours(),
        amount,
        expires_at_ms: 1,
        memo,
    };
    assert_eq!(
        Invoice::sign(&seller, terms("m".repeat(MAX_MEMO_LEN + 1), 1)).unwrap_err(),
        PaymentError::MemoTooLong(MAX_MEMO_LEN + 1)
    );
    assert!(Invoice::sign(&seller, terms("m".repeat(MAX_MEMO_LEN), 1)).is_ok());
    assert_eq!(
        Invoice::sign(&seller, terms(String::new(), MAX_AMOUNT + 1)).unwrap_err(),
        PaymentError::AmountOutOfRange(MAX_AMOUNT + 1)
    );
}

#[test]
fn max_currency_len_and_currencies_per_friend() {
    assert!(matches!(
        Currency::new("x".repeat(MAX_CURRENCY_LEN + 1)).unwrap_err(),
        CurrencyError::BadLength { .. }
    ));
    assert!(matches!(
        Currency::new("€").unwrap_err(),
        CurrencyError::BadCharacter { .. }
    ));
    let n = ids(2);
    let parties = *Channel::new(n[0], n[1]).parties();
    let mut state = ChannelState::default();
    for i in 0..MAX_CURRENCIES_PER_FRIEND {
        let c = Currency::new(format!("c{i}")).unwrap();
        state
            .apply(
                &Op::SetLimit {
                    currency: c,
                    limit: 1,
                },
                Side::First,
                &parties,
                Signatures::Trusted,
            )
            .unwrap();
    }
    let extra = Currency::new("one-more").unwrap();
    assert_eq!(
        state
            .apply(
                &Op::SetLimit {
                    currency: extra,
                    limit: 1
                },
                Side::First,
                &parties,
                Signatures::Trusted
            )
            .unwrap_err(),
        OpError::TooManyCurrencies
    );
}

#[test]
fn max_routes_per_payment() {
    let mut buyer = Node::new(identity(1), Rate::default());
    let seller = identity(2);
    buyer.add_friend(seller.id()).unwrap();
    let invoice = Invoice::sign(
        &seller,
        InvoiceTerms {
            id: InvoiceId([0; 32]),
            seller: seller.id(),
            currency: hours(),
            amount: 1,
            expires_at_ms: 1_000,
            memo: String::new(),
        },
    )
    .unwrap();
    let plan = RoutePlan {
        route: vec![buyer.id(), seller.id()],
        fees: vec![],
        dest_payment: 1,
    };
    let err = buyer
        .pay(0, &invoice, vec![plan; MAX_ROUTES_PER_PAYMENT + 1], [0; 32])
        .unwrap_err();
    assert_eq!(
        err,
        NodeError::Payment(PaymentError::TooManyRoutes(MAX_ROUTES_PER_PAYMENT + 1))
    );
}

#[test]
fn max_early_abandons_per_invoice() {
    use offst_core::protocol::message::Message;
    use offst_core::protocol::node::ProtocolError;
    use offst_core::protocol::payment::{Abandon, AbandonTerms};
    let mut seller = Node::new(identity(1), Rate::default());
    let invoice = seller
        .create_invoice(hours(), 5, 60_000, String::new(), [7; 32])
        .unwrap();
    let abandon = |i: u8| {
        Abandon::sign(
            &identity(50 + i),
            AbandonTerms {
                invoice_id: invoice.terms.id,
                src_hashed_lock: HashedLock([i; 32]),
            },
        )
    };
    for i in 0..MAX_EARLY_ABANDONS_PER_INVOICE as u8 {
        seller
            .handle_message(0, identity(50 + i).id(), Message::Abandon(abandon(i)))
            .unwrap();
    }
    let extra = MAX_EARLY_ABANDONS_PER_INVOICE as u8;
    assert_eq!(
        seller
            .handle_message(
                0,
                identity(50 + extra).id(),
                Message::Abandon(abandon(extra))
            )
            .unwrap_err(),
        ProtocolError::TooManyAbandons
    );
}
