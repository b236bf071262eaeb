//! Identities: ed25519 keys, node ids and their text form, hashes and signatures.
//!
//! Everything signed is signed over *canonical bytes*: a domain tag followed by the postcard
//! encoding of a typed value (postcard has exactly one encoding per value). Verifiers re-encode
//! the parsed value, so no signature ever depends on how a peer happened to lay out its bytes.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Canonical bytes of `value` behind a domain tag; what signatures and hashes cover.
pub fn canonical_bytes<T: Serialize>(domain: &str, value: &T) -> Vec<u8> {
    // Serializing our own in-memory types cannot fail: postcard only fails on unsupported
    // serde features (none used) or a full fixed buffer (a Vec grows).
    encode_after(&[domain.as_bytes(), &[0]], value).unwrap_or_default()
}

/// `prefix` (its slices one after the other) then the postcard encoding of `value`, in one
/// allocation of the exact size. Every encoding of ours that ends in a `Vec` goes through here:
/// growing a `Vec` from empty byte by byte reallocated it about ten times for a 1 KiB message
/// (a few per cent of a payment's CPU); sizing first walks the value twice, which is cheaper.
pub fn encode_after<T: Serialize + ?Sized>(
    prefix: &[&[u8]],
    value: &T,
) -> Result<Vec<u8>, postcard::Error> {
    let head: usize = prefix.iter().map(|p| p.len()).sum();
    let encoded = in_words(|| {
        let size = postcard::experimental::serialized_size(value)?;
        let mut out = Vec::with_capacity(head + size);
        for p in prefix {
            out.extend_from_slice(p);
        }
        postcard::to_extend(value, out)
    });
    #[cfg(debug_assertions)]
    if let Ok(fast) = &encoded {
        // The same bytes as postcard writes the arrays one byte at a time.
        let slow = postcard::to_allocvec(value).unwrap_or_default();
        debug_assert_eq!(fast.get(head..), Some(slow.as_slice()));
    }
    encoded
}

thread_local! {
    /// Set while one of our postcard encodings runs (`encode_after`, `hash_encoded`): fixed-size
    /// byte arrays are then written eight bytes at a time ([`serialize_fixed`]).
    static IN_WORDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `encode` (a postcard encoding of ours) with fixed-size arrays written in words.
pub(crate) fn in_words<R>(encode: impl FnOnce() -> R) -> R {
    /// Puts the flag back as it was, also if `encode` panics: no other serializer on this
    /// thread may ever see it set.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_WORDS.with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(IN_WORDS.with(|f| f.replace(true)));
    encode()
}

/// Serialize a fixed-size byte array exactly as serde serializes `[u8; N]`: a tuple of its
/// bytes, which postcard writes as the bytes themselves, with no length. Postcard does that
/// one call per byte (about 2 ns a byte here, the protocol benchmark `crypto/blake3` of ids),
/// and ids, keys, hashes and signatures are most of what the protocol encodes. So inside our
/// own postcard encodings ([`in_words`]) the array goes as a tuple of `N / 8` `f64`s made from
/// its bytes: postcard writes an `f64` as its 8 bytes, little-endian (its wire format), and
/// `f64::from_bits` keeps every bit, so the output is the same bytes, eight at a time. Any
/// other serializer (JSON, or postcard called directly) gets the tuple of bytes. Debug builds
/// check every encoding of ours against postcard's own (`encode_after`, `hash_encoded`).
pub(crate) fn serialize_fixed<S: serde::Serializer, const N: usize>(
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    if words() && N.is_multiple_of(8) {
        let mut t = s.serialize_tuple(N / 8)?;
        for word in bytes.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            t.serialize_element(&f64::from_bits(u64::from_le_bytes(b)))?;
        }
        t.end()
    } else {
        let mut t = s.serialize_tuple(N)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

/// Deserialize what [`serialize_fixed`] wrote: inside our own decodings ([`in_words`]) the
/// array is read as `N / 8` `f64`s (postcard reads an `f64` as 8 bytes, little-endian, and
/// `f64::to_bits` gives them back exactly), elsewhere as serde reads `[u8; N]`: a tuple of
/// bytes. Any bytes are a valid array either way; too few are an error either way.
pub(crate) fn deserialize_fixed<'de, D: serde::Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[u8; N], D::Error> {
    use serde::de::{Error, SeqAccess, Visitor};
    struct Bytes<const N: usize>;
    impl<'de, const N: usize> Visitor<'de> for Bytes<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }
    struct Words<const N: usize>;
    impl<'de, const N: usize> Visitor<'de> for Words<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, word) in out.chunks_exact_mut(8).enumerate() {
                let w: f64 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i * 8, &self))?;
                word.copy_from_slice(&w.to_bits().to_le_bytes());
            }
            Ok(out)
        }
    }
    if words() && N.is_multiple_of(8) {
        d.deserialize_tuple(N / 8, Words::<N>)
    } else {
        d.deserialize_tuple(N, Bytes::<N>)
    }
}

