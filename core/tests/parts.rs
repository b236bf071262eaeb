//! Stored parts: a node written out part by part comes back whole, and damaged, newer or
//! foreign parts are refused with a typed error instead of a half-built node.

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
use offst_core::protocol::node::{Node, PART_VERSION, PartsError};

/// A mediator in the middle of a chain, after a completed payment and one left pending.
fn busy_mediator() -> (Node, u8) {
    let (mut net, ids) = chain(3, 100, Rate { base: 1, ppm: 0 });
    net.buy_along(&ids, &hours(), 10, 1).unwrap();
    net.run().unwrap();
    let node = net.node(&ids[1]).unwrap().clone();
    (node, 2)
}

#[test]
fn buyer_mediator_and_seller_round_trip() {
    let (mut net, ids) = chain(3, 100, Rate { base: 1, ppm: 0 });
    net.buy_along(&ids, &hours(), 10, 1).unwrap();
    net.run().unwrap();
    for (i, id) in ids.iter().enumerate() {
        let node = net.node(id).unwrap();
        let back = Node::from_parts(identity(i as u8 + 1), &node.parts()).unwrap();
        assert_eq!(back.parts(), node.parts());
    }
    let buyer = net.node(&ids[0]).unwrap();
    assert_eq!(buyer.parts().payments.len(), 1);
    assert_eq!(net.node(&ids[2]).unwrap().parts().invoices.len(), 1);
}

#[test]
fn parts_round_trip() {
    let (node, seed) = busy_mediator();
    let parts = node.parts();
    assert!(!parts.channels.is_empty());
    let back = Node::from_parts(identity(seed), &parts).unwrap();
    assert_eq!(back.parts(), parts);
    assert_eq!(back.id(), node.id());
    for f in node.friends() {
        assert_eq!(back.balance(f, &hours()), node.balance(f, &hours()));
    }
}

#[test]
fn changes_after_load_are_only_what_moved() {
    let (node, seed) = busy_mediator();
    let mut back = Node::from_parts(identity(seed), &node.parts()).unwrap();
    let changes = back.take_changes();
    assert!(changes.channels.is_empty() && changes.payments.is_empty());
    assert!(changes.invoices.is_empty() && changes.outcomes.is_empty());
}

#[test]
fn damaged_part_is_refused() {
    let (node, seed) = busy_mediator();
    let mut parts = node.parts();
    let ch = &mut parts.channels[0];
    ch.truncate(ch.len() / 2);
    let err = Node::from_parts(identity(seed), &parts).unwrap_err();
    assert!(
        matches!(
            err,
            PartsError::Corrupt {
                part: "channel",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("restore from a backup"));

    let mut parts = node.parts();
    parts.settings = vec![0, 1, 2];
    let err = Node::from_parts(identity(seed), &parts).unwrap_err();
    assert!(
        matches!(
            err,
            PartsError::Corrupt {
                part: "settings",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn part_from_a_newer_version_is_refused() {
    let (node, seed) = busy_mediator();
    let mut parts = node.parts();
    parts.channels[0][0] = PART_VERSION + 1;
    let err = Node::from_parts(identity(seed), &parts).unwrap_err();
    assert_eq!(
        err,
        PartsError::NewerVersion {
            part: "channel",
            got: PART_VERSION + 1
        }
    );
    assert!(err.to_string().contains("update the app"));
}

#[test]
fn parts_of_another_identity_are_refused() {
    let (node, _) = busy_mediator();
    let err = Node::from_parts(identity(9), &node.parts()).unwrap_err();
    assert_eq!(err, PartsError::WrongIdentity);
}
