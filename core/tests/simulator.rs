//! The seeded network simulator: invariants hold after quiescence, for default and harsh
//! settings and for the settings under which earlier bugs showed up; runs replay from their
//! seed; and the checks do catch a broken network.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use offst_core::sim::{self, SimConfig, SimReport};

fn check(report: &SimReport) {
    assert_eq!(
        report.invariant_violations, 0,
        "seed {}: {:#?}",
        report.seed, report.violations
    );
    assert_eq!(report.disagreeing_pairs, 0);
    assert_eq!(report.sum_of_balances, 0);
    assert_eq!(report.frozen_left, 0);
    assert_eq!(report.completed + report.cancelled, report.payments);
    assert!(
        report.completed > report.payments / 3,
        "too few payments completed: {report:?}"
    );
}

fn cfg(nodes: usize, payments: usize, seed: u64) -> SimConfig {
    SimConfig {
        nodes,
        payments,
        seed,
        ..SimConfig::default()
    }
}

#[test]
fn default_settings_several_seeds() {
    for seed in 1..=3 {
        let r = sim::run(cfg(40, 500, seed));
        check(&r);
        assert!(
            r.completed_multi_route > 0,
            "no multi-route payment completed"
        );
    }
}

#[test]
fn mostly_offline_nodes_and_many_duplicates() {
    let r = sim::run(SimConfig {
        offline_fraction: 0.8,
        duplicate_fraction: 0.3,
        ..cfg(30, 400, 11)
    });
    check(&r);
    assert!(r.copies_dropped > 0);
}

#[test]
fn restored_nodes_resync() {
    for seed in [3, 27, 116] {
        let r = sim::run(SimConfig {
            restore_fraction: 0.3,
            offline_fraction: 0.6,
            duplicate_fraction: 0.2,
            ..cfg(40, 600, seed)
        });
        check(&r);
        assert!(r.restores > 0 && r.resyncs > 0);
    }
}

#[test]
fn friends_reset_their_channels_by_hand() {
    // Seeds 2 and 8 found a collect stranded by a reset and an answer-and-collect move the
    // buyer did not understand.
    for seed in [2, 8] {
        let r = sim::run(SimConfig {
            reset_fraction: 0.2,
            ..cfg(40, 800, seed)
        });
        check(&r);
        assert!(r.resets > 0);
    }
    // Seed 39 found a friend stuck in an old epoch after it proposed twice.
    for seed in [9, 39] {
        let r = sim::run(SimConfig {
            reset_fraction: 0.2,
            restore_fraction: 0.2,
            offline_fraction: 0.5,
            duplicate_fraction: 0.2,
            ..cfg(40, 800, seed)
        });
        check(&r);
    }
}

#[test]
fn every_fault_at_once() {
    // Seed 1131 found a buyer that learned how its route ended but never recorded it, because a
    // reset then dropped the request.
    let r = sim::run(SimConfig {
        reset_fraction: 0.15,
        restore_fraction: 0.2,
        abandon_fraction: 0.2,
        offline_fraction: 0.5,
        duplicate_fraction: 0.2,
        ..cfg(40, 800, 1131)
    });
    check(&r);
}

#[test]
fn buyers_walk_away() {
    let r = sim::run(SimConfig {
        abandon_fraction: 0.3,
        ..cfg(40, 600, 12)
    });
    check(&r);
    assert!(r.abandoned > 0);
}

/// The settings under which the token-request reordering deadlock first showed.
#[test]
fn regression_small_network_seed_1() {
    check(&sim::run(cfg(20, 200, 1)));
}

#[test]
fn same_seed_same_run() {
    let a = sim::run(cfg(20, 150, 5));
    let b = sim::run(cfg(20, 150, 5));
    let strip = |r: &SimReport| {
        format!(
            "{:?}",
            SimReport {
                elapsed_ms: 0,
                ..r.clone()
            }
        )
    };
    assert_eq!(strip(&a), strip(&b));
    let c = sim::run(cfg(20, 150, 6));
    assert_ne!(strip(&a), strip(&c));
}

#[test]
fn the_checks_catch_a_network_that_loses_mail() {
    // Relays never lose accepted mail; a network that does must be caught.
    let r = sim::run(SimConfig {
        drop_fraction: 0.05,
        ..cfg(20, 200, 4)
    });
    assert!(r.messages_lost > 0);
    assert!(
        r.invariant_violations > 0,
        "lost messages went unnoticed: {r:?}"
    );
}

/// A store fed only with each step's changes rebuilds every node exactly, under every fault
/// (restores replace the store whole, as restoring a backup does).
#[test]
fn stores_fed_only_with_changes_rebuild_every_node() {
    for seed in [3, 1131] {
        let r = sim::run(SimConfig {
            verify_persistence: true,
            reset_fraction: 0.1,
            restore_fraction: 0.2,
            abandon_fraction: 0.2,
            duplicate_fraction: 0.2,
            ..cfg(25, 400, seed)
        });
        check(&r);
        assert_eq!(r.persistence_mismatches, 0);
    }
}
