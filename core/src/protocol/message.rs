//! What friends (and a buyer and its seller) send each other, and its versioned wire form.
//!
//! Wire form: one version byte, then the postcard encoding of [`Message`]. A receiver accepts
//! every version from [`MIN_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`] and refuses others with a
//! typed error naming both, so that peers can be upgraded one at a time.

use serde::{Deserialize, Serialize};

use super::bounds::MAX_MESSAGE_SIZE;
use super::channel::{Move, ResetCertificate, ResetProposal, Tip};
use super::payment::{Abandon, Accepted, Commit, Paid, PlainLock, RequestId, Response};

/// The version this code writes.
pub const PROTOCOL_VERSION: u8 = 1;
/// The oldest version this code reads.
pub const MIN_PROTOCOL_VERSION: u8 = 1;

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A move in the friends' channel.
    Move(Move),
    /// "I have operations to send; please pass the token." Carries where the sender's log ends,
    /// so that a friend in another epoch (after a reset one of them missed) answers with its
    /// tip instead.
    RequestToken {
        /// The sender's epoch.
        epoch: u64,
        /// The sender's last move counter.
        counter: u64,
    },
    /// A resync offer: the sender's tip (boxed: it carries a whole channel state).
    Offer(Box<Offer>),
    /// The buyer's commit, sent to the seller.
    Commit(Commit),
    /// The buyer gives up a payment it has not committed, sent to the seller.
    Abandon(Abandon),
    /// A manual reset proposal (boxed: it carries a whole channel state).
    ResetProposal(Box<ResetProposal>),
    /// The friend accepted our reset proposal: the certificate signed by both.
    ResetAccept(Box<ResetCertificate>),
    /// The seller accepted the buyer's commit, sent to the buyer: the seller's secret, so the
    /// buyer has its receipt without waiting for the collects.
    Paid(Paid),
    /// The buyer's commit sent with its requests, before the seller answered any of them: the
    /// seller holds it until the routes it names have arrived (`docs/protocol.md` §4), and then
    /// answers with [`Message::Accepted`]. A seller that does not know this message refuses it,
    /// and the buyer falls back to a [`Message::Commit`] once the answers came hop by hop.
    EarlyCommit(Commit),
    /// The seller accepted an early commit, sent to the buyer: its secret and its signed answer
    /// to each route it collects, which the buyer has not seen (they travel with the collects).
    Accepted(Accepted),
}

/// A resync offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The sender's tip.
    pub tip: Tip,
    /// How requests that the receiver still holds as pending ended on the sender's side.
    pub resolutions: Vec<Resolution>,
    /// Whether the receiver should answer with its own tip even when the logs agree (a
    /// restored node asks this to confirm each channel).
    pub reply_wanted: bool,
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The request.
    pub request_id: RequestId,
    /// How it ended.
    pub outcome: Outcome,
}

/// How a request ended, as the friend downstream of it saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Collected with these secrets, after this response.
    Collected {
        /// The buyer's secret.
        src_plain_lock: PlainLock,
        /// The seller's secret.
        dest_plain_lock: PlainLock,
        /// The seller's response.
        response: Response,
    },
    /// Cancelled.
    Cancelled,
}

/// Why bytes could not be read as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_MESSAGE_SIZE`].
    #[error("message of {0} bytes is over the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// A version this code does not read.
    #[error(
        "message version {got} is not supported: this node reads versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; update the app if {got} is newer"
    )]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
    },
    /// Not a valid encoding.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Why a message could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoding would exceed [`MAX_MESSAGE_SIZE`].
    #[error("message would take {0} bytes, over the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    /// The serializer failed.
    #[error("could not encode message: {0}")]
    Serialize(String),
}

impl Message {
    /// The wire form.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let out = crate::protocol::identity::encode_after(&[&[PROTOCOL_VERSION]], self)
            .map_err(|e| EncodeError::Serialize(e.to_string()))?;
        if out.len() > MAX_MESSAGE_SIZE {
            return Err(EncodeError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Read the wire form, refusing oversized input before parsing it.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            return Err(DecodeError::UnsupportedVersion { got: version });
        }
        let (message, rest) = super::identity::decode_prefix::<Message>(body)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} unexpected bytes after the message",
                rest.len()
            )));
        }
        Ok(message)
    }
}
