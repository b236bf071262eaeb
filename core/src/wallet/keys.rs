//! Keys at rest: the identity secret is stored sealed (XChaCha20-Poly1305) under a 32-byte key
//! that a [`KeyStore`] provides. The store never sees the identity; the wallet never stores the
//! key.
//!
//! - On phones, the bindings implement [`KeyStore`] with the Android Keystore or the iOS
//!   Keychain (a key that never leaves the secure hardware wraps the 32 bytes).
//! - On desktop, [`PassphraseKeys`] derives the key from a passphrase with Argon2id, and
//!   [`KeyFile`] reads it from a file the user keeps apart from the data.

use std::fmt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, Zeroizing};

/// Salt length given to a key store with every request.
pub const SALT_LEN: usize = 16;

/// A 32-byte symmetric key, wiped from memory when dropped.
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    /// Wrap raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(Zeroizing::new(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short public fingerprint of the key, stored beside sealed data so that a wrong key is
    /// told apart from damaged data. It reveals nothing usable about the key.
    pub fn check_value(&self) -> [u8; 16] {
        let full = blake3::keyed_hash(&self.0, b"offst key check v1");
        let mut out = [0u8; 16];
        out.copy_from_slice(&full.as_bytes()[..16]);
        out
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Why a key store could not give a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyStoreError {
    /// The key store is locked or the user refused (e.g. biometric prompt cancelled).
    #[error("the key store is locked or access was refused: {0}")]
    Unavailable(String),
    /// A key file could not be read or has the wrong size.
    #[error("key file {path}: {detail}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The passphrase KDF failed (bad parameters).
    #[error("passphrase key derivation failed: {0}")]
    Kdf(String),
}

/// Where the wallet's key comes from. `salt` is random per wallet (and per backup) and stored
/// beside the sealed data; stores that hold a key of their own may ignore it.
pub trait KeyStore {
    /// The 32-byte key for `salt`. Must return the same key for the same salt every time.
    fn key(&self, salt: &[u8; SALT_LEN]) -> Result<SecretKey, KeyStoreError>;
}

/// Argon2id cost settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub passes: u32,
}

impl KdfCost {
    /// The default: 64 MiB and 3 passes (about a quarter of a second on a phone; RFC 9106's
    /// second recommended option lowers memory to 64 MiB with 3 passes).
    pub const DEFAULT: KdfCost = KdfCost {
        memory_kib: 64 * 1024,
        passes: 3,
    };
    /// The smallest cost, for tests only: never use it for real keys.
    pub const TEST_ONLY: KdfCost = KdfCost {
        memory_kib: 8,
        passes: 1,
    };
}

/// A key derived from a passphrase with Argon2id.
pub struct PassphraseKeys {
    passphrase: Zeroizing<String>,
    cost: KdfCost,
}

impl PassphraseKeys {
    /// Keys from `passphrase` at the default cost.
    pub fn new(passphrase: impl Into<String>) -> PassphraseKeys {
        PassphraseKeys::with_cost(passphrase, KdfCost::DEFAULT)
    }

    /// Keys from `passphrase` at `cost`.
    pub fn with_cost(passphrase: impl Into<String>, cost: KdfCost) -> PassphraseKeys {
        PassphraseKeys {
            passphrase: Zeroizing::new(passphrase.into()),
            cost,
        }
    }
}

impl KeyStore for PassphraseKeys {
    fn key(&self, salt: &[u8; SALT_LEN]) -> Result<SecretKey, KeyStoreError> {
        let params = argon2::Params::new(self.cost.memory_kib, self.cost.passes, 1, Some(32))
            .map_err(|e| KeyStoreError::Kdf(e.to_string()))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(self.passphrase.as_bytes(), salt, &mut out)
            .map_err(|e| KeyStoreError::Kdf(e.to_string()))?;
        let key = SecretKey::from_bytes(out);
        out.zeroize();
        Ok(key)
    }
}

/// A key read from a file of exactly 32 bytes (e.g. on a removable drive). The salt is mixed
/// in, so one file can protect several wallets without reusing a key.
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// Keys from the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> KeyFile {
        KeyFile { path: path.into() }
    }

    /// Write a new random key file at `path` (fails if it exists).
    pub fn generate(path: &Path) -> Result<KeyFile, KeyStoreError> {
        use std::io::Write;
        let err = |detail: String| KeyStoreError::KeyFile {
            path: path.display().to_string(),
            detail,
        };
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| err(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        f.write_all(bytes.as_ref())
            .map_err(|e| err(e.to_string()))?;
        f.sync_all().map_err(|e| err(e.to_string()))?;
        Ok(KeyFile::new(path))
    }
}

impl KeyStore for KeyFile {
    fn key(&self, salt: &[u8; SALT_LEN]) -> Result<SecretKey, KeyStoreError> {
        let err = |detail: String| KeyStoreError::KeyFile {
            path: self.path.display().to_string(),
            detail,
        };
        let bytes = Zeroizing::new(std::fs::read(&self.path).map_err(|e| err(e.to_string()))?);
        if bytes.len() != 32 {
            return Err(err(format!(
                "holds {} bytes; a key file holds exactly 32",
                bytes.len()
            )));
        }
        let mut material = Zeroizing::new(Vec::with_capacity(32 + SALT_LEN));
        material.extend_from_slice(&bytes);
        material.extend_from_slice(salt);
        Ok(SecretKey::from_bytes(blake3::derive_key(
            "offst key file v1",
            &material,
        )))
    }
}

/// A fixed key held in memory: for tests, and for bindings whose platform store hands out the
/// raw key.
pub struct RawKey(pub SecretKey);

impl KeyStore for RawKey {
    fn key(&self, _salt: &[u8; SALT_LEN]) -> Result<SecretKey, KeyStoreError> {
        Ok(SecretKey::from_bytes(*self.0.as_bytes()))
    }
}

/// Why sealed bytes could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key's check value differs: this is not the key the data was sealed with.
    #[error("wrong key")]
    WrongKey,
    /// The key is right but the data does not authenticate.
    #[error("sealed data is damaged")]
    Damaged,
}

/// Sealed bytes: nonce, the key's check value, ciphertext with tag.
pub(crate) struct Sealed {
    pub nonce: [u8; 24],
    pub check: [u8; 16],
    pub ciphertext: Vec<u8>,
}

/// Seal `plain` under `key`, binding `aad` (which must be given again to open it).
pub(crate) fn seal(key: &SecretKey, aad: &[u8], plain: &[u8]) -> Result<Sealed, getrandom::Error> {
    let nonce: [u8; 24] = random()?;
    // Encryption only fails for inputs over the cipher's length limit (256 GiB), far above
    // anything stored here.
    let ciphertext = seal_with_nonce(key, aad, plain, nonce);
    Ok(Sealed {
        nonce,
        check: key.check_value(),
        ciphertext,
    })
}

/// Seal with a nonce chosen by the caller (who must never reuse it with the same key).
pub(crate) fn seal_with_nonce(
    key: &SecretKey,
    aad: &[u8],
    plain: &[u8],
    nonce: [u8; 24],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
        .unwrap_or_default()
}

/// Open what [`seal`] sealed.
pub(crate) fn open(
    key: &SecretKey,
    aad: &[u8],
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if key.check_value() != sealed.check {
        return Err(SealError::WrongKey);
    }
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .decrypt(
            &XNonce::from(sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Damaged)
}

/// Fresh random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)?;
    Ok(out)
}
