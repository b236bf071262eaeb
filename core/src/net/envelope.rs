//! End-to-end envelopes between friends. A relay sees only the recipient, the size (rounded up
//! to a bucket) and the time; it can neither read nor forge nor usefully replay an envelope.
//!
//! - Each wallet has a **mail key**: an X25519 key derived from its identity and bound to it by
//!   an Ed25519 signature ([`MailKey`]); friends learn it from invitations.
//! - **Sealing**: an ephemeral X25519 key per recipient, replaced after
//!   [`EPHEMERAL_LIFETIME_MS`] or [`EPHEMERAL_USES`] envelopes, whichever comes first, and kept
//!   only in memory; the symmetric key is BLAKE3's key derivation over the Diffie-Hellman secret
//!   and both public keys; XChaCha20-Poly1305 encrypts with a fresh random 24-byte nonce per
//!   envelope. Inside: the sender's id, the recipient's id, a random envelope id, the time, the
//!   body, and the sender's Ed25519 signature over all of them and the ephemeral key. Both
//!   sides remember the symmetric key of an ephemeral key in use, so a busy pair of friends
//!   does one key agreement a minute instead of two per envelope (`docs/protocol.md`, 9).
//! - **Padding**: the plaintext is padded to the next size bucket (each bucket twice the
//!   previous, from 512 bytes), so a size reveals only its bucket (`docs/protocol.md`, 9, says
//!   why twice and not four times).
//! - **Replays**: [`ReplayGuard`] remembers the ids of envelopes seen within a window and
//!   refuses copies and envelopes older than the window.
//!
//! Layout: version (1) ‖ ephemeral public key (32) ‖ nonce (24) ‖ ciphertext.

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::protocol::identity::{Identity, Memo, NodeId, Signature, SignatureBatch};

/// The envelope format.
pub const ENVELOPE_VERSION: u8 = 1;
const HEADER: usize = 1 + 32 + 24;
const TAG: usize = 16;
/// The smallest padded plaintext.
pub const MIN_BUCKET: usize = 512;
/// Largest body a sealed envelope can carry (the wire bound less overhead).
pub const MAX_BODY: usize = 512 * 1024;
/// The largest padded plaintext: an envelope of the wire's largest size
/// ([`MAX_ENVELOPE_SIZE`](crate::net::wire::MAX_ENVELOPE_SIZE)).
pub const MAX_PADDED: usize = crate::net::wire::MAX_ENVELOPE_SIZE - HEADER - TAG;

/// How long a sender seals to the same recipient under one ephemeral key (milliseconds of the
/// process's monotonic clock). After it, or after [`EPHEMERAL_USES`] envelopes, a new one.
pub const EPHEMERAL_LIFETIME_MS: u64 = 60_000;
/// Envelopes a sender seals under one ephemeral key before it makes a new one.
pub const EPHEMERAL_USES: u32 = 10_000;

/// A sender's ephemeral key for one recipient: only its public half and the symmetric key it
/// agreed are kept (the secret half is dropped once the key is agreed).
#[derive(Clone, Copy)]
struct SendingKey {
    eph_pub: [u8; 32],
    key: [u8; 32],
    made: std::time::Instant,
    uses: u32,
}

/// The sending keys in use, by (sender, recipient's mail key). Bounded: when full it starts
/// over, and the next envelope to each recipient agrees a new key.
type SendingKeys = std::collections::HashMap<([u8; 32], [u8; 32]), SendingKey>;
static SENDING: std::sync::Mutex<Option<SendingKeys>> = std::sync::Mutex::new(None);