/// Deserialize `struct name([u8; N])` as `#[derive(Deserialize)]` does, through
/// [`deserialize_fixed`].
pub(crate) fn deserialize_newtype_fixed<'de, D: serde::Deserializer<'de>, const N: usize>(
    name: &'static str,
    d: D,
) -> Result<[u8; N], D::Error> {
    use serde::de::{Error, SeqAccess, Visitor};
    struct Newtype<const N: usize>;
    impl<'de, const N: usize> Visitor<'de> for Newtype<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a newtype of {N} bytes")
        }
        fn visit_newtype_struct<E: serde::Deserializer<'de>>(
            self,
            d: E,
        ) -> Result<[u8; N], E::Error> {
            deserialize_fixed(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            seq.next_element::<FixedArray<N>>()?
                .map(|a| a.0)
                .ok_or_else(|| A::Error::invalid_length(0, &self))
        }
    }
    d.deserialize_newtype_struct(name, Newtype::<N>)
}

/// An array read by [`deserialize_fixed`].
struct FixedArray<const N: usize>([u8; N]);

impl<'de, const N: usize> Deserialize<'de> for FixedArray<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_fixed(d).map(FixedArray)
    }
}

/// Whether fixed-size arrays go in words on this thread now (see [`serialize_fixed`]). Never
/// on 32-bit x86: there a float passed by value may go through the x87 unit, which can change
/// a signalling NaN's bits (Rust's float semantics keep every bit of a moved float elsewhere).
fn words() -> bool {
    !cfg!(target_arch = "x86") && IN_WORDS.with(std::cell::Cell::get)
}

/// `Serialize` and `Deserialize` for `struct $name([u8; N])` as `#[derive]` would write them
/// (a newtype struct around the array), through [`serialize_newtype_fixed`] and
/// [`deserialize_newtype_fixed`].
macro_rules! fixed_newtype_serde {
    ($name:ident) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::protocol::identity::serialize_newtype_fixed(stringify!($name), &self.0, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::protocol::identity::deserialize_newtype_fixed(stringify!($name), d)
                    .map($name)
            }
        }
    };
}
pub(crate) use fixed_newtype_serde;

/// A fixed-size array serialized by [`serialize_fixed`].
struct Fixed<'a, const N: usize>(&'a [u8; N]);

impl<const N: usize> Serialize for Fixed<'_, N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fixed(self.0, s)
    }
}

/// Serialize `bytes` as `#[derive(Serialize)]` on `struct name([u8; N])` does (a newtype
/// struct around the array), through [`serialize_fixed`].
pub(crate) fn serialize_newtype_fixed<S: serde::Serializer, const N: usize>(
    name: &'static str,
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(name, &Fixed(bytes))
}

/// Decode a postcard encoding of ours, fixed-size arrays eight bytes at a time
/// ([`deserialize_fixed`]); the same values as `postcard::from_bytes`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    in_words(|| postcard::from_bytes(bytes))
}

/// [`decode`] a value at the start of `bytes`; returns it and the bytes after it.
pub fn decode_prefix<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), postcard::Error> {
    in_words(|| postcard::take_from_bytes(bytes))
}

