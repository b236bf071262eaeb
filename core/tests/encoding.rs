//! Text forms, wire decoding and offline receipt checks: every bad input has its own error.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{chain, hours, identity};
use offst_core::protocol::amount::Rate;
use offst_core::protocol::channel::Move;
use offst_core::protocol::identity::{NodeId, ParseNodeIdError};
use offst_core::protocol::message::{DecodeError, Message, PROTOCOL_VERSION};
use offst_core::protocol::node::PaymentStatus;
use offst_core::protocol::payment::{PaymentError, PlainLock};
use offst_core::sim::local::LocalNet;

/// The last move of `from`'s channel with `to`.
fn last_move(net: &LocalNet, from: NodeId, to: NodeId) -> Move {
    net.node(&from)
        .unwrap()
        .channel(&to)
        .unwrap()
        .tip()
        .last
        .clone()
        .unwrap()
}

#[test]
fn node_id_text_form_round_trips_and_names_each_mistake() {
    let id = identity(5).id();
    let text = id.to_string();
    assert_eq!(text.len(), 52);
    assert!(
        text.chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
    );
    assert_eq!(text.parse::<NodeId>().unwrap(), id);
    assert_eq!(
        text.to_uppercase().parse::<NodeId>().unwrap(),
        id,
        "case does not matter"
    );
    assert_eq!(
        text[..51].parse::<NodeId>().unwrap_err(),
        ParseNodeIdError::WrongLength(51)
    );
    let mut bad = text.clone();
    bad.replace_range(3..4, "1");
    assert_eq!(
        bad.parse::<NodeId>().unwrap_err(),
        ParseNodeIdError::BadCharacter('1')
    );
    // 32 bytes that are not a curve point.
    let not_a_key = data_not_a_point();
    assert_eq!(
        not_a_key.parse::<NodeId>().unwrap_err(),
        ParseNodeIdError::NotAKey
    );
    // Messages a person can act on.
    assert!(
        ParseNodeIdError::WrongLength(51)
            .to_string()
            .contains("52 base32 characters")
    );
}

fn data_not_a_point() -> String {
    // Search a few candidates for bytes that do not decompress to a point.
    for b in 0u8..=255 {
        let mut bytes = [b; 32];
        bytes[31] = 0x7f;
        let id = NodeId::from_bytes(bytes);
        let text = id.to_string();
        if text.parse::<NodeId>() == Err(ParseNodeIdError::NotAKey) {
            return text;
        }
    }
    panic!("no invalid point found")
}

#[test]
fn wire_decoding_refuses_bad_input_with_specific_errors() {
    let m = Message::RequestToken {
        epoch: 0,
        counter: 7,
    };
    let bytes = m.encode().unwrap();
    assert_eq!(bytes[0], PROTOCOL_VERSION);
    assert_eq!(Message::decode(&bytes).unwrap(), m);
    assert_eq!(Message::decode(&[]).unwrap_err(), DecodeError::Empty);
    let mut future = bytes.clone();
    future[0] = PROTOCOL_VERSION + 1;
    assert_eq!(
        Message::decode(&future).unwrap_err(),
        DecodeError::UnsupportedVersion {
            got: PROTOCOL_VERSION + 1
        }
    );
    assert!(
        Message::decode(&future)
            .unwrap_err()
            .to_string()
            .contains("update the app")
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        Message::decode(&trailing).unwrap_err(),
        DecodeError::Malformed(_)
    ));
    assert!(matches!(
        Message::decode(&[PROTOCOL_VERSION, 200, 1]).unwrap_err(),
        DecodeError::Malformed(_)
    ));
    // Truncations of a real move never decode into something else silently.
    let (mut net, ids) = chain(2, 100, Rate::default());
    net.buy_along(&[ids[0], ids[1]], &hours(), 5, 1).unwrap();
    let mv = last_move(&net, ids[0], ids[1]);
    let full = Message::Move(mv).encode().unwrap();
    for cut in 1..full.len() {
        assert!(
            Message::decode(&full[..cut]).is_err(),
            "a move cut at {cut} bytes decoded"
        );
    }
}

