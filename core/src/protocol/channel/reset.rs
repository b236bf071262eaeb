//! Manual reset: the last resort when two friends' logs can no longer be verified.
//!
//! One friend proposes a state (its own view); the other's user sees exactly how it differs from
//! theirs and accepts or not. An accepted proposal, signed by both, is a [`ResetCertificate`]:
//! the genesis of a new *epoch* of the channel. Nothing moves without both signatures.

use serde::{Deserialize, Serialize};

use super::state::{ChannelState, Parties};
use crate::protocol::identity::{Hash, Identity, NodeId, Signature};

const RESET_DOMAIN: &str = "offst reset v1";

/// What a reset proposes: the state the channel restarts from, in a new epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetTerms {
    /// The channel.
    pub channel: Hash,
    /// The new epoch (the current one plus one).
    pub epoch: u64,
    /// The state the new epoch starts from.
    pub state: ChannelState,
}

/// A proposal, signed by the friend who makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetProposal {
    /// The terms.
    pub terms: ResetTerms,
    /// Who proposes.
    pub proposer: NodeId,
    /// The proposer's signature over the terms.
    pub signature: Signature,
}

/// An accepted reset: the terms signed by both friends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetCertificate {
    /// The terms.
    pub terms: ResetTerms,
    /// The signature of the friend with the smaller id.
    pub first_signature: Signature,
    /// The signature of the other friend.
    pub second_signature: Signature,
}

/// Why a reset message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    /// The signature is not the claimed friend's.
    #[error("the reset is not signed by {0}")]
    BadSignature(NodeId),
    /// For another channel.
    #[error("the reset is for another channel")]
    WrongChannel,
    /// Not the next epoch.
    #[error("the reset is for epoch {got}, but the next epoch of this channel is {expected}")]
    WrongEpoch {
        /// The epoch in the reset.
        got: u64,
        /// The epoch expected.
        expected: u64,
    },
    /// Accepting when nothing was proposed, or a certificate for terms we did not propose.
    #[error("no matching reset proposal is waiting")]
    NothingProposed,
}

impl ResetProposal {
    /// Sign `terms` as `proposer`.
    pub fn sign(proposer: &Identity, terms: ResetTerms) -> ResetProposal {
        ResetProposal {
            signature: proposer.sign(RESET_DOMAIN, &terms),
            proposer: proposer.id(),
            terms,
        }
    }

    /// Check the proposer's signature.
    pub fn verify(&self) -> Result<(), ResetError> {
        self.proposer
            .verify(RESET_DOMAIN, &self.terms, &self.signature)
            .map_err(|_| ResetError::BadSignature(self.proposer))
    }

    /// Accept: add our signature and return the certificate.
    pub fn accept(&self, acceptor: &Identity, parties: &Parties) -> ResetCertificate {
        let ours = acceptor.sign(RESET_DOMAIN, &self.terms);
        let (first_signature, second_signature) = if acceptor.id() == parties.first {
            (ours, self.signature)
        } else {
            (self.signature, ours)
        };
        ResetCertificate {
            terms: self.terms.clone(),
            first_signature,
            second_signature,
        }
    }
}

impl ResetCertificate {
    /// Check both signatures and the channel.
    pub fn verify(&self, channel: &Hash, parties: &Parties) -> Result<(), ResetError> {
        if &self.terms.channel != channel {
            return Err(ResetError::WrongChannel);
        }
        for (who, sig) in [
            (parties.first, &self.first_signature),
            (parties.second, &self.second_signature),
        ] {
            who.verify(RESET_DOMAIN, &self.terms, sig)
                .map_err(|_| ResetError::BadSignature(who))?;
        }
        Ok(())
    }

    /// The hash a new epoch's first move chains to (through the genesis hash).
    pub fn hash(&self) -> Hash {
        Hash::of("offst reset certificate v1", self)
    }
}