/// A postcard output that feeds a BLAKE3 hasher through a small buffer, so that hashing a
/// value builds no `Vec` of its bytes. BLAKE3 gives the same hash however its input is split
/// between updates, so this equals hashing the whole encoding at once.
struct HashFlavor<'a> {
    hasher: &'a mut blake3::Hasher,
    buf: [u8; 256],
    len: usize,
    /// Bytes fed to the hasher so far.
    fed: usize,
}

impl HashFlavor<'_> {
    fn flush(&mut self) {
        if let Some(filled) = self.buf.get(..self.len) {
            self.hasher.update(filled);
            self.fed += filled.len();
        }
        self.len = 0;
    }
}

impl postcard::ser_flavors::Flavor for HashFlavor<'_> {
    type Output = usize;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.len == self.buf.len() {
            self.flush();
        }
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = data;
            self.len += 1;
        }
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match self.buf.get_mut(self.len..self.len + data.len()) {
            Some(room) => {
                room.copy_from_slice(data);
                self.len += data.len();
            }
            None => {
                self.flush();
                self.hasher.update(data);
                self.fed += data.len();
            }
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<usize> {
        self.flush();
        Ok(self.fed)
    }
}

/// Feed the postcard encoding of `value` to `hasher`; returns how many bytes that was.
pub fn hash_encoded<T: Serialize + ?Sized>(hasher: &mut blake3::Hasher, value: &T) -> usize {
    #[cfg(debug_assertions)]
    let mut check = hasher.clone();
    let flavor = HashFlavor {
        hasher: &mut *hasher,
        buf: [0; 256],
        len: 0,
        fed: 0,
    };
    // Our own values always encode (see `canonical_bytes`); the flavor itself never fails.
    let fed = in_words(|| {
        postcard::serialize_with_flavor::<T, HashFlavor, usize>(value, flavor).unwrap_or(0)
    });
    #[cfg(debug_assertions)]
    {
        // The same bytes as postcard writes the arrays one byte at a time.
        let slow = postcard::to_allocvec(value).unwrap_or_default();
        check.update(&slow);
        debug_assert_eq!(fed, slow.len());
        debug_assert_eq!(check.finalize(), hasher.finalize());
    }
    fed
}

/// A 32-byte BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

fixed_newtype_serde!(Hash);

impl Hash {
    /// Hash of a typed value under a domain (BLAKE3 in key-derivation mode).
    pub fn of<T: Serialize>(domain: &'static str, value: &T) -> Hash {
        let mut hasher = blake3::Hasher::new_derive_key(domain);
        crate::metrics::hashed(hash_encoded(&mut hasher, value));
        Hash(*hasher.finalize().as_bytes())
    }

    /// Hash of raw bytes under a domain.
    pub fn of_bytes(domain: &'static str, bytes: &[u8]) -> Hash {
        crate::metrics::hashed(bytes.len());
        let mut hasher = blake3::Hasher::new_derive_key(domain);
        hasher.update(bytes);
        Hash(*hasher.finalize().as_bytes())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex_prefix(&self.0))
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex_prefix(&self.0))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Two fixed 32-byte halves: serde derives arrays only up to 32 elements, and a tuple
        // keeps postcard's encoding at exactly 64 bytes with no length prefix.
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a.copy_from_slice(&self.0[..32]);
        b.copy_from_slice(&self.0[32..]);
        (Fixed(&a), Fixed(&b)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (a, b): (FixedArray<32>, FixedArray<32>) = Deserialize::deserialize(d)?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&a.0);
        out[32..].copy_from_slice(&b.0);
        Ok(Signature(out))
    }
}

/// A signature did not verify under the claimed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify under the key of {0}")]
pub struct BadSignature(pub NodeId);

/// A node's identity on the network: its ed25519 public key.
///
/// The text form is the 32 bytes in lowercase RFC 4648 base32 without padding (52 characters),
/// the same alphabet as the other Offst text forms.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; 32]);

fixed_newtype_serde!(NodeId);