/// The ephemeral public key and symmetric key to seal from `me` to `recipient_key` with: the
/// one in use if it is young enough, else a new one made from `eph_bytes`.
fn sending_key(me: &NodeId, recipient_key: &[u8; 32], eph_bytes: [u8; 32]) -> ([u8; 32], [u8; 32]) {
    let id = (*me.as_bytes(), *recipient_key);
    let now = std::time::Instant::now();
    let fresh = |k: &SendingKey| {
        k.uses < EPHEMERAL_USES
            && now.saturating_duration_since(k.made).as_millis() < u128::from(EPHEMERAL_LIFETIME_MS)
    };
    if let Ok(mut guard) = SENDING.lock()
        && let Some(k) = guard
            .as_mut()
            .and_then(|m| m.get_mut(&id))
            .filter(|k| fresh(k))
    {
        k.uses += 1;
        return (k.eph_pub, k.key);
    }
    let eph = StaticSecret::from(eph_bytes);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    crate::metrics::agreed();
    let shared = eph.diffie_hellman(&PublicKey::from(*recipient_key));
    let key = symmetric_key(shared.as_bytes(), &eph_pub, recipient_key);
    if let Ok(mut guard) = SENDING.lock() {
        let map = guard.get_or_insert_with(Default::default);
        if map.len() >= 4096 {
            map.clear();
        }
        map.insert(
            id,
            SendingKey {
                eph_pub,
                key,
                made: now,
                uses: 1,
            },
        );
    }
    (eph_pub, key)
}

/// The symmetric key of an envelope to `me` under `eph_pub`: remembered for the ephemeral keys
/// whose envelopes opened, so the next envelope under the same key needs no agreement.
fn receiving_key(me: &Identity, my_key: &[u8; 32], eph_pub: &[u8; 32]) -> ([u8; 32], bool) {
    if let Some(key) = RECEIVING.get(&(*my_key, *eph_pub)) {
        return (key, true);
    }
    crate::metrics::agreed();
    let shared = mail_secret(me).diffie_hellman(&PublicKey::from(*eph_pub));
    (symmetric_key(shared.as_bytes(), eph_pub, my_key), false)
}

/// Remember the symmetric key of `eph_pub` once an envelope under it opened.
fn remember_receiving_key(my_key: &[u8; 32], eph_pub: &[u8; 32], key: [u8; 32]) {
    RECEIVING.put((*my_key, *eph_pub), key);
}

/// Symmetric keys of ephemeral keys whose envelopes opened, by (our mail key, ephemeral key).
static RECEIVING: Memo<([u8; 32], [u8; 32]), [u8; 32]> = Memo::new();

/// Why an envelope was refused. Nothing about the wallet changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not an envelope of a known format.
    #[error("not an envelope (unknown format {0})")]
    UnknownVersion(u8),
    /// Too short to be an envelope.
    #[error("envelope is truncated")]
    Truncated,
    /// Does not decrypt with our key: forged, damaged, or for someone else.
    #[error("envelope does not open with this wallet's key (forged, damaged, or for someone else)")]
    DoesNotOpen,
    /// Decrypts, but names another recipient (a relay or sender re-addressed it).
    #[error("envelope is addressed to {0}, not to this wallet")]
    NotForUs(NodeId),
    /// The sender's signature does not verify: it claims a sender it is not from.
    #[error("envelope claims to be from {0} but is not signed by them")]
    BadSignature(NodeId),
    /// A mail key whose signature does not verify.
    #[error("the mail key of {0} is not signed by its owner")]
    BadMailKey(NodeId),
    /// Seen before.
    #[error("envelope {0} from {1} was already received (a replay)")]
    Replay(String, NodeId),
    /// Older than the replay window.
    #[error("envelope from {sender} is {age_ms} ms old, older than the {window_ms} ms window")]
    TooOld {
        /// The sender.
        sender: NodeId,
        /// How old.
        age_ms: u64,
        /// The window.
        window_ms: u64,
    },
    /// The body is over the bound.
    #[error("body of {0} bytes is too large to seal")]
    TooLarge(usize),
    /// Malformed inside (after authenticating: only a buggy sender does this).
    #[error("malformed envelope content: {0}")]
    Malformed(String),
}

