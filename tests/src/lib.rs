//! Helpers for whole-system tests: durable wallets wired to each other directly, the way the
//! simulator wires nodes (each message goes from the sender's outbox to the receiver's durable
//! step, and leaves the outbox only after that step committed).

// Test helpers report failures by returning errors; the binaries and tests decide.
#![allow(clippy::indexing_slicing)]

use std::path::Path;

use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::{Identity, NodeId};
use offst_core::protocol::node::RoutePlan;
use offst_core::wallet::{Delivery, RawKey, SecretKey, Wallet, WalletError, WalletOptions};

/// The currency the tests use.
pub fn hours() -> Currency {
    Currency::new("hours").unwrap_or_else(|_| unreachable!("a valid name"))
}

/// A fixed key store for test wallets.
pub fn test_keys(byte: u8) -> RawKey {
    RawKey(SecretKey::from_bytes([byte; 32]))
}

/// The identity with seed `[seed; 32]`.
pub fn identity(seed: u8) -> Identity {
    Identity::from_seed([seed; 32])
}

/// Create the wallet for `seed` in `dir`, or open it if it exists.
pub fn open_or_create(dir: &Path, seed: u8, options: WalletOptions) -> Result<Wallet, WalletError> {
    let keys = test_keys(seed);
    match Wallet::open(dir, &keys, options.clone()) {
        Err(WalletError::NotFound { .. }) => {
            Wallet::create_with_identity(dir, identity(seed), &keys, options)
        }
        other => other,
    }
}

/// Make `a` and `b` friends with `limit` both ways, skipping what is already done.
pub fn befriend(wallets: &mut [Wallet], a: usize, b: usize, limit: u64) -> Result<(), WalletError> {
    let (ia, ib) = (wallets[a].id(), wallets[b].id());
    for (x, friend) in [(a, ib), (b, ia)] {
        if wallets[x].node().channel(&friend).is_none() {
            wallets[x].add_friend(friend, &friend.short())?;
        }
        let has_limit = wallets[x]
            .node()
            .channel(&friend)
            .and_then(|ch| {
                let side = ch.local_side();
                ch.state().lines.get(&hours()).map(|l| l.limit_of(side))
            })
            .is_some_and(|l| l == limit);
        if !has_limit
            && wallets[x]
                .node()
                .channel(&friend)
                .is_some_and(|ch| ch.queue().is_empty())
        {
            wallets[x].set_limit(friend, hours(), limit)?;
        }
    }
    Ok(())
}

/// Where `id` is among `wallets`.
pub fn index_of(wallets: &[Wallet], id: &NodeId) -> Option<usize> {
    wallets.iter().position(|w| w.id() == *id)
}

/// Deliver the oldest message in `from`'s outbox, if any: the receiver's durable step first,
/// then the outbox entry goes. Returns whether a message moved.
pub fn deliver_one(wallets: &mut [Wallet], from: usize) -> Result<bool, WalletError> {
    let Some(item) = wallets[from].outbox(1)?.into_iter().next() else {
        return Ok(false);
    };
    let sender = wallets[from].id();
    if let Some(to) = index_of(wallets, &item.to) {
        // A refusal (a duplicate after a crash, say) is acknowledged like a delivery.
        let _: Delivery = wallets[to].receive_outgoing(sender, &item)?;
    }
    wallets[from].outbox_sent(item.seq)?;
    Ok(true)
}

/// Deliver messages until every outbox is empty (at most `limit` messages).
pub fn pump(wallets: &mut [Wallet], limit: usize) -> Result<usize, WalletError> {
    let mut moved = 0;
    loop {
        let mut any = false;
        for i in 0..wallets.len() {
            while moved < limit && deliver_one(wallets, i)? {
                moved += 1;
                any = true;
            }
        }
        if !any || moved >= limit {
            return Ok(moved);
        }
    }
}

/// A route along `path` delivering `amount`, quoting each mediator's current fee.
pub fn plan(wallets: &[Wallet], path: &[usize], amount: u64) -> RoutePlan {
    let mediators = path.get(1..path.len().saturating_sub(1)).unwrap_or(&[]);
    RoutePlan {
        route: path.iter().map(|&i| wallets[i].id()).collect(),
        fees: mediators
            .iter()
            .map(|&m| wallets[m].node().rate().fee(amount).unwrap_or(0))
            .collect(),
        dest_payment: amount,
    }
}

/// A mediator's rate in these tests.
pub const MEDIATOR_RATE: Rate = Rate {
    base: 1,
    ppm: 10_000,
};
