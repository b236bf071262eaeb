//! End-to-end envelopes: only the recipient opens them, the sender is proven, sizes reveal only
//! a bucket, and copies and stale envelopes are refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use offst_core::net::envelope::{
    EnvelopeError, MAX_BODY, MAX_PADDED, MailKey, REPLAY_WINDOW_MS, ReplayGuard, bucket, open,
    open_all, seal, seal_forged,
};
use offst_core::net::wire::MAX_ENVELOPE_SIZE;
use offst_core::protocol::identity::Identity;

fn who(seed: u8) -> Identity {
    Identity::from_seed([seed; 32])
}

fn entropy(n: u8) -> [u8; 56] {
    [n; 56]
}

const NOW: u64 = 1_800_000_000_000;

#[test]
fn the_recipient_opens_and_learns_the_proven_sender() {
    let (a, b) = (who(1), who(2));
    let env = seal(&a, &MailKey::of(&b), b"hello", NOW, [7; 16], entropy(3)).unwrap();
    let opened = open(&b, &env).unwrap();
    assert_eq!(opened.sender, a.id());
    assert_eq!(opened.body, b"hello");
    assert_eq!(opened.id, [7; 16]);
    assert_eq!(opened.sent_ms, NOW);
    // Nothing readable on the wire.
    assert!(!env.windows(5).any(|w| w == b"hello"));
    assert!(!env.windows(32).any(|w| w == a.id().as_bytes()));
}

#[test]
fn sizes_reveal_only_their_bucket() {
    let (a, b) = (who(1), who(2));
    let size = |n: usize| {
        seal(&a, &MailKey::of(&b), &vec![1; n], NOW, [0; 16], entropy(1))
            .unwrap()
            .len()
    };
    assert_eq!(size(1), size(300));
    assert_ne!(size(300), size(3000));
    assert_eq!(size(3000), size(3500));
    assert_ne!(size(3500), size(5000));
    assert_eq!(bucket(1), 512);
    assert_eq!(bucket(512), 512);
    assert_eq!(bucket(513), 1024);
    // Each bucket twice the one before, so padding never doubles a plaintext's size...
    let mut k = 512;
    while k < MAX_BODY {
        assert_eq!(bucket(k), k);
        assert_eq!(bucket(k + 1), 2 * k);
        k *= 2;
    }
    // ...up to the last, which is what the wire carries: a body of the largest size makes an
    // envelope a relay takes (it made one of 2 MiB until 2026-12-07).
    assert_eq!(bucket(MAX_BODY + 1), MAX_PADDED);
    assert_eq!(size(MAX_BODY), MAX_ENVELOPE_SIZE);
    assert!(matches!(
        seal(
            &a,
            &MailKey::of(&b),
            &vec![1; MAX_BODY + 1],
            NOW,
            [0; 16],
            entropy(1)
        ),
        Err(EnvelopeError::TooLarge(_))
    ));
}

#[test]
fn someone_else_cannot_open_it_and_tampering_is_caught() {
    let (a, b, c) = (who(1), who(2), who(3));
    let env = seal(&a, &MailKey::of(&b), b"for b", NOW, [1; 16], entropy(1)).unwrap();
    assert_eq!(open(&c, &env).unwrap_err(), EnvelopeError::DoesNotOpen);
    for i in [0usize, 1, 40, 60, env.len() - 1] {
        let mut bad = env.clone();
        bad[i] ^= 1;
        let err = open(&b, &bad).unwrap_err();
        assert!(
            matches!(
                err,
                EnvelopeError::DoesNotOpen | EnvelopeError::UnknownVersion(_)
            ),
            "byte {i}: {err}"
        );
    }
    assert_eq!(open(&b, &env[..30]).unwrap_err(), EnvelopeError::Truncated);
    assert_eq!(open(&b, &[]).unwrap_err(), EnvelopeError::Truncated);
}

#[test]
fn a_forged_sender_or_a_readdressed_envelope_is_refused() {
    let (a, b, c, mallory) = (who(1), who(2), who(3), who(66));
    // Mallory claims to be a.
    let env = seal_forged(
        &mallory,
        a.id(),
        b.id(),
        MailKey::of(&b).key,
        b"pay me",
        NOW,
        [2; 16],
        entropy(2),
    )
    .unwrap();
    assert_eq!(
        open(&b, &env).unwrap_err(),
        EnvelopeError::BadSignature(a.id())
    );
    // An envelope for c, re-sealed to b's key by someone who read it, still names c.
    let env = seal_forged(
        &a,
        a.id(),
        c.id(),
        MailKey::of(&b).key,
        b"x",
        NOW,
        [3; 16],
        entropy(3),
    )
    .unwrap();
    assert_eq!(open(&b, &env).unwrap_err(), EnvelopeError::NotForUs(c.id()));
}

#[test]
fn a_mail_key_must_be_signed_by_its_owner() {
    let (a, b) = (who(1), who(2));
    let mut key = MailKey::of(&b);
    key.key = MailKey::of(&a).key; // b's name on a's key: a would read b's mail
    assert_eq!(key.verify().unwrap_err(), EnvelopeError::BadMailKey(b.id()));
    assert!(seal(&a, &key, b"x", NOW, [0; 16], entropy(0)).is_err());
    MailKey::of(&b).verify().unwrap();
}