impl NodeId {
    /// The id for raw public-key bytes. Does not check the bytes are a curve point; use
    /// [`NodeId::from_str`] for untrusted text, which does.
    pub const fn from_bytes(bytes: [u8; 32]) -> NodeId {
        NodeId(bytes)
    }

    /// The raw public key.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 characters of the text form, for logs and tables.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }

    /// Verify `signature` over `canonical_bytes(domain, value)` by this node.
    pub fn verify<T: Serialize>(
        &self,
        domain: &str,
        value: &T,
        signature: &Signature,
    ) -> Result<(), BadSignature> {
        let key = verifying_key(&self.0).ok_or(BadSignature(*self))?;
        let sig = ed25519_zebra::Signature::from_bytes(&signature.0);
        let msg = canonical_bytes(domain, value);
        crate::metrics::verified(msg.len());
        key.verify(&sig, &msg).map_err(|_| BadSignature(*self))
    }
}

/// Signatures gathered to be checked together: a batch costs about half as much per signature
/// as checking each alone, and less when several are by one key (a move's requests are all
/// signed by their buyers and its responses by their sellers).
///
/// **One rule for both.** Every check in Offst, one by one ([`NodeId::verify`]) or in a batch,
/// follows ZIP 215 (the cofactored equation), under which a batch accepts exactly what checking
/// each signature alone would. With the cofactorless rule of `verify_strict`, a signature
/// crafted with a small-order component can pass in some batches and fail alone, so two
/// honest friends could disagree about the same move. Keys of small order are refused by both
/// (every signature would verify under them).
///
/// The batch's random coefficients come from a hash of everything in it (no randomness in
/// the protocol, and nobody can choose a signature after seeing them), as in ed25519-dalek's
/// deterministic batches.
pub struct SignatureBatch {
    verifier: ed25519_zebra::batch::Verifier,
    transcript: blake3::Hasher,
    len: usize,
    /// Bytes of the queued messages.
    bytes: usize,
    bad_key: bool,
}

impl Default for SignatureBatch {
    fn default() -> SignatureBatch {
        SignatureBatch::new()
    }
}

impl SignatureBatch {
    /// An empty batch.
    pub fn new() -> SignatureBatch {
        SignatureBatch {
            verifier: ed25519_zebra::batch::Verifier::new(),
            transcript: blake3::Hasher::new_derive_key("offst signature batch v1"),
            len: 0,
            bytes: 0,
            bad_key: false,
        }
    }

    /// Add `signature` by `signer` over `canonical_bytes(domain, value)`.
    pub fn queue<T: Serialize>(
        &mut self,
        signer: &NodeId,
        domain: &str,
        value: &T,
        signature: &Signature,
    ) {
        if verifying_key(&signer.0).is_none() {
            self.bad_key = true;
            return;
        }
        let msg = canonical_bytes(domain, value);
        self.transcript.update(&signer.0);
        self.transcript.update(&signature.0);
        self.transcript.update(&(msg.len() as u64).to_le_bytes());
        self.transcript.update(&msg);
        let sig = ed25519_zebra::Signature::from_bytes(&signature.0);
        self.verifier.queue((
            ed25519_zebra::VerificationKeyBytes::from(signer.0),
            sig,
            &msg,
        ));
        self.len += 1;
        self.bytes += msg.len();
    }

    /// Whether every queued signature is valid (an empty batch is). When this says no, check
    /// them one by one to learn which.
    pub fn verify(self) -> bool {
        if self.bad_key {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        // The transcript's hash is part of a batch's cost (the load generator times batches
        // whole), not counted among the hashes.
        crate::metrics::batch_verified(self.len, self.bytes);
        use chacha20::rand_core::SeedableRng;
        let seed = *self.transcript.finalize().as_bytes();
        self.verifier
            .verify(chacha20::ChaCha20Rng::from_seed(seed))
            .is_ok()
    }
}

/// A bounded memo shared by the process: values computed from keys that stay the same (a
/// decompressed public key, a mail key's checked signature) are kept instead of computed on
/// every use. When full it is emptied and fills again: the few keys in use come back at once.
pub(crate) struct Memo<K, V> {
    map: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<K, V>>>,
}

/// Entries a [`Memo`] holds before it starts over.
const MEMO_ENTRIES: usize = 4096;

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    pub(crate) const fn new() -> Memo<K, V> {
        Memo {
            map: std::sync::OnceLock::new(),
        }
    }

