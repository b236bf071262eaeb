//! The relay's settings: an embedded default, a TOML file over it, flags over both.

use std::net::SocketAddr;
use std::path::PathBuf;

use offst_core::net::wire::RelayAddress;
use serde::Deserialize;

/// Everything a relay can be told. Every field has a default (see [`Config::default`]).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen (UDP).
    pub listen: SocketAddr,
    /// Where the relay keeps its key and its mail.
    pub data_dir: PathBuf,
    /// Largest envelope accepted, in bytes.
    pub max_envelope_bytes: u64,
    /// Most messages waiting in one mailbox.
    pub max_mailbox_messages: u64,
    /// Most bytes waiting in one mailbox.
    pub max_mailbox_bytes: u64,
    /// Mail older than this is deleted, in seconds (0: never). Senders resend what matters.
    pub max_mail_age_secs: u64,
    /// Envelopes one sender may send per second, sustained.
    pub sender_rate_per_sec: u32,
    /// Envelopes one sender may send at once before the rate applies.
    pub sender_burst: u32,
    /// Most connections at once.
    pub max_connections: usize,
    /// Most deliveries sent to one connection and not yet acknowledged.
    pub delivery_window: u64,
    /// How long mail for a connected recipient, and an envelope sent on to another relay, is
    /// held in memory unwritten, in milliseconds (0: every envelope is written before its sender
    /// is answered). Acknowledged or taken in that time, it is never written.
    pub hold_ms: u64,
    /// A CA-signed certificate chain (PEM, leaf first) to serve to clients that know this
    /// relay only by its DNS name; clients that pin the relay's key keep getting its own
    /// certificate. Needs `tls_private_key`.
    pub tls_certificate: Option<PathBuf>,
    /// The private key (PEM) of `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
    /// Run the index: take capacity reports and answer route queries.
    pub index: bool,
    /// Relays whose index this one shares reports with, each `KEY@HOST:PORT`. Both sides name
    /// each other.
    pub index_peers: Vec<String>,
}

/// The port of the embedded default.
pub const DEFAULT_PORT: u16 = 7360;

/// The longest `hold_ms`: a sender whose mail is held waits up to that long for its answer.
pub const MAX_HOLD_MS: u64 = 1_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            data_dir: PathBuf::from("offst-relay-data"),
            max_envelope_bytes: offst_core::net::wire::MAX_ENVELOPE_SIZE as u64,
            max_mailbox_messages: 10_000,
            max_mailbox_bytes: 64 * 1024 * 1024,
            max_mail_age_secs: 30 * 24 * 3600,
            sender_rate_per_sec: 200,
            sender_burst: 2_000,
            max_connections: 20_000,
            delivery_window: 256,
            hold_ms: crate::store::HOLD_FOR.as_millis() as u64,
            tls_certificate: None,
            tls_private_key: None,
            index: true,
            index_peers: Vec::new(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("can't read the config file {path}: {detail}")]
    Read {
        /// The file.
        path: String,
        /// What the system said.
        detail: String,
    },
    /// The file is not valid TOML for this relay.
    #[error("config file {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong (line and key included).
        detail: String,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// The index peers, parsed.
    pub fn peers(&self) -> Result<Vec<RelayAddress>, ConfigError> {
        self.index_peers
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e| ConfigError::Invalid(format!("index peer: {e}")))
            })
            .collect()
    }

    /// The default, overridden by the TOML file at `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    }

    /// Check the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Wallets seal envelopes up to the wire's bound (the protocol's largest message,
        // padded), and refuse nothing smaller to a relay: a relay that refused one, or a
        // mailbox that could never hold one, would stall the channel or the payment it
        // carries for good, so neither bound can be set below it.
        let max = offst_core::net::wire::MAX_ENVELOPE_SIZE as u64;
        if self.max_envelope_bytes != max {
            return Err(ConfigError::Invalid(format!(
                "max_envelope_bytes must be {max} (the protocol's largest envelope: a relay \
                 that refuses a wallet's envelope stalls the channel it carries); leave it out"
            )));
        }
        if self.max_mailbox_bytes < max {
            return Err(ConfigError::Invalid(format!(
                "max_mailbox_bytes must be at least {max}, so that a mailbox can hold the \
                 protocol's largest envelope"
            )));
        }
        if self.max_connections == 0 || self.delivery_window == 0 || self.sender_burst == 0 {
            return Err(ConfigError::Invalid(
                "max_connections, delivery_window and sender_burst must be at least 1".into(),
            ));
        }
        if self.hold_ms > MAX_HOLD_MS {
            return Err(ConfigError::Invalid(format!(
                "hold_ms must be 0 to {MAX_HOLD_MS}: senders wait that long for their answer"
            )));
        }
        self.peers()?;
        if self.tls_certificate.is_some() != self.tls_private_key.is_some() {
            return Err(ConfigError::Invalid(
                "tls_certificate and tls_private_key go together: give both or neither".into(),
            ));
        }
        Ok(())
    }
}
