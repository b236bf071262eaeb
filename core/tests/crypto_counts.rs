//! The crypto counts behind the load generator's floor (`offst_core::metrics`): each
//! operation is counted once, with the bytes it works over, so that a floor priced per
//! operation and per byte prices what was done. The counts are for the whole process, so this
//! file holds one test: no other test of this binary runs beside it.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use offst_core::metrics::{CryptoCounts, crypto_counts};
use offst_core::net::envelope::{self, MIN_BUCKET, MailKey};
use offst_core::protocol::amount::Rate;
use offst_core::protocol::identity::{Hash, Identity, SignatureBatch, canonical_bytes};
use serde_bytes::Bytes;

/// What `f` counted.
fn counted(f: impl FnOnce()) -> CryptoCounts {
    let before = crypto_counts();
    f();
    crypto_counts().since(&before)
}

#[test]
fn each_operation_counts_once_with_its_bytes() {
    let alice = Identity::from_seed([1; 32]);
    let bob = Identity::from_seed([2; 32]);
    let long = vec![7u8; 5000];
    let value = Bytes::new(&long);
    let signed_len = canonical_bytes("test", &value).len() as u64;
    assert!(signed_len > 5000);

    // A signature and a check, each over the message as Ed25519 hashes it.
    let mut sig = None;
    let c = counted(|| sig = Some(alice.sign("test", &value)));
    assert_eq!((c.signs, c.signed_bytes), (1, signed_len));
    let sig = sig.unwrap();
    let c = counted(|| assert!(alice.id().verify("test", &value, &sig).is_ok()));
    assert_eq!((c.verifies, c.verified_bytes), (1, signed_len));
    assert_eq!((c.signs, c.batches), (0, 0));

    // A batch counts its signatures and their messages, not as single checks.
    let short = Bytes::new(b"short");
    let short_sig = bob.sign("test", &short);
    let short_len = canonical_bytes("test", &short).len() as u64;
    let c = counted(|| {
        let mut b = SignatureBatch::new();
        b.queue(&alice.id(), "test", &value, &sig);
        b.queue(&bob.id(), "test", &short, &short_sig);
        assert!(b.verify());
    });
    assert_eq!(
        (c.batches, c.batched, c.batched_bytes, c.verifies),
        (1, 2, signed_len + short_len, 0)
    );
    // A batch found empty was no work.
    assert_eq!(
        counted(|| assert!(SignatureBatch::new().verify())).batches,
        0
    );

    // A hash of a value counts the bytes of its encoding.
    let encoded = postcard::to_allocvec(&value).unwrap().len() as u64;
    let c = counted(|| {
        Hash::of("test", &value);
    });
    assert_eq!((c.hashes, c.hashed_bytes), (1, encoded));
    let c = counted(|| {
        Hash::of_bytes("test", &long);
    });
    assert_eq!((c.hashes, c.hashed_bytes), (1, 5000));

    // An envelope: its padded plaintext is encrypted, its body hashed once for the
    // signature, and the signature made over that hash (a short message), not the body.
    let to = MailKey::of(&bob);
    let seal = || envelope::seal(&alice, &to, &long, 1, [3; 16], [4; 56]).unwrap();
    let _warm = seal(); // the mail key's check and the ephemeral key, done once
    let mut sealed = Vec::new();
    let c = counted(|| sealed = seal());
    assert_eq!((c.seals, c.signs, c.hashes), (1, 1, 1));
    assert_eq!(c.hashed_bytes, 5000);
    assert!(c.signed_bytes < 200, "the envelope signs its body's hash");
    assert!(c.sealed_bytes >= 5000 && c.sealed_bytes % MIN_BUCKET as u64 == 0);
    // What is sent is the padded plaintext, its tag and a 57-byte header.
    assert_eq!(sealed.len() as u64, c.sealed_bytes + 16 + 57);
    let c = counted(|| {
        assert_eq!(envelope::open(&bob, &sealed).unwrap().body, long);
    });
    assert_eq!(c.opens, 1);
    assert_eq!(c.opened_bytes, sealed.len() as u64 - 57);
    assert_eq!((c.verifies, c.hashes, c.hashed_bytes), (1, 1, 5000));

    // A step's changed rows (payments, invoices, remembered outcomes) are told from the
    // stored ones by a BLAKE3 digest of their bytes: one hash each, over those bytes.
    let (mut net, ids) = common::chain(3, 100, Rate::default());
    net.buy_along(&ids, &common::hours(), 5, 1).unwrap();
    for id in [ids[0], ids[2]] {
        let node = net.node_mut(&id).unwrap();
        let mut changes = None;
        let c = counted(|| changes = Some(node.take_changes()));
        let changes = changes.unwrap();
        let rows: Vec<u64> = [&changes.payments, &changes.invoices, &changes.outcomes]
            .into_iter()
            .flatten()
            .filter_map(|(_, bytes)| bytes.as_ref().map(|b| b.len() as u64))
            .collect();
        assert!(!rows.is_empty(), "the payment changed no row");
        assert!(c.hashes >= rows.len() as u64, "{} hashes", c.hashes);
        assert!(
            c.hashed_bytes >= rows.iter().sum(),
            "{} bytes",
            c.hashed_bytes
        );
    }
}