/// A wallet's X25519 mail key, signed by its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailKey {
    /// Whose.
    pub owner: NodeId,
    /// The X25519 public key.
    pub key: [u8; 32],
    /// The owner's signature over `(owner, key)`.
    pub signature: Signature,
}

const MAIL_KEY_DOMAIN: &str = "offst mail key v1";

fn mail_secret(identity: &Identity) -> StaticSecret {
    StaticSecret::from(blake3::derive_key(MAIL_KEY_DOMAIN, &identity.seed()))
}

impl MailKey {
    /// The mail key of `identity` (derived from it; the same every time).
    ///
    /// Made once per identity and remembered (it costs a base-point multiplication and a
    /// signature, and a wallet hands it out with every payment request and opens every
    /// envelope with its key).
    pub fn of(identity: &Identity) -> MailKey {
        static OWN: Memo<[u8; 32], MailKey> = Memo::new();
        let owner = identity.id();
        let make = || {
            let key = PublicKey::from(&mail_secret(identity)).to_bytes();
            MailKey {
                owner,
                key,
                signature: identity.sign(MAIL_KEY_DOMAIN, &(owner, key)),
            }
        };
        OWN.get_or(*owner.as_bytes(), || Some(make()))
            .unwrap_or_else(make)
    }

    /// Check the owner signed it. A mail key that verified once is remembered (the check is
    /// a pure function of the key's bytes), so sealing to a friend does not check their key's
    /// signature again for every envelope.
    pub fn verify(&self) -> Result<(), EnvelopeError> {
        /// Owner, key and signature of a mail key that verified.
        type Checked = ([u8; 32], [u8; 32], [u8; 64]);
        static GOOD: Memo<Checked, ()> = Memo::new();
        let id = (*self.owner.as_bytes(), self.key, self.signature.0);
        GOOD.get_or(id, || {
            self.owner
                .verify(MAIL_KEY_DOMAIN, &(self.owner, self.key), &self.signature)
                .ok()
        })
        .ok_or(EnvelopeError::BadMailKey(self.owner))
    }
}

/// What an envelope carries, once opened and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Who sent it (verified).
    pub sender: NodeId,
    /// Its random id.
    pub id: [u8; 16],
    /// When the sender sealed it, by the sender's clock.
    pub sent_ms: u64,
    /// The body.
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Inner {
    sender: NodeId,
    recipient: NodeId,
    id: [u8; 16],
    sent_ms: u64,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    signature: Signature,
}

const SEAL_DOMAIN: &str = "offst envelope v1";

fn signed_part(
    sender: &NodeId,
    recipient: &NodeId,
    eph: &[u8; 32],
    id: &[u8; 16],
    sent_ms: u64,
    body: &[u8],
) -> (NodeId, NodeId, [u8; 32], [u8; 16], u64, [u8; 32]) {
    (*sender, *recipient, *eph, *id, sent_ms, body_hash(body))
}

/// The hash of an envelope's body, which its signature covers instead of the body itself.
fn body_hash(body: &[u8]) -> [u8; 32] {
    crate::metrics::hashed(body.len());
    *blake3::hash(body).as_bytes()
}

fn symmetric_key(shared: &[u8; 32], eph: &[u8; 32], recipient_key: &[u8; 32]) -> [u8; 32] {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(eph);
    material[64..].copy_from_slice(recipient_key);
    blake3::derive_key(SEAL_DOMAIN, &material)
}

/// The padded size for a plaintext of `n` bytes: the smallest of 512 bytes × 2ⁿ that holds
/// it. Recipients read the length inside and accept any padding, so the bucket rule can change
/// without a new envelope version (until 2026-12-07 each bucket was 4 times the previous).
///
/// The last bucket is what the wire carries ([`MAX_PADDED`]), not the next power of two: a
/// body of nearly [`MAX_BODY`] bytes made an envelope of twice the wire's bound before, which
/// every relay refused.
pub fn bucket(n: usize) -> usize {
    let mut b = MIN_BUCKET;
    while b < n {
        b = b.saturating_mul(2);
    }
    if b > MAX_PADDED && n <= MAX_PADDED {
        MAX_PADDED
    } else {
        b
    }
}

