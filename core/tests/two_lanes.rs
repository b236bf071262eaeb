//! The rule two lanes per channel would rest on (`docs/proposals/two-lanes.md`, step 1 of
//! "How to build it safely"), checked on today's `ChannelState::apply`: each friend writes only
//! its own operations (its requests and raised limits, its answers, cancels and collects of
//! the other's requests), each valid against what its writer had seen (its own earlier
//! operations and the other's up to what it acknowledged). Then every order of applying the two
//! lanes that keeps each lane's order and puts each operation after what its writer had seen
//! applies without a refusal and ends in one state: the state is a function of the two
//! counters. A lowered limit is the exception the proposal names, shown here too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{hours, identity};
use offst_core::protocol::channel::{ChannelState, Op, OpError, Parties, Side, Signatures};
use offst_core::protocol::identity::Identity;
use offst_core::protocol::payment::{
    HashedLock, InvoiceId, PlainLock, Request, RequestId, RequestTerms, Response,
};
use proptest::prelude::*;

/// An operation of one lane, with how many of the other lane's operations its writer had
/// applied when it wrote it.
#[derive(Clone, Debug)]
struct Written {
    op: Op,
    seen: usize,
}

struct Friends {
    ids: [Identity; 2],
    parties: Parties,
}

impl Friends {
    fn new() -> Friends {
        let (x, y) = (identity(1), identity(2));
        let (first, second) = if x.id() < y.id() { (x, y) } else { (y, x) };
        let parties = Parties {
            first: first.id(),
            second: second.id(),
        };
        Friends {
            ids: [first, second],
            parties,
        }
    }

    fn who(&self, side: Side) -> &Identity {
        match side {
            Side::First => &self.ids[0],
            Side::Second => &self.ids[1],
        }
    }
}

fn start(limit: u64) -> ChannelState {
    let f = Friends::new();
    let mut s = ChannelState::default();
    for side in [Side::First, Side::Second] {
        s.apply(
            &Op::SetLimit {
                currency: hours(),
                limit,
            },
            side,
            &f.parties,
            Signatures::Trusted,
        )
        .unwrap();
    }
    s
}

/// Apply `order` (lane, index) to `state`, each operation with today's checks.
fn apply_in(
    f: &Friends,
    mut state: ChannelState,
    lanes: &[Vec<Written>; 2],
    order: &[(usize, usize)],
) -> Result<ChannelState, OpError> {
    for &(lane, i) in order {
        let side = if lane == 0 { Side::First } else { Side::Second };
        state.apply(&lanes[lane][i].op, side, &f.parties, Signatures::Trusted)?;
    }
    Ok(state)
}

/// The order a lane's writer applied things in when it wrote its `upto` first operations:
/// each of its own after the other lane's operations it had seen, and then `seen_now` of the
/// other's.
fn view_order(
    lanes: &[Vec<Written>; 2],
    lane: usize,
    upto: usize,
    seen_now: usize,
) -> Vec<(usize, usize)> {
    let other = 1 - lane;
    let mut order = Vec::new();
    let mut theirs = 0;
    for (i, w) in lanes[lane].iter().take(upto).enumerate() {
        while theirs < w.seen {
            order.push((other, theirs));
            theirs += 1;
        }
        order.push((lane, i));
    }
    while theirs < seen_now {
        order.push((other, theirs));
        theirs += 1;
    }
    order
}

