//! The seed stories, through the real protocol.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use offst_core::story;

#[test]
fn milkman_and_baker_fourth_loaf_refused_and_debt_cleared() {
    let table = story::milkman_and_baker().expect("story runs");
    // The story itself fails if the 4th loaf is not refused; check that it said so.
    assert!(
        table
            .steps
            .iter()
            .any(|s| s.starts_with("loaf 4 is refused")),
        "{table}"
    );
    assert_eq!(table.total("milkman"), Some(0), "{table}");
    assert_eq!(table.total("baker"), Some(0), "{table}");
}

#[test]
fn six_friends_balances_match_the_story() {
    let table = story::six_friends().expect("story runs");
    let expected = [
        ("A", 3),
        ("B", -3),
        ("C", 4),
        ("D", -10),
        ("E", -2),
        ("F", 8),
    ];
    for (name, balance) in expected {
        assert_eq!(table.total(name), Some(balance), "{name}\n{table}");
    }
    assert_eq!(table.sum(), 0, "{table}");
}
