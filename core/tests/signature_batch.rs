//! A batch of signatures accepts exactly what checking each alone accepts (`SignatureBatch`),
//! also for signatures crafted by their own signer with a small-order component, which is where
//! the cofactorless rule and a batch can disagree. If they disagreed, two honest friends could
//! judge the same move differently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use offst_core::protocol::identity::{
    Identity, NodeId, Signature, SignatureBatch, canonical_bytes,
};
use proptest::prelude::*;
use sha2::{Digest, Sha512};

const DOMAIN: &str = "offst batch test";

/// How one signature of a batch is made.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Signed as everyone signs.
    Honest,
    /// Signed, then one bit of it flipped.
    Flipped(usize),
    /// Over another message than the one checked.
    OtherMessage,
    /// Made by the signer itself with a small-order point in its nonce: valid under the
    /// cofactored rule (ZIP 215), which Offst uses everywhere.
    Torsion(usize),
    /// As `Torsion`, but the hash computed over the honest nonce, so it is invalid.
    TorsionWrongHash(usize),
    /// Checked under a key of small order.
    SmallOrderKey,
}

fn secret_scalar(seed: [u8; 32]) -> (Scalar, [u8; 32]) {
    let h = Sha512::digest(seed);
    let mut low = [0u8; 32];
    low.copy_from_slice(&h[..32]);
    let mut prefix = [0u8; 32];
    prefix.copy_from_slice(&h[32..]);
    (Scalar::from_bytes_mod_order(clamp_integer(low)), prefix)
}

fn k(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(msg);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// A signature whose nonce point is `rB + T` for a torsion point `T`.
fn torsion_signature(seed: [u8; 32], msg: &[u8], torsion: usize, right_hash: bool) -> Signature {
    let (a, prefix) = secret_scalar(seed);
    let public = (ED25519_BASEPOINT_POINT * a).compress().to_bytes();
    let r = k(&prefix, &[0; 32], msg);
    let honest_r = (ED25519_BASEPOINT_POINT * r).compress().to_bytes();
    let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[torsion % 8])
        .compress()
        .to_bytes();
    let hashed_r = if right_hash { &big_r } else { &honest_r };
    let s = r + k(hashed_r, &public, msg) * a;
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&big_r);
    out[32..].copy_from_slice(s.as_bytes());
    Signature(out)
}

fn make(i: usize, kind: Kind) -> (NodeId, u64, Signature) {
    // Two signers, as in a move (its buyers' requests, its sellers' responses).
    let seed = [1 + (i % 2) as u8; 32];
    let id = Identity::from_seed(seed).id();
    let value = i as u64;
    let msg = canonical_bytes(DOMAIN, &value);
    match kind {
        Kind::Honest => (id, value, Identity::from_seed(seed).sign(DOMAIN, &value)),
        Kind::Flipped(bit) => {
            let mut sig = Identity::from_seed(seed).sign(DOMAIN, &value);
            sig.0[bit % 64] ^= 1 << (bit % 8);
            (id, value, sig)
        }
        Kind::OtherMessage => (
            id,
            value,
            Identity::from_seed(seed).sign(DOMAIN, &(value + 1000)),
        ),
        Kind::Torsion(t) => (id, value, torsion_signature(seed, &msg, t, true)),
        Kind::TorsionWrongHash(t) => (id, value, torsion_signature(seed, &msg, t, false)),
        Kind::SmallOrderKey => {
            let weak = NodeId::from_bytes(EIGHT_TORSION[1].compress().to_bytes());
            (weak, value, Identity::from_seed(seed).sign(DOMAIN, &value))
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => Just(Kind::Honest),
        1 => (0usize..512).prop_map(Kind::Flipped),
        1 => Just(Kind::OtherMessage),
        2 => (0usize..8).prop_map(Kind::Torsion),
        1 => (1usize..8).prop_map(Kind::TorsionWrongHash),
        1 => Just(Kind::SmallOrderKey),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The batch's verdict is the verdict of checking every signature alone.
    #[test]
    fn a_batch_agrees_with_checking_each_alone(kinds in prop::collection::vec(kind(), 1..12)) {
        let items: Vec<_> = kinds.iter().enumerate().map(|(i, k)| make(i, *k)).collect();
        let alone = items.iter().all(|(id, v, sig)| id.verify(DOMAIN, v, sig).is_ok());
        let mut batch = SignatureBatch::new();
        for (id, v, sig) in &items {
            batch.queue(id, DOMAIN, v, sig);
        }
        prop_assert_eq!(batch.verify(), alone);
    }
}

#[test]
fn each_kind_alone_is_judged_as_documented() {
    let valid = |kind| {
        let (id, v, sig) = make(0, kind);
        let alone = id.verify(DOMAIN, &v, &sig).is_ok();
        let mut batch = SignatureBatch::new();
        batch.queue(&id, DOMAIN, &v, &sig);
        assert_eq!(batch.verify(), alone, "{kind:?}");
        alone
    };
    assert!(valid(Kind::Honest));
    assert!(!valid(Kind::Flipped(3)));
    assert!(!valid(Kind::Flipped(300)));
    assert!(!valid(Kind::OtherMessage));
    for t in 0..8 {
        assert!(valid(Kind::Torsion(t)), "torsion {t}");
    }
    for t in 1..8 {
        assert!(!valid(Kind::TorsionWrongHash(t)), "torsion {t}");
    }
    assert!(!valid(Kind::SmallOrderKey));
}

#[test]
fn an_empty_batch_holds_and_a_non_canonical_key_is_refused() {
    assert!(SignatureBatch::new().verify());
    // The identity point written with its sign bit set is not a canonical encoding.
    let mut bytes = CompressedEdwardsY::default().to_bytes();
    bytes[0] = 1;
    bytes[31] |= 0x80;
    let (_, v, sig) = make(0, Kind::Honest);
    let id = NodeId::from_bytes(bytes);
    assert!(id.verify(DOMAIN, &v, &sig).is_err());
    let mut batch = SignatureBatch::new();
    batch.queue(&id, DOMAIN, &v, &sig);
    assert!(!batch.verify());
}