#[test]
fn copies_and_stale_envelopes_are_refused() {
    let (a, b) = (who(1), who(2));
    let mut guard = ReplayGuard::new(REPLAY_WINDOW_MS);
    let env = seal(&a, &MailKey::of(&b), b"once", NOW, [9; 16], entropy(9)).unwrap();
    let opened = open(&b, &env).unwrap();
    guard.check(&opened, NOW + 10).unwrap();
    assert!(matches!(
        guard.check(&opened, NOW + 20),
        Err(EnvelopeError::Replay(..))
    ));
    // The same body in a new envelope is a new envelope (the protocol drops repeated content).
    let again = open(
        &b,
        &seal(&a, &MailKey::of(&b), b"once", NOW, [10; 16], entropy(10)).unwrap(),
    )
    .unwrap();
    guard.check(&again, NOW + 30).unwrap();
    // Older than the window.
    let old = open(
        &b,
        &seal(
            &a,
            &MailKey::of(&b),
            b"old",
            NOW - REPLAY_WINDOW_MS - 1,
            [11; 16],
            entropy(11),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        guard.check(&old, NOW),
        Err(EnvelopeError::TooOld { .. })
    ));
    // Once the window has passed, remembered ids are forgotten (they would be too old anyway).
    let later = open(
        &b,
        &seal(
            &a,
            &MailKey::of(&b),
            b"later",
            NOW + REPLAY_WINDOW_MS + 100,
            [12; 16],
            entropy(12),
        )
        .unwrap(),
    )
    .unwrap();
    guard.check(&later, NOW + REPLAY_WINDOW_MS + 100).unwrap();
    assert_eq!(guard.len(), 1);
    assert!(matches!(
        guard.check(&opened, NOW + REPLAY_WINDOW_MS + 100),
        Err(EnvelopeError::TooOld { .. })
    ));
}

/// A sender keeps one ephemeral key per recipient for a while (the envelope's bytes 1..33):
/// envelopes to the same friend share it, each under its own nonce, and all open; another
/// recipient gets another key; after `EPHEMERAL_USES` envelopes the sender makes a new one.
/// An envelope whose ephemeral key is swapped for the other one in use does not open.
#[test]
fn a_sender_reuses_an_ephemeral_key_for_a_while_and_each_envelope_still_stands_alone() {
    use offst_core::net::envelope::EPHEMERAL_USES;
    let (a, b, c) = (who(41), who(42), who(43));
    let eph = |env: &[u8]| env[1..33].to_vec();
    let first = seal(&a, &MailKey::of(&b), b"one", NOW, [1; 16], entropy(41)).unwrap();
    let second = seal(&a, &MailKey::of(&b), b"two", NOW, [2; 16], entropy(42)).unwrap();
    let to_c = seal(&a, &MailKey::of(&c), b"three", NOW, [3; 16], entropy(43)).unwrap();
    assert_eq!(eph(&first), eph(&second));
    assert_ne!(
        first[33..57],
        second[33..57],
        "each envelope has its own nonce"
    );
    assert_ne!(eph(&first), eph(&to_c));
    assert_eq!(open(&b, &first).unwrap().body, b"one");
    assert_eq!(open(&b, &second).unwrap().body, b"two");
    assert_eq!(open(&c, &to_c).unwrap().body, b"three");

    // The ephemeral key of another envelope to someone else: the key agreed differs.
    let mut swapped = first.clone();
    swapped[1..33].copy_from_slice(&to_c[1..33]);
    assert_eq!(open(&b, &swapped).unwrap_err(), EnvelopeError::DoesNotOpen);

    // Used up: a new ephemeral key, and envelopes under the old and the new one open.
    let mut last = second;
    for i in 0..EPHEMERAL_USES {
        let mut e = entropy(44);
        e[32..40].copy_from_slice(&u64::from(i).to_be_bytes());
        last = seal(&a, &MailKey::of(&b), b"more", NOW, [4; 16], e).unwrap();
        if eph(&last) != eph(&first) {
            break;
        }
    }
    assert_ne!(
        eph(&last),
        eph(&first),
        "a new key after {EPHEMERAL_USES} envelopes"
    );
    assert_eq!(open(&b, &last).unwrap().body, b"more");
    assert_eq!(open(&b, &first).unwrap().body, b"one");
}

/// A group of envelopes opened together (one batch of signature checks) gets, envelope by
/// envelope, the verdict each would get alone: one forged envelope in the group fails alone
/// and the others still open.
#[test]
fn envelopes_opened_together_get_the_verdicts_they_get_alone() {
    let (a, b, c, mallory) = (who(1), who(2), who(3), who(66));
    let good = |n: u8, from: &Identity| {
        seal(from, &MailKey::of(&b), &[n; 40], NOW, [n; 16], entropy(n)).unwrap()
    };
    let forged = seal_forged(
        &mallory,
        a.id(),
        b.id(),
        MailKey::of(&b).key,
        b"pay me",
        NOW,
        [90; 16],
        entropy(90),
    )
    .unwrap();
    let for_c = seal_forged(
        &a,
        a.id(),
        c.id(),
        MailKey::of(&b).key,
        b"x",
        NOW,
        [91; 16],
        entropy(91),
    )
    .unwrap();
    let mut tampered = good(7, &c);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let groups: Vec<Vec<Vec<u8>>> = vec![
        vec![good(1, &a), good(2, &c), good(3, &a)],
        vec![good(1, &a), forged.clone(), good(3, &c)],
        vec![
            forged.clone(),
            for_c.clone(),
            tampered.clone(),
            vec![1, 2, 3],
        ],
        vec![
            good(4, &a),
            tampered,
            good(5, &a),
            for_c,
            good(6, &c),
            forged,
        ],
        vec![],
    ];
    for group in groups {
        let together = open_all(&b, &group);
        let alone: Vec<_> = group.iter().map(|e| open(&b, e)).collect();
        assert_eq!(together, alone);
    }
}
