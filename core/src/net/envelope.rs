//! End-to-end envelopes between friends. A relay sees only the recipient, the size (rounded up
//! to a bucket) and the time; it can neither read nor forge nor usefully replay an envelope.
//!
//! - Each wallet has a **mail key**: an X25519 key derived from its identity and bound to it by
//!   an Ed25519 signature ([`MailKey`]); friends learn it from invitations.
//! - **Sealing**: a fresh ephemeral X25519 key per envelope; the symmetric key is BLAKE3's
//!   key derivation over the Diffie-Hellman secret and both public keys; XChaCha20-Poly1305
//!   encrypts. Inside: the sender's id, the recipient's id, a random envelope id, the time, the
//!   body, and the sender's Ed25519 signature over all of them and the ephemeral key.
//! - **Padding**: the plaintext is padded to the next size bucket (each bucket 4 times the
//!   previous, from 512 bytes), so a size reveals only its bucket.
//! - **Replays**: [`ReplayGuard`] remembers the ids of envelopes seen within a window and
//!   refuses copies and envelopes older than the window.
//!
//! Layout: version (1) ‖ ephemeral public key (32) ‖ nonce (24) ‖ ciphertext.

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::protocol::identity::{Identity, Memo, NodeId, Signature};

/// The envelope format.
pub const ENVELOPE_VERSION: u8 = 1;
const HEADER: usize = 1 + 32 + 24;
const TAG: usize = 16;
/// The smallest padded plaintext.
pub const MIN_BUCKET: usize = 512;
/// Largest body a sealed envelope can carry (the wire bound less overhead).
pub const MAX_BODY: usize = 512 * 1024;

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
    pub fn of(identity: &Identity) -> MailKey {
        let key = PublicKey::from(&mail_secret(identity)).to_bytes();
        let owner = identity.id();
        MailKey {
            owner,
            key,
            signature: identity.sign(MAIL_KEY_DOMAIN, &(owner, key)),
        }
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
    (
        *sender,
        *recipient,
        *eph,
        *id,
        sent_ms,
        *blake3::hash(body).as_bytes(),
    )
}

fn symmetric_key(shared: &[u8; 32], eph: &[u8; 32], recipient_key: &[u8; 32]) -> [u8; 32] {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(eph);
    material[64..].copy_from_slice(recipient_key);
    blake3::derive_key(SEAL_DOMAIN, &material)
}

/// The padded size for a plaintext of `n` bytes.
pub fn bucket(n: usize) -> usize {
    let mut b = MIN_BUCKET;
    while b < n {
        b = b.saturating_mul(4);
    }
    b
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
    let eph = StaticSecret::from(eph_bytes);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    crate::metrics::sealed();
    let shared = eph.diffie_hellman(&PublicKey::from(recipient_key));
    let key = symmetric_key(shared.as_bytes(), &eph_pub, &recipient_key);
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
    let encoded =
        postcard::to_allocvec(&inner).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let mut plain = Vec::with_capacity(bucket(encoded.len() + 4));
    plain.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    plain.extend_from_slice(&encoded);
    plain.resize(bucket(plain.len()), 0);
    let mut out = Vec::with_capacity(HEADER + plain.len() + TAG);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&nonce);
    let aad = aad(&eph_pub, &recipient_key);
    let ct = XChaCha20Poly1305::new(&key.into())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| EnvelopeError::TooLarge(plain.len()))?;
    out.extend_from_slice(&ct);
    Ok(out)
}

fn aad(eph_pub: &[u8; 32], recipient_key: &[u8; 32]) -> Vec<u8> {
    let mut a = vec![ENVELOPE_VERSION];
    a.extend_from_slice(eph_pub);
    a.extend_from_slice(recipient_key);
    a
}

/// Open an envelope addressed to `me`, checking who sealed it.
pub fn open(me: &Identity, bytes: &[u8]) -> Result<Opened, EnvelopeError> {
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
    let secret = mail_secret(me);
    let my_key = PublicKey::from(&secret).to_bytes();
    crate::metrics::opened();
    let shared = secret.diffie_hellman(&PublicKey::from(eph_pub));
    let key = symmetric_key(shared.as_bytes(), &eph_pub, &my_key);
    let plain = XChaCha20Poly1305::new(&key.into())
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ct,
                aad: &aad(&eph_pub, &my_key),
            },
        )
        .map_err(|_| EnvelopeError::DoesNotOpen)?;
    let len = plain
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| EnvelopeError::Malformed("no length".into()))? as usize;
    let encoded = plain
        .get(4..4 + len)
        .ok_or_else(|| EnvelopeError::Malformed("length past the end".into()))?;
    let inner: Inner =
        postcard::from_bytes(encoded).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if inner.recipient != me.id() {
        return Err(EnvelopeError::NotForUs(inner.recipient));
    }
    inner
        .sender
        .verify(
            SEAL_DOMAIN,
            &signed_part(
                &inner.sender,
                &inner.recipient,
                &eph_pub,
                &inner.id,
                inner.sent_ms,
                &inner.body,
            ),
            &inner.signature,
        )
        .map_err(|_| EnvelopeError::BadSignature(inner.sender))?;
    Ok(Opened {
        sender: inner.sender,
        id: inner.id,
        sent_ms: inner.sent_ms,
        body: inner.body,
    })
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