/// Seal `body` from `sender` to the owner of `to`. `entropy` (56 bytes: ephemeral key, nonce)
/// and `id` must be fresh random bytes.
pub fn seal(
    sender: &Identity,
    to: &MailKey,
    body: &[u8],
    sent_ms: u64,
    id: [u8; 16],
    entropy: [u8; 56],
) -> Result<Vec<u8>, EnvelopeError> {
    to.verify()?;
    seal_raw(
        sender,
        sender.id(),
        to.owner,
        to.key,
        body,
        sent_ms,
        id,
        entropy,
    )
}

/// For tests of the receiving side only: seal an envelope that claims `claimed_sender` and
/// names `recipient`, whatever key it is sealed to and whoever signs it. A real sender never
/// needs this.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn seal_forged(
    signer: &Identity,
    claimed_sender: NodeId,
    recipient: NodeId,
    recipient_key: [u8; 32],
    body: &[u8],
    sent_ms: u64,
    id: [u8; 16],
    entropy: [u8; 56],
) -> Result<Vec<u8>, EnvelopeError> {
    seal_raw(
        signer,
        claimed_sender,
        recipient,
        recipient_key,
        body,
        sent_ms,
        id,
        entropy,
    )
}

#[allow(clippy::too_many_arguments)]
fn seal_raw(
    signer: &Identity,
    me: NodeId,
    recipient: NodeId,
    recipient_key: [u8; 32],
    body: &[u8],
    sent_ms: u64,
    id: [u8; 16],
    entropy: [u8; 56],
) -> Result<Vec<u8>, EnvelopeError> {
    if body.len() > MAX_BODY {
        return Err(EnvelopeError::TooLarge(body.len()));
    }
    let mut eph_bytes = [0u8; 32];
    eph_bytes.copy_from_slice(&entropy[..32]);
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&entropy[32..]);
    let (eph_pub, key) = sending_key(&me, &recipient_key, eph_bytes);
    let inner = Inner {
        sender: me,
        recipient,
        id,
        sent_ms,
        body: body.to_vec(),
        signature: signer.sign(
            SEAL_DOMAIN,
            &signed_part(&me, &recipient, &eph_pub, &id, sent_ms, body),
        ),
    };
    // The header, then the plaintext (the length, the encoding, the padding) encrypted where
    // it was built, then the tag: one buffer of the envelope's final size.
    let malformed = |e: postcard::Error| EnvelopeError::Malformed(e.to_string());
    // Fixed-size arrays (the ids, the signature) eight bytes at a time: `serialize_fixed`.
    use crate::protocol::identity::in_words;
    let size = in_words(|| postcard::experimental::serialized_size(&inner)).map_err(malformed)?;
    let padded = bucket(size + 4);
    if padded > MAX_PADDED {
        return Err(EnvelopeError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(HEADER + padded + TAG);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&(size as u32).to_be_bytes());
    let mut out = in_words(|| postcard::to_extend(&inner, out)).map_err(malformed)?;
    #[cfg(debug_assertions)]
    {
        let slow = postcard::to_allocvec(&inner).unwrap_or_default();
        // After the header and the 4 bytes of the length.
        debug_assert_eq!(out.get(HEADER + 4..), Some(slow.as_slice()));
    }
    out.resize(HEADER + padded, 0);
    crate::metrics::sealed(padded);
    let aad = aad(&eph_pub, &recipient_key);
    let plain = out.get_mut(HEADER..).unwrap_or_default();
    let tag = XChaCha20Poly1305::new(&key.into())
        .encrypt_inout_detached(&XNonce::from(nonce), &aad, plain.into())
        .map_err(|_| EnvelopeError::TooLarge(padded))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn aad(eph_pub: &[u8; 32], recipient_key: &[u8; 32]) -> [u8; 65] {
    let mut a = [0u8; 65];
    let (version, keys) = a.split_at_mut(1);
    let (eph, recipient) = keys.split_at_mut(32);
    version.copy_from_slice(&[ENVELOPE_VERSION]);
    eph.copy_from_slice(eph_pub);
    recipient.copy_from_slice(recipient_key);
    a
}

/// Open an envelope addressed to `me`, checking who sealed it.
pub fn open(me: &Identity, bytes: &[u8]) -> Result<Opened, EnvelopeError> {
    let (inner, eph_pub) = decrypt(me, bytes)?;
    check_sender(&inner, &eph_pub)?;
    Ok(inner.into_opened())
}

/// Open several envelopes addressed to `me`, checking their senders' signatures in one batch
/// (`SignatureBatch`); if the batch fails, each is checked alone, so every envelope gets the
/// same verdict as from [`open`].
pub fn open_all<E: AsRef<[u8]>>(
    me: &Identity,
    envelopes: &[E],
) -> Vec<Result<Opened, EnvelopeError>> {
    let decrypted: Vec<_> = envelopes.iter().map(|e| decrypt(me, e.as_ref())).collect();
    let mut batch = SignatureBatch::new();
    for (inner, eph_pub) in decrypted.iter().flatten() {
        let (signer, part, signature) = signed_by(inner, eph_pub);
        batch.queue(&signer, SEAL_DOMAIN, &part, &signature);
    }
    let all_good = batch.verify();
    decrypted
        .into_iter()
        .map(|d| {
            let (inner, eph_pub) = d?;
            if !all_good {
                check_sender(&inner, &eph_pub)?;
            }
            Ok(inner.into_opened())
        })
        .collect()
}

type SignedPart = (NodeId, NodeId, [u8; 32], [u8; 16], u64, [u8; 32]);

/// Who must have signed `inner`, what, and the signature.
fn signed_by(inner: &Inner, eph_pub: &[u8; 32]) -> (NodeId, SignedPart, Signature) {
    let part = signed_part(
        &inner.sender,
        &inner.recipient,
        eph_pub,
        &inner.id,
        inner.sent_ms,
        &inner.body,
    );
    (inner.sender, part, inner.signature)
}

/// Check the sender's signature of `inner` alone.
fn check_sender(inner: &Inner, eph_pub: &[u8; 32]) -> Result<(), EnvelopeError> {
    let (signer, part, signature) = signed_by(inner, eph_pub);
    signer
        .verify(SEAL_DOMAIN, &part, &signature)
        .map_err(|_| EnvelopeError::BadSignature(signer))
}

impl Inner {
    fn into_opened(self) -> Opened {
        Opened {
            sender: self.sender,
            id: self.id,
            sent_ms: self.sent_ms,
            body: self.body,
        }
    }
}

/// Decrypt an envelope addressed to `me` and check it names `me`; the sender's signature is
/// not checked yet. Returns the contents and the envelope's ephemeral key.
fn decrypt(me: &Identity, bytes: &[u8]) -> Result<(Inner, [u8; 32]), EnvelopeError> {
    let (&version, rest) = bytes.split_first().ok_or(EnvelopeError::Truncated)?;
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnknownVersion(version));
    }
    if bytes.len() < HEADER + TAG {
        return Err(EnvelopeError::Truncated);
    }
    let eph_pub: [u8; 32] = rest
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or(EnvelopeError::Truncated)?;
    let nonce: [u8; 24] = rest
        .get(32..56)
        .and_then(|s| s.try_into().ok())
        .ok_or(EnvelopeError::Truncated)?;
    let ct = rest.get(56..).ok_or(EnvelopeError::Truncated)?;
    let my_key = MailKey::of(me).key;
    crate::metrics::opened(ct.len());
    let (key, known) = receiving_key(me, &my_key, &eph_pub);
    let plain = XChaCha20Poly1305::new(&key.into())
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ct,
                aad: &aad(&eph_pub, &my_key),
            },
        )
        .map_err(|_| EnvelopeError::DoesNotOpen)?;
    if !known {
        // Only a key that opened an envelope is kept: garbage cannot fill the memo.
        remember_receiving_key(&my_key, &eph_pub, key);
    }
    let len = plain
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| EnvelopeError::Malformed("no length".into()))? as usize;
    let encoded = plain
        .get(4..4 + len)
        .ok_or_else(|| EnvelopeError::Malformed("length past the end".into()))?;
    let inner: Inner = crate::protocol::identity::decode(encoded)
        .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if inner.recipient != me.id() {
        return Err(EnvelopeError::NotForUs(inner.recipient));
    }
    Ok((inner, eph_pub))
}