/// Build two lanes from a script: each byte says who acts and how. Every operation is kept only
/// if its writer's view accepts it, so each lane is valid against what its writer had seen.
fn lanes_from(script: &[u8], limit: u64) -> [Vec<Written>; 2] {
    let f = Friends::new();
    let mut lanes: [Vec<Written>; 2] = [Vec::new(), Vec::new()];
    let mut seen = [0usize; 2];
    let mut next_id = 0u8;
    let mut limits = [limit; 2];
    for &c in script {
        let lane = usize::from(c & 1);
        let side = if lane == 0 { Side::First } else { Side::Second };
        let other = 1 - lane;
        let view = apply_in(
            &f,
            start(limit),
            &lanes,
            &view_order(&lanes, lane, lanes[lane].len(), seen[lane]),
        )
        .expect("a writer's own view applies");
        let op = match (c >> 1) % 4 {
            // Take in more of the other lane.
            0 => {
                seen[lane] = (seen[lane] + 1 + usize::from(c >> 3) % 3).min(lanes[other].len());
                continue;
            }
            // A request toward the other.
            1 => {
                next_id = next_id.wrapping_add(1);
                let me = f.who(side);
                let to = f.who(side.other()).id();
                let amount = 1 + u64::from(c >> 3) % 40;
                let terms = RequestTerms {
                    request_id: RequestId([next_id; 32]),
                    invoice_id: InvoiceId([next_id; 32]),
                    currency: hours(),
                    src_hashed_lock: PlainLock([next_id; 32]).hashed(),
                    route: vec![me.id(), to],
                    fees: vec![],
                    dest_payment: amount,
                    total_dest_payment: amount,
                };
                Op::Request(Request::sign(me, terms).unwrap())
            }
            // Answer, cancel or collect one of the other's requests that this writer has seen.
            2 => {
                let theirs: Vec<_> = view
                    .pending
                    .iter()
                    .filter(|(_, p)| p.payer != side)
                    .collect();
                if theirs.is_empty() {
                    continue;
                }
                let (id, p) = theirs[usize::from(c >> 3) % theirs.len()];
                let lock = PlainLock([id.0[0].wrapping_add(100); 32]);
                match (&p.response, (c >> 6) & 1) {
                    (None, 0) => Op::Response {
                        request_id: *id,
                        response: Response::sign(f.who(side), &p.request.terms, lock.hashed()),
                    },
                    (Some(_), 0) => Op::Collect {
                        request_id: *id,
                        src_plain_lock: PlainLock([id.0[0]; 32]),
                        dest_plain_lock: lock,
                    },
                    _ => Op::Cancel { request_id: *id },
                }
            }
            // Raise the limit this writer gives the other.
            _ => {
                limits[lane] += 1 + u64::from(c >> 3) % 10;
                Op::SetLimit {
                    currency: hours(),
                    limit: limits[lane],
                }
            }
        };
        if view
            .clone()
            .apply(&op, side, &f.parties, Signatures::Trusted)
            .is_ok()
        {
            lanes[lane].push(Written {
                op,
                seen: seen[lane],
            });
        }
    }
    lanes
}

/// An order of both lanes that keeps each lane's order and puts each operation after what its
/// writer had seen; `choices` picks which lane goes next when both may.
fn merge(lanes: &[Vec<Written>; 2], choices: &[bool]) -> Vec<(usize, usize)> {
    let mut at = [0usize; 2];
    let mut order = Vec::new();
    let mut k = 0;
    while at[0] < lanes[0].len() || at[1] < lanes[1].len() {
        let ready = |l: usize| at[l] < lanes[l].len() && lanes[l][at[l]].seen <= at[1 - l];
        let lane = match (ready(0), ready(1)) {
            (true, true) => {
                k += 1;
                usize::from(
                    choices
                        .get(k % choices.len().max(1))
                        .copied()
                        .unwrap_or(false),
                )
            }
            (true, false) => 0,
            (false, true) => 1,
            (false, false) => panic!("no lane can go on: each waits for the other"),
        };
        order.push((lane, at[lane]));
        at[lane] += 1;
    }
    order
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn both_lanes_apply_in_every_allowed_order_to_one_state(
        script in proptest::collection::vec(any::<u8>(), 1..120),
        orders in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 1..40), 1..6),
        limit in 0u64..200,
    ) {
        let f = Friends::new();
        let lanes = lanes_from(&script, limit);
        let mut states = Vec::new();
        for choices in &orders {
            let order = merge(&lanes, choices);
            let state = apply_in(&f, start(limit), &lanes, &order);
            prop_assert!(state.is_ok(), "order {:?} refused: {:?}", order, state.err());
            states.push(state.unwrap());
        }
        // Each lane entirely first, where the acknowledgements allow it, is one more order.
        for first in [0usize, 1] {
            let order = merge(&lanes, &[first == 1]);
            states.push(apply_in(&f, start(limit), &lanes, &order).unwrap());
        }
        for s in &states[1..] {
            prop_assert_eq!(s.hash(), states[0].hash());
        }
        let line = &states[0].lines[&hours()];
        prop_assert!(line.limits_hold());
    }
}

