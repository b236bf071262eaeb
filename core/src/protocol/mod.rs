//! The credit-switching protocol as pure, deterministic state machines.
//!
//! Nothing in this module does I/O, reads a clock or draws randomness: time and random bytes are
//! arguments. `core/tests/sans_io.rs` keeps it that way.

pub mod amount;
pub mod bounds;
pub mod channel;
pub mod identity;
pub mod message;
pub mod node;
pub mod payment;
pub mod tracked;