/// Remembers the envelopes seen within a window, and refuses copies and older envelopes.
/// The window must exceed how long a relay keeps mail (30 days by default), so that nothing a
/// relay may still deliver is refused as too old.
#[derive(Clone, Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    seen: BTreeSet<(NodeId, [u8; 16])>,
    by_time: BTreeMap<u64, Vec<(NodeId, [u8; 16])>>,
}

/// The default replay window: 45 days.
pub const REPLAY_WINDOW_MS: u64 = 45 * 24 * 3600 * 1000;

impl ReplayGuard {
    /// A guard with `window_ms`.
    pub fn new(window_ms: u64) -> ReplayGuard {
        ReplayGuard {
            window_ms,
            seen: BTreeSet::new(),
            by_time: BTreeMap::new(),
        }
    }

    /// Check `opened` at `now_ms`, and remember it if it is new.
    pub fn check(&mut self, opened: &Opened, now_ms: u64) -> Result<(), EnvelopeError> {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        if opened.sent_ms < cutoff {
            return Err(EnvelopeError::TooOld {
                sender: opened.sender,
                age_ms: now_ms.saturating_sub(opened.sent_ms),
                window_ms: self.window_ms,
            });
        }
        let key = (opened.sender, opened.id);
        if self.seen.contains(&key) {
            return Err(EnvelopeError::Replay(
                data_encoding::HEXLOWER.encode(&opened.id),
                opened.sender,
            ));
        }
        self.seen.insert(key);
        self.by_time.entry(opened.sent_ms).or_default().push(key);
        // Forget what fell out of the window: it would be refused as too old anyway.
        while let Some((&t, _)) = self.by_time.first_key_value() {
            if t >= cutoff {
                break;
            }
            if let Some((_, keys)) = self.by_time.pop_first() {
                for k in keys {
                    self.seen.remove(&k);
                }
            }
        }
        Ok(())
    }

    /// Envelopes remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The envelope's inner encoding (what is signed and sealed) is the same bytes as before the
    /// body became a byte string (`serde_bytes`): envelopes sealed by older wallets open.
    #[test]
    fn the_inner_encoding_is_unchanged_by_the_byte_string_body() {
        #[derive(Serialize)]
        struct OldInner {
            sender: NodeId,
            recipient: NodeId,
            id: [u8; 16],
            sent_ms: u64,
            body: Vec<u8>,
            signature: Signature,
        }
        let signer = Identity::from_seed([5; 32]);
        let signature = signer.sign("test", &1u8);
        for len in [0usize, 127, 128, 4000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let new = Inner {
                sender: signer.id(),
                recipient: signer.id(),
                id: [7; 16],
                sent_ms: 42,
                body: body.clone(),
                signature,
            };
            let old = OldInner {
                sender: signer.id(),
                recipient: signer.id(),
                id: [7; 16],
                sent_ms: 42,
                body,
                signature,
            };
            assert_eq!(
                postcard::to_allocvec(&new).unwrap(),
                postcard::to_allocvec(&old).unwrap()
            );
        }
    }
}
