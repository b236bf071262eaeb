//! The Offst relay: QUIC store-and-forward mailboxes that a wallet's user chooses. A relay holds
//! each wallet's mail until the wallet acknowledges it, and pushes it while the wallet is
//! connected. Wallets pin the relay's Ed25519 key; the relay knows each wallet by its key.

pub mod config;
pub mod server;
pub mod store;

pub use config::Config;
pub use server::{RelayError, RelayHandle, Stats, start};
