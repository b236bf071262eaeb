//! The Offst relay: QUIC store-and-forward mailboxes that a wallet's user chooses. A relay holds
//! each wallet's mail until the wallet acknowledges it, and pushes it while the wallet is
//! connected. Wallets pin the relay's Ed25519 key; the relay knows each wallet by its key.
//! A relay also runs an index of capacity reports and answers route queries, shared with its
//! peer relays ([`index`]).

pub mod cli;
pub mod config;
pub mod index;
pub mod local;
pub mod server;
pub mod store;

pub use config::Config;
pub use server::{RelayError, RelayHandle, Stats, start};
