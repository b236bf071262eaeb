//! Counts of the cryptographic operations the process has done, for the load generator's
//! crypto floor (`offst-bench`): what sign, verify, hash and envelope encryption cost per
//! payment. Relaxed atomic increments: about a nanosecond each, always on.

use std::sync::atomic::{AtomicU64, Ordering};

static SIGNS: AtomicU64 = AtomicU64::new(0);
static VERIFIES: AtomicU64 = AtomicU64::new(0);
static HASHES: AtomicU64 = AtomicU64::new(0);
static SEALS: AtomicU64 = AtomicU64::new(0);
static OPENS: AtomicU64 = AtomicU64::new(0);

/// Operations done so far by this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CryptoCounts {
    /// Ed25519 signatures made.
    pub signs: u64,
    /// Ed25519 signatures checked.
    pub verifies: u64,
    /// BLAKE3 hashes of protocol values.
    pub hashes: u64,
    /// Envelopes sealed (X25519 agreement + XChaCha20-Poly1305; the signature inside is
    /// counted in `signs`).
    pub seals: u64,
    /// Envelopes opened (likewise; the signature check is in `verifies`).
    pub opens: u64,
}

impl CryptoCounts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &CryptoCounts) -> CryptoCounts {
        CryptoCounts {
            signs: self.signs.saturating_sub(earlier.signs),
            verifies: self.verifies.saturating_sub(earlier.verifies),
            hashes: self.hashes.saturating_sub(earlier.hashes),
            seals: self.seals.saturating_sub(earlier.seals),
            opens: self.opens.saturating_sub(earlier.opens),
        }
    }
}

/// The counts now.
pub fn crypto_counts() -> CryptoCounts {
    CryptoCounts {
        signs: SIGNS.load(Ordering::Relaxed),
        verifies: VERIFIES.load(Ordering::Relaxed),
        hashes: HASHES.load(Ordering::Relaxed),
        seals: SEALS.load(Ordering::Relaxed),
        opens: OPENS.load(Ordering::Relaxed),
    }
}

pub(crate) fn signed() {
    SIGNS.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn verified() {
    VERIFIES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn hashed() {
    HASHES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn sealed() {
    SEALS.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn opened() {
    OPENS.fetch_add(1, Ordering::Relaxed);
}
