//! Networking: QUIC to the relays, authenticated by Ed25519 keys alone, and the framed relay
//! protocol both ends speak. Unlike `protocol/`, this module does I/O.

pub mod client;
pub mod driver;
pub mod envelope;
pub mod frame;
pub mod payer;
pub mod tls;
pub mod wire;