#[test]
fn receipts_verify_offline_and_any_tampering_is_caught() {
    let (mut net, ids) = chain(3, 100, Rate { base: 1, ppm: 500 });
    let invoice = net.buy_along(&ids, &hours(), 20, 2).unwrap();
    let (status, receipt) = net
        .node(&ids[0])
        .unwrap()
        .payment(&invoice.terms.id)
        .unwrap();
    assert_eq!(status, PaymentStatus::Completed);
    let receipt = receipt.unwrap().clone();
    receipt.verify().unwrap();
    assert_eq!(receipt.amount(), 20);
    assert_eq!(receipt.invoice_id(), invoice.terms.id);
    let mut r = receipt.clone();
    r.dest_plain_lock = PlainLock([0; 32]);
    assert_eq!(r.verify().unwrap_err(), PaymentError::WrongLock("seller's"));
    let mut r = receipt.clone();
    r.src_plain_lock = PlainLock([0; 32]);
    assert_eq!(r.verify().unwrap_err(), PaymentError::WrongLock("buyer's"));
    let mut r = receipt.clone();
    r.terms.total_dest_payment = 2000;
    assert!(matches!(
        r.verify().unwrap_err(),
        PaymentError::BadSignature(_)
    ));
    let mut r = receipt;
    r.seller = identity(9).id();
    assert!(matches!(
        r.verify().unwrap_err(),
        PaymentError::BadSignature(_)
    ));
    // The invoice itself verifies, and tampering with it does not.
    invoice.verify().unwrap();
    let mut forged = invoice.clone();
    forged.terms.amount = 1;
    assert!(matches!(
        forged.verify().unwrap_err(),
        PaymentError::BadSignature(_)
    ));
}

/// Ids written as hex read back (the apps name payments by invoice id), and anything else is
/// refused with a sentence.
#[test]
fn ids_read_back_from_their_hex_form() {
    use offst_core::protocol::payment::InvoiceId;
    let id = InvoiceId([0xa7; 32]);
    let text = id.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<InvoiceId>(), Ok(id));
    assert_eq!(text.to_uppercase().parse::<InvoiceId>(), Ok(id));
    assert_eq!(format!(" {text}\n").parse::<InvoiceId>(), Ok(id));
    for bad in [
        "",
        "a7",
        &text[..62],
        &format!("{text}00"),
        &text.replace('a', "g"),
    ] {
        let e = bad.parse::<InvoiceId>().unwrap_err();
        assert!(e.contains("64 hex"), "{e}");
    }
}

/// Envelopes and bodies are encoded as whole byte strings (`serde_bytes`, one copy instead of a
/// call per byte). In postcard a byte string is the same bytes as the sequence of `u8` it
/// replaced, so frames of relays and wallets built before read the same both ways: this
/// compares with the old types, with lengths that need one and two bytes of length prefix.
#[test]
fn byte_strings_on_the_wire_encode_as_the_sequences_they_replaced() {
    use offst_core::net::wire::{self, FromRelay, Refusal, RelayAddress, ToRelay};
    use serde::{Deserialize, Serialize};
    #[derive(Serialize, Deserialize)]
    enum OldToRelay {
        Send {
            id: u64,
            to: NodeId,
            envelope: Vec<u8>,
        },
        Ack {
            seq: u64,
        },
        Forward {
            id: u64,
            to: NodeId,
            relay: RelayAddress,
            envelope: Vec<u8>,
        },
    }
    #[derive(Serialize, Deserialize)]
    enum OldFromRelay {
        Accepted {
            id: u64,
        },
        Refused {
            id: u64,
            reason: Refusal,
        },
        Deliver {
            seq: u64,
            received_ms: u64,
            envelope: Vec<u8>,
        },
    }
    let to = identity(3).id();
    let relay = RelayAddress {
        addr: "relay.example:4433".into(),
        key: identity(4).id(),
    };
    for len in [0usize, 1, 127, 128, 1500, 70_000] {
        let envelope: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let pairs = [
            (
                wire::encode(&ToRelay::Send {
                    id: 9,
                    to,
                    envelope: envelope.clone(),
                }),
                postcard::to_allocvec(&OldToRelay::Send {
                    id: 9,
                    to,
                    envelope: envelope.clone(),
                })
                .unwrap(),
            ),
            (
                wire::encode(&ToRelay::Forward {
                    id: 10,
                    to,
                    relay: relay.clone(),
                    envelope: envelope.clone(),
                }),
                postcard::to_allocvec(&OldToRelay::Forward {
                    id: 10,
                    to,
                    relay: relay.clone(),
                    envelope: envelope.clone(),
                })
                .unwrap(),
            ),
            (
                wire::encode(&FromRelay::Deliver {
                    seq: 11,
                    received_ms: 1_800_000_000_000,
                    envelope: envelope.clone(),
                }),
                postcard::to_allocvec(&OldFromRelay::Deliver {
                    seq: 11,
                    received_ms: 1_800_000_000_000,
                    envelope: envelope.clone(),
                })
                .unwrap(),
            ),
        ];
        for (new, old) in &pairs {
            assert_eq!(new, old, "a frame with {len} envelope bytes changed");
        }
        // And the old bytes decode into the new types.
        assert!(matches!(
            wire::decode::<ToRelay>(&pairs[0].1).unwrap(),
            ToRelay::Send { envelope: e, .. } if e == envelope
        ));
        assert!(matches!(
            wire::decode::<FromRelay>(&pairs[2].1).unwrap(),
            FromRelay::Deliver { envelope: e, .. } if e == envelope
        ));
    }
    // The old types never needed the variants in between; make sure the indices match anyway.
    let _ = OldToRelay::Ack { seq: 0 };
    let _ = OldFromRelay::Accepted { id: 0 };
    let _ = OldFromRelay::Refused {
        id: 0,
        reason: Refusal::IndexOff,
    };
}

