//! Capacity reports: what a wallet tells the index about the credit it can pass on.
//!
//! A wallet signs, per friend and currency, how much it can send to that friend and receive
//! from it, and the rate it charges as a mediator. The index trusts a report only for its
//! signer's own side of each channel: the capacity of a hop from A to B is the smaller of what
//! A says it can send to B and what B says it can receive from A, where both reported.

use serde::{Deserialize, Serialize};

use crate::protocol::amount::{Currency, Rate};
use crate::protocol::identity::{BadSignature, Identity, NodeId, Signature};
use crate::protocol::node::Node;

/// Most entries (friend × currency) in one report.
pub const MAX_REPORT_ENTRIES: usize = 4096;
/// How long a report counts, at most, after it was issued.
pub const MAX_REPORT_TTL_MS: u64 = 24 * 3600 * 1000;

/// One channel and currency, seen from the reporting wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    /// The friend.
    pub friend: NodeId,
    /// The currency.
    pub currency: Currency,
    /// How much the reporter can send to `friend` now.
    pub send: u64,
    /// How much the reporter can receive from `friend` now.
    pub recv: u64,
}

/// What a wallet reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReport {
    /// The reporting wallet.
    pub node: NodeId,
    /// When it was made (the reporter's clock); a later report replaces an earlier one.
    pub issued_ms: u64,
    /// Until when it counts; at most [`MAX_REPORT_TTL_MS`] after `issued_ms`.
    pub expires_ms: u64,
    /// The reporter's rate as a mediator.
    pub rate: Rate,
    /// Its channels.
    pub entries: Vec<ReportEntry>,
}

/// A report and its signer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The report.
    pub report: CapacityReport,
    /// `report.node`'s signature over it.
    pub signature: Signature,
}

const DOMAIN: &str = "offst capacity report v1";

/// Why a report was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The signature is not the reporter's.
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
    /// Too many entries.
    #[error("a report has at most {max} entries, this one has {got}")]
    TooManyEntries {
        /// Its entries.
        got: usize,
        /// The bound.
        max: usize,
    },
    /// Expired already, or valid for longer than allowed.
    #[error(
        "report valid from {issued_ms} to {expires_ms} ms, which is not a window open now ({now_ms}) and at most a day long"
    )]
    BadWindow {
        /// Issued.
        issued_ms: u64,
        /// Expires.
        expires_ms: u64,
        /// The index's clock.
        now_ms: u64,
    },
    /// A wallet reporting itself as its own friend.
    #[error("a report names its own node as a friend")]
    SelfLoop,
    /// Not newer than the report the index holds.
    #[error("an older or equal report ({issued_ms}) than the one held ({held_ms})")]
    Stale {
        /// This report's time.
        issued_ms: u64,
        /// The held report's time.
        held_ms: u64,
    },
}

/// How much a wallet tells the index about its channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Privacy {
    /// Exact capacities.
    #[default]
    Exact,
    /// Each capacity rounded down to a power of two: the index learns the order of magnitude,
    /// and routes it offers may be refused a little less often than they could be taken.
    Buckets,
    /// No reports: the wallet is not offered as a mediator, and payers reach it only through
    /// friends that report (their side of the channel).
    Off,
}

impl Privacy {
    /// `value` as this setting reports it.
    pub fn round(self, value: u64) -> u64 {
        match self {
            Privacy::Exact => value,
            Privacy::Buckets if value == 0 => 0,
            Privacy::Buckets => 1u64 << (63 - value.leading_zeros()),
            Privacy::Off => 0,
        }
    }
}