/// The exception: a lowered limit. A lowers what B may owe while B, not having seen it yet,
/// freezes within the old limit. B's request was valid against what B had seen, but applied
/// after A's lower limit it is refused, and A's lower limit applied after the request is
/// refused too: the outcome depends on the order. Two lanes therefore need the proposal's
/// changed rule (a lower limit binds only requests made after their writer saw it).
#[test]
fn a_lowered_limit_does_not_commute_with_a_request_made_before_it_was_seen() {
    let f = Friends::new();
    let (a, b) = (Side::First, Side::Second);
    let s = start(100);
    let lower = Op::SetLimit {
        currency: hours(),
        limit: 10,
    };
    let terms = RequestTerms {
        request_id: RequestId([7; 32]),
        invoice_id: InvoiceId([7; 32]),
        currency: hours(),
        src_hashed_lock: HashedLock([7; 32]),
        route: vec![f.who(b).id(), f.who(a).id()],
        fees: vec![],
        dest_payment: 50,
        total_dest_payment: 50,
    };
    let request = Op::Request(Request::sign(f.who(b), terms).unwrap());
    // Each alone is valid.
    assert!(
        s.clone()
            .apply(&lower, a, &f.parties, Signatures::Trusted)
            .is_ok()
    );
    assert!(
        s.clone()
            .apply(&request, b, &f.parties, Signatures::Trusted)
            .is_ok()
    );
    // Together, each order refuses the second one.
    let mut lowered_first = s.clone();
    lowered_first
        .apply(&lower, a, &f.parties, Signatures::Trusted)
        .unwrap();
    assert!(matches!(
        lowered_first.apply(&request, b, &f.parties, Signatures::Trusted),
        Err(OpError::OverLimit { .. })
    ));
    let mut requested_first = s;
    requested_first
        .apply(&request, b, &f.parties, Signatures::Trusted)
        .unwrap();
    assert!(matches!(
        requested_first.apply(&lower, a, &f.parties, Signatures::Trusted),
        Err(OpError::LimitBelowDebt { .. })
    ));
}

/// The scripts make every kind of operation in both lanes, so the property above is not about
/// requests alone.
#[test]
fn the_scripts_make_every_kind_of_operation_in_both_lanes() {
    let mut x = 12345u32;
    let script: Vec<u8> = (0..400)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect();
    let lanes = lanes_from(&script, 100);
    for lane in &lanes {
        let count = |f: fn(&Op) -> bool| lane.iter().filter(|w| f(&w.op)).count();
        assert!(count(|o| matches!(o, Op::Request(_))) > 0);
        assert!(count(|o| matches!(o, Op::Response { .. })) > 0);
        assert!(count(|o| matches!(o, Op::Collect { .. })) > 0);
        assert!(count(|o| matches!(o, Op::Cancel { .. })) > 0);
        assert!(count(|o| matches!(o, Op::SetLimit { .. })) > 0);
        // Written with something of the other lane seen, and with something not yet seen.
        assert!(lane.iter().any(|w| w.seen > 0));
    }
    let f = Friends::new();
    let (a, b) = (merge(&lanes, &[false]), merge(&lanes, &[true]));
    assert_ne!(a, b, "the two extreme orders differ");
    assert_eq!(
        apply_in(&f, start(100), &lanes, &a).unwrap().hash(),
        apply_in(&f, start(100), &lanes, &b).unwrap().hash()
    );
}
