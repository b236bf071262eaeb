//! The seed stories, run through the real protocol on a [`LocalNet`].
//!
//! - **The milkman and the baker.** The baker lets the milkman owe at most 3 loaves. Three loaves
//!   on credit go through, the fourth is refused, and when the baker later buys milk worth 3
//!   loaves the debt is cleared.
//! - **Six friends, A to F,** in a ring `A–B–C–D–E–F–A`, each letting each neighbour owe 10
//!   hours. Four purchases, one through a mediator, leave A +3, B −3, C +4, D −10, E −2, F +8,
//!   which sum to 0:
//!   1. B buys 3 hours of work from A;
//!   2. D buys 4 from C;
//!   3. D buys 6 from F through E (E mediates for free);
//!   4. E buys 2 from F.

// The stories index the fixed lists of people they build.
#![allow(clippy::indexing_slicing)]

use std::fmt;

use crate::protocol::amount::{Currency, Rate};
use crate::protocol::identity::NodeId;
use crate::sim::local::{LocalNet, LocalNetError};

/// One row of a balance table: name, total, and the balance with each friend by name.
pub type StoryRow = (String, i128, Vec<(String, i128)>);

/// A balance table: each person's total and their balance with each friend.
#[derive(Clone, Debug)]
pub struct StoryTable {
    /// Title.
    pub title: String,
    /// What happened, in order.
    pub steps: Vec<String>,
    /// (name, total, [(friend name, balance)]).
    pub rows: Vec<StoryRow>,
    /// The currency.
    pub currency: Currency,
}

impl StoryTable {
    /// Each person's total, by name.
    pub fn total(&self, name: &str) -> Option<i128> {
        self.rows.iter().find(|r| r.0 == name).map(|r| r.1)
    }

    /// The sum of all totals (0 when nothing was created or lost).
    pub fn sum(&self) -> i128 {
        self.rows.iter().map(|r| r.1).sum()
    }
}

impl fmt::Display for StoryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {s}", i + 1)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<10} {:>8}   with each friend ({})",
            "person", "balance", self.currency
        )?;
        for (name, total, with) in &self.rows {
            let detail: Vec<String> = with.iter().map(|(n, b)| format!("{n} {b:+}")).collect();
            writeln!(f, "{name:<10} {total:>+8}   {}", detail.join(", "))?;
        }
        write!(
            f,
            "{:<10} {:>+8}   (balances sum to zero)",
            "sum",
            self.sum()
        )
    }
}

fn table(
    net: &LocalNet,
    title: &str,
    steps: Vec<String>,
    people: &[(&str, NodeId)],
    c: &Currency,
) -> StoryTable {
    let name_of = |id: &NodeId| {
        people
            .iter()
            .find(|p| p.1 == *id)
            .map_or("?", |p| p.0)
            .to_string()
    };
    let rows = people
        .iter()
        .map(|(name, id)| {
            let with = net.nodes.get(id).map_or_else(Vec::new, |n| {
                n.friends()
                    .map(|f| (name_of(f), net.balance(id, f, c)))
                    .collect()
            });
            (name.to_string(), net.net(id, c), with)
        })
        .collect();
    StoryTable {
        title: title.into(),
        steps,
        rows,
        currency: *c,
    }
}

/// The six friends A–F.
pub fn six_friends() -> Result<StoryTable, LocalNetError> {
    let hours = Currency::new("hours").map_err(|e| LocalNetError::Wire(e.to_string()))?;
    let mut net = LocalNet::new();
    net.encode = true;
    let names = ["A", "B", "C", "D", "E", "F"];
    let ids: Vec<NodeId> = (0..6u8)
        .map(|i| net.add_node(i + 1, Rate::default()))
        .collect();
    for i in 0..6 {
        net.befriend(ids[i], ids[(i + 1) % 6], &hours, 10)?;
    }
    let (a, b, c, d, e, f) = (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    net.buy_along(&[b, a], &hours, 3, 1)?;
    net.buy_along(&[d, c], &hours, 4, 2)?;
    net.buy_along(&[d, e, f], &hours, 6, 3)?;
    net.buy_along(&[e, f], &hours, 2, 4)?;
    let people: Vec<(&str, NodeId)> = names.iter().copied().zip(ids.iter().copied()).collect();
    Ok(table(
        &net,
        "Six friends in a ring A-B-C-D-E-F-A, each letting each neighbour owe 10 hours",
        vec![
            "B buys 3 hours from A".into(),
            "D buys 4 hours from C".into(),
            "D buys 6 hours from F through E (E mediates for free)".into(),
            "E buys 2 hours from F".into(),
        ],
        &people,
        &hours,
    ))
}

/// The milkman and the baker. Returns the table after the debt is repaid, and fails if the
/// fourth loaf on credit is *not* refused.
pub fn milkman_and_baker() -> Result<StoryTable, LocalNetError> {
    let loaves = Currency::new("loaves").map_err(|e| LocalNetError::Wire(e.to_string()))?;
    let mut net = LocalNet::new();
    net.encode = true;
    let milkman = net.add_node(11, Rate::default());
    let baker = net.add_node(12, Rate::default());
    net.befriend(milkman, baker, &loaves, 3)?;
    let mut steps = Vec::new();
    for i in 1..=3 {
        net.buy_along(&[milkman, baker], &loaves, 1, i)?;
        steps.push(format!("the milkman takes loaf {i} on credit"));
    }
    match net.buy_along(&[milkman, baker], &loaves, 1, 4) {
        Err(LocalNetError::Node(e)) => steps.push(format!("loaf 4 is refused: {e}")),
        Ok(_) => return Err(LocalNetError::Wire("the 4th loaf was not refused".into())),
        Err(other) => return Err(other),
    }
    net.buy_along(&[baker, milkman], &loaves, 3, 5)?;
    steps.push("the baker buys milk worth 3 loaves: the debt is cleared".into());
    Ok(table(
        &net,
        "The milkman and the baker: the baker lets the milkman owe 3 loaves",
        steps,
        &[("milkman", milkman), ("baker", baker)],
        &loaves,
    ))
}