    /// The value kept for `key`, if any.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.map
            .get()
            .and_then(|map| map.lock().ok().and_then(|m| m.get(key).cloned()))
    }

    /// Keep `value` for `key`.
    pub(crate) fn put(&self, key: K, value: V) {
        let map = self.map.get_or_init(Default::default);
        if let Ok(mut m) = map.lock() {
            if m.len() >= MEMO_ENTRIES {
                m.clear();
            }
            m.insert(key, value);
        }
    }

    /// The value for `key`, computed by `make` (and kept) when it is not known yet. A `None`
    /// from `make` is not kept.
    pub(crate) fn get_or(&self, key: K, make: impl FnOnce() -> Option<V>) -> Option<V> {
        let map = self.map.get_or_init(Default::default);
        if let Some(v) = map.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Some(v);
        }
        let v = make()?;
        self.put(key, v.clone());
        Some(v)
    }
}

/// The decompressed form of a public key (decompressing costs about a quarter of a
/// signature check, and a wallet checks the same few keys over and over). `None` for bytes
/// that are not a canonical point, or a point of small order (under which every signature
/// would verify).
fn verifying_key(bytes: &[u8; 32]) -> Option<ed25519_zebra::VerificationKey> {
    static KEYS: Memo<[u8; 32], ed25519_zebra::VerificationKey> = Memo::new();
    KEYS.get_or(*bytes, || {
        let point = curve25519_dalek::edwards::CompressedEdwardsY(*bytes).decompress()?;
        if point.is_small_order() || point.compress().to_bytes() != *bytes {
            return None;
        }
        ed25519_zebra::VerificationKey::try_from(*bytes).ok()
    })
}

const BASE32_LOWER: data_encoding::Encoding = data_encoding::BASE32_NOPAD_NOCASE;

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_LOWER.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// Why a node id's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNodeIdError {
    /// The text has the wrong number of characters.
    #[error("a node id is 52 base32 characters, this one has {0}")]
    WrongLength(usize),
    /// A character outside a–z and 2–7.
    #[error("a node id uses only the letters a-z and the digits 2-7; found {0:?}")]
    BadCharacter(char),
    /// Decodes to 32 bytes that are not an ed25519 public key.
    #[error("those 32 bytes are not an ed25519 public key")]
    NotAKey,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 52 {
            return Err(ParseNodeIdError::WrongLength(s.chars().count()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '2'..='7'))
        {
            return Err(ParseNodeIdError::BadCharacter(c));
        }
        let bytes = BASE32_LOWER
            .decode(s.as_bytes())
            .map_err(|_| ParseNodeIdError::NotAKey)?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ParseNodeIdError::WrongLength(s.len()))?;
        VerifyingKey::from_bytes(&arr).map_err(|_| ParseNodeIdError::NotAKey)?;
        Ok(NodeId(arr))
    }
}

/// A node's secret signing key together with its public id.
///
/// Created from 32 bytes of seed supplied by the caller: the protocol has no randomness of its
/// own (see `docs/architecture.md`).
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    id: NodeId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.id.short())
    }
}

impl Identity {
    /// The identity whose ed25519 secret key is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Identity {
        let key = SigningKey::from_bytes(&seed);
        let id = NodeId(key.verifying_key().to_bytes());
        Identity { key, id }
    }

    /// The secret seed, for storing the identity (encrypted) at rest.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// This identity's public id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Sign `canonical_bytes(domain, value)`.
    pub fn sign<T: Serialize>(&self, domain: &str, value: &T) -> Signature {
        let msg = canonical_bytes(domain, value);
        crate::metrics::signed(msg.len());
        Signature(self.key.sign(&msg).to_bytes())
    }
}