impl CapacityReport {
    /// What `node` reports at `issued_ms` for `ttl_ms` under `privacy`: every channel and
    /// currency, what it can send and receive now (`None` when `privacy` is `Off`).
    pub fn of_node(
        node: &Node,
        issued_ms: u64,
        ttl_ms: u64,
        privacy: Privacy,
    ) -> Option<CapacityReport> {
        if privacy == Privacy::Off {
            return None;
        }
        let mut entries = Vec::new();
        for friend in node.friends() {
            let Some(ch) = node.channel(friend) else {
                continue;
            };
            let local = ch.local_side();
            for (currency, line) in &ch.state().lines {
                entries.push(ReportEntry {
                    friend: *friend,
                    currency: *currency,
                    send: privacy.round(line.can_send(local)),
                    recv: privacy.round(line.can_send(local.other())),
                });
            }
        }
        entries.truncate(MAX_REPORT_ENTRIES);
        Some(CapacityReport {
            node: node.id(),
            issued_ms,
            expires_ms: issued_ms.saturating_add(ttl_ms.clamp(1, MAX_REPORT_TTL_MS)),
            rate: node.rate(),
            entries,
        })
    }

    /// Sign as `identity` (which must be `self.node`).
    pub fn sign(self, identity: &Identity) -> SignedReport {
        let signature = identity.sign(DOMAIN, &self);
        SignedReport {
            report: self,
            signature,
        }
    }
}

impl SignedReport {
    /// Check the signature, the size, the window against `now_ms`, and that the reporter does
    /// not name itself.
    pub fn verify(&self, now_ms: u64) -> Result<(), ReportError> {
        let r = &self.report;
        if r.entries.len() > MAX_REPORT_ENTRIES {
            return Err(ReportError::TooManyEntries {
                got: r.entries.len(),
                max: MAX_REPORT_ENTRIES,
            });
        }
        if r.expires_ms <= now_ms
            || r.expires_ms <= r.issued_ms
            || r.expires_ms - r.issued_ms > MAX_REPORT_TTL_MS
        {
            return Err(ReportError::BadWindow {
                issued_ms: r.issued_ms,
                expires_ms: r.expires_ms,
                now_ms,
            });
        }
        if r.entries.iter().any(|e| e.friend == r.node) {
            return Err(ReportError::SelfLoop);
        }
        r.node.verify(DOMAIN, r, &self.signature)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn report(id: &Identity) -> CapacityReport {
        CapacityReport {
            node: id.id(),
            issued_ms: 1_000,
            expires_ms: 61_000,
            rate: Rate { base: 1, ppm: 100 },
            entries: vec![ReportEntry {
                friend: Identity::from_seed([2; 32]).id(),
                currency: Currency::new("EUR").unwrap(),
                send: 10,
                recv: 20,
            }],
        }
    }

    #[test]
    fn a_report_verifies_only_as_signed_and_in_its_window() {
        let id = Identity::from_seed([1; 32]);
        let signed = report(&id).sign(&id);
        signed.verify(2_000).unwrap();
        assert!(matches!(
            signed.verify(61_000),
            Err(ReportError::BadWindow { .. })
        ));
        let mut forged = signed.clone();
        forged.report.entries[0].send = 1_000_000;
        assert!(matches!(
            forged.verify(2_000),
            Err(ReportError::BadSignature(_))
        ));
        let other = Identity::from_seed([3; 32]);
        let mut stolen = report(&id).sign(&other);
        assert!(stolen.verify(2_000).is_err());
        stolen.report.node = other.id();
        assert!(stolen.verify(2_000).is_err());
        let mut long = report(&id);
        long.expires_ms = long.issued_ms + MAX_REPORT_TTL_MS + 1;
        assert!(matches!(
            long.sign(&id).verify(2_000),
            Err(ReportError::BadWindow { .. })
        ));
        let mut own = report(&id);
        own.entries[0].friend = id.id();
        assert_eq!(own.sign(&id).verify(2_000), Err(ReportError::SelfLoop));
    }

    #[test]
    fn buckets_round_down_to_a_power_of_two() {
        let b = Privacy::Buckets;
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 1000, u64::MAX].map(|v| b.round(v)),
            [0, 1, 2, 2, 4, 4, 512, 1 << 63]
        );
        assert_eq!(Privacy::Exact.round(1000), 1000);
        assert_eq!(Privacy::Off.round(1000), 0);
    }
}