/// What is signed and hashed is built without growing a `Vec` from empty (`encode_after`
/// sizes first; `Hash::of` streams into the hasher through a 256-byte buffer). Both must give
/// exactly the bytes, and so the hashes, of postcard's own encoding, or every signature and
/// stored state hash of an older wallet would stop matching: this compares them for values
/// around and well past the buffer's size, and for a whole protocol message.
mod encodings_built_in_place {
    use offst_core::protocol::identity::{
        Hash, NodeId, Signature, canonical_bytes, decode, encode_after,
    };
    use offst_core::protocol::payment::{InvoiceId, RequestId};
    use proptest::prelude::*;

    type Value = (
        Vec<u8>,
        Vec<u64>,
        String,
        [u8; 32],
        Vec<(Hash, NodeId, InvoiceId, RequestId)>,
        Signature,
    );

    fn plain_hash(domain: &'static str, bytes: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(domain);
        h.update(bytes);
        *h.finalize().as_bytes()
    }

    proptest! {
        #[test]
        fn match_postcard_to_the_byte(
            bytes in proptest::collection::vec(any::<u8>(), 0..1200),
            words in proptest::collection::vec(any::<u64>(), 0..90),
            text in ".{0,300}",
            prefix in proptest::collection::vec(any::<u8>(), 0..5),
            ids in proptest::collection::vec(any::<[u8; 32]>(), 0..40),
            halves in any::<([u8; 32], [u8; 32])>(),
        ) {
            // Ids, hashes and signatures go eight bytes at a time inside our encodings
            // (`serialize_fixed`); postcard called directly writes them a byte at a time.
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&halves.0);
            signature[32..].copy_from_slice(&halves.1);
            let ids: Vec<_> = ids
                .into_iter()
                .map(|b| (Hash(b), NodeId::from_bytes(b), InvoiceId(b), RequestId(b)))
                .collect();
            let value = (bytes, words, text, [7u8; 32], ids, Signature(signature));
            let plain = postcard::to_allocvec(&value).unwrap();
            // Read back eight bytes at a time too (`decode`), and as postcard reads them.
            prop_assert_eq!(&decode::<Value>(&plain).unwrap(), &value);
            prop_assert_eq!(&postcard::from_bytes::<Value>(&plain).unwrap(), &value);
            // A truncated encoding is an error, never a value.
            for cut in [1, 8, 31, 33] {
                if let Some(short) = plain.len().checked_sub(cut) {
                    prop_assert!(decode::<Value>(&plain[..short]).is_err());
                }
            }
            let built = encode_after(&[&prefix], &value).unwrap();
            prop_assert_eq!(&built[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&built[prefix.len()..], &plain[..]);
            prop_assert_eq!(built.capacity(), built.len(), "sized exactly, no second allocation");
            prop_assert_eq!(Hash::of("offst test domain", &value).0, plain_hash("offst test domain", &plain));
            let canonical = canonical_bytes("domain", &value);
            prop_assert_eq!(&canonical[..7], b"domain\0");
            prop_assert_eq!(&canonical[7..], &plain[..]);
        }
    }

