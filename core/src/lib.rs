//! Offst wallet core.
//!
//! - [`protocol`]: the credit-switching protocol as pure state machines (no I/O, no clock, no
//!   randomness): identities, mutual-credit channels, payments along chains, resync.
//! - [`sim`]: a seeded network simulator that runs many nodes over a delaying, reordering,
//!   duplicating network with offline periods, and checks the invariants afterwards.
//! - [`routing`]: capacity reports and the index's fee-aware, capacity-aware route search.
//! - [`wallet`], [`net`], [`invite`]: the durable wallet, its relay connection and driver,
//!   invitations and payment requests.
//! - [`api`]: the interface for other programs (`offst serve`): grants, signed requests.
//!
//! See `docs/architecture.md` for the map and `docs/protocol.md` for the rules.

#![deny(missing_docs)]

pub mod api;
pub mod invite;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod routing;
pub mod sim;
pub mod story;
pub mod sync;
pub mod wallet;
