//! What wallets and relays say to each other, one frame per message (postcard).
//!
//! A wallet opens one bidirectional stream on its connection and sends [`ToRelay`] frames; the
//! relay answers on the same stream with [`FromRelay`] frames. Envelopes are opaque to the
//! relay: it sees the recipient, the size and the time.

use serde::{Deserialize, Serialize};

use crate::protocol::identity::{NodeId, Signature};
use crate::routing::{RouteError, RouteQuery, RouteSet, SignedReport};

/// The largest envelope a relay accepts (a protocol message is at most 512 KiB; sealing and
/// padding add a little).
pub const MAX_ENVELOPE_SIZE: usize = 520 * 1024;
/// The largest frame either side accepts.
pub const MAX_FRAME_SIZE: usize = MAX_ENVELOPE_SIZE + 1024;

/// A relay: where it is and the key it must present.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RelayAddress {
    /// `host:port`.
    pub addr: String,
    /// The relay's key.
    pub key: NodeId,
}

impl std::fmt::Display for RelayAddress {
    /// `KEY@HOST:PORT`, the form operators give out and [`str::parse`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.key, self.addr)
    }
}

impl std::str::FromStr for RelayAddress {
    type Err = String;

    /// Read `KEY@HOST:PORT` (a relay's key and where it listens). The error says what is wrong
    /// in words a person can act on.
    fn from_str(text: &str) -> Result<RelayAddress, String> {
        let text = text.trim();
        let (key, addr) = text
            .split_once('@')
            .ok_or_else(|| format!("{text:?}: expected the relay as KEY@HOST:PORT"))?;
        let key: NodeId = key
            .parse()
            .map_err(|e| format!("{text:?}: bad relay key: {e}"))?;
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("{text:?}: expected the relay as KEY@HOST:PORT"));
        }
        Ok(RelayAddress {
            addr: addr.to_string(),
            key,
        })
    }
}

/// A wallet to its relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToRelay {
    /// Store `envelope` for `to`; answered by `Accepted` or `Refused` with the same `id`.
    Send {
        /// The sender's number for this request.
        id: u64,
        /// The recipient.
        to: NodeId,
        /// The sealed envelope.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// Mail up to and including `seq` arrived and was handled: delete it.
    Ack {
        /// The last handled delivery.
        seq: u64,
    },
    /// Store `envelope` for `to`, a user of the relay `relay`: this relay stores it, answers
    /// `Accepted`, and forwards it until `relay` has stored it. (If `relay` is this relay, the
    /// same as `Send`.)
    Forward {
        /// The sender's number for this request.
        id: u64,
        /// The recipient.
        to: NodeId,
        /// The recipient's relay.
        relay: RelayAddress,
        /// The sealed envelope.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// The first frame on a connection: opens the stream (a QUIC stream reaches the peer only
    /// with its first bytes), after which the relay pushes mail.
    Hello,
    /// Prove your Ed25519 key on this connection (answered by `Identity`); asked by a client
    /// that checked the relay by a CA-signed certificate and does not know its key yet.
    Identify,
    /// This wallet's capacity report for the index (its own only); answered `Accepted` or
    /// `Refused`.
    Report {
        /// The sender's number for this request.
        id: u64,
        /// The report.
        report: SignedReport,
    },
    /// Reports from a peer relay of the index federation; answered `Accepted` once applied
    /// (reports that are not newer are skipped), or `Refused` if the sender is not a peer.
    Reports {
        /// The sender's number for this request.
        id: u64,
        /// The reports.
        reports: Vec<SignedReport>,
    },
    /// Routes for a payment; answered `Routes`.
    FindRoutes {
        /// The sender's number for this request.
        id: u64,
        /// What to look for.
        query: RouteQuery,
    },
}

/// A relay to a wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromRelay {
    /// The envelope of request `id` is stored durably.
    Accepted {
        /// The request.
        id: u64,
    },
    /// The envelope of request `id` was not accepted.
    Refused {
        /// The request.
        id: u64,
        /// Why.
        reason: Refusal,
    },
    /// Mail for this wallet, in order per sender; acknowledge with `Ack`.
    Deliver {
        /// The mailbox position (increasing).
        seq: u64,
        /// When the relay stored it, ms since the Unix epoch.
        received_ms: u64,
        /// The sealed envelope.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// Everything in the mailbox has been delivered (sent once each time the mailbox runs dry).
    Empty,
    /// A fatal error; the relay closes the connection after it.
    Error {
        /// What went wrong.
        reason: String,
    },
    /// The answer to `Identify`: the relay's key, and its signature over this connection's TLS
    /// exporter (see `tls::check_identity`).
    Identity {
        /// The relay's key.
        key: NodeId,
        /// The proof.
        proof: Signature,
    },
    /// The answer to `FindRoutes` `id`.
    Routes {
        /// The request.
        id: u64,
        /// The routes, or why there are none.
        result: Result<RouteSet, RouteError>,
    },
}

/// Why a relay did not accept an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Over the size bound.
    #[error("envelope of {size} bytes is over the relay's {max}-byte limit")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// The sender sent too much lately.
    #[error("you are sending too fast; retry in {retry_after_ms} ms")]
    SenderQuota {
        /// When to retry.
        retry_after_ms: u64,
    },
    /// The recipient's mailbox is full.
    #[error("the recipient's mailbox is full ({messages} messages, {bytes} bytes); retry later")]
    MailboxFull {
        /// Messages waiting.
        messages: u64,
        /// Bytes waiting.
        bytes: u64,
    },
    /// The relay could not store it (disk); nothing was accepted.
    #[error("the relay could not store the envelope; retry later")]
    Unavailable,
    /// A capacity report the index did not take.
    #[error("report refused: {reason}")]
    BadReport {
        /// Why.
        reason: String,
    },
    /// Only the relay's index peers may send reports of other wallets.
    #[error("only this relay's index peers may send other wallets' reports")]
    NotAPeer,
    /// This relay runs no index.
    #[error("this relay runs no index; ask another relay for routes")]
    IndexOff,
}

/// Encode a frame body.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    crate::protocol::identity::encode_after(&[], value).unwrap_or_default()
}

/// Decode a frame body.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    crate::protocol::identity::decode(bytes).map_err(|e| format!("malformed frame: {e}"))
}