    /// Outside our own encodings an id is the tuple of its bytes, as `#[derive]` made it, also
    /// after an encoding of ours panicked half-way.
    #[test]
    fn other_serializers_see_ids_as_before() {
        struct Boom;
        impl serde::Serialize for Boom {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                panic!("boom")
            }
        }
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 3);
        let as_derived = serde_json::to_string(&bytes).unwrap();
        let check = || {
            assert_eq!(serde_json::to_string(&Hash(bytes)).unwrap(), as_derived);
            assert_eq!(
                serde_json::to_string(&InvoiceId(bytes)).unwrap(),
                as_derived
            );
            assert_eq!(
                serde_json::to_string(&NodeId::from_bytes(bytes)).unwrap(),
                as_derived
            );
            assert_eq!(
                postcard::to_allocvec(&Hash(bytes)).unwrap(),
                postcard::to_allocvec(&bytes).unwrap()
            );
        };
        check();
        let _ = encode_after(&[], &(Hash(bytes), 5u8)).unwrap();
        check();
        let panicked = std::panic::catch_unwind(|| encode_after(&[], &(Hash(bytes), Boom)));
        assert!(panicked.is_err());
        check();
    }

    #[test]
    fn a_protocol_message_encodes_as_before() {
        use offst_core::protocol::message::{Message, PROTOCOL_VERSION};
        let (mut net, ids) = super::chain(4, 100, super::Rate::default());
        net.buy_along(&ids, &super::hours(), 5, 1).unwrap();
        let message = Message::Move(super::last_move(&net, ids[1], ids[2]));
        let plain = postcard::to_allocvec(&message).unwrap();
        let encoded = message.encode().unwrap();
        assert_eq!(encoded[0], PROTOCOL_VERSION);
        assert_eq!(&encoded[1..], &plain[..]);
        assert_eq!(encoded.capacity(), encoded.len());
    }
}

/// A currency is held inline, but it encodes, decodes and orders exactly as its name (a
/// string) does, as it did when it was a `String`: signatures and state hashes over credit
/// lines and requests depend on that. A stored or received name that is not a currency's is
/// refused when read.
#[test]
fn a_currency_encodes_and_orders_as_its_name() {
    use offst_core::protocol::amount::Currency;
    use offst_core::protocol::bounds::MAX_CURRENCY_LEN;
    let names = [
        "EUR",
        "hours",
        "a",
        "A",
        "a.b-c_d",
        &"z".repeat(MAX_CURRENCY_LEN),
        "eur",
    ];
    for name in names {
        let c = Currency::new(name).unwrap();
        assert_eq!(c.as_str(), name);
        assert_eq!(c.to_string(), name);
        assert_eq!(format!("{c:?}"), format!("{name:?}"));
        let as_string = postcard::to_allocvec(&name.to_string()).unwrap();
        assert_eq!(postcard::to_allocvec(&c).unwrap(), as_string);
        assert_eq!(postcard::from_bytes::<Currency>(&as_string).unwrap(), c);
        assert_eq!(String::from(c), name);
    }
    let mut currencies: Vec<Currency> = names.iter().map(|n| Currency::new(n).unwrap()).collect();
    let mut sorted: Vec<&str> = names.to_vec();
    currencies.sort();
    sorted.sort();
    assert_eq!(
        currencies.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        sorted
    );
    // Shorter names sort before their extensions, as strings do ("a" < "a.b-c_d").
    assert!(Currency::new("a").unwrap() < Currency::new("a.b-c_d").unwrap());
    for bad in ["", "€uro", "a b", &"x".repeat(MAX_CURRENCY_LEN + 1)] {
        let bytes = postcard::to_allocvec(&bad.to_string()).unwrap();
        assert!(postcard::from_bytes::<Currency>(&bytes).is_err(), "{bad:?}");
    }
}
