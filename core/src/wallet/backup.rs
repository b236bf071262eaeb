//! Backups: one encrypted, versioned file holding a consistent copy of the database (taken with
//! SQLite's online backup) and the identity, sealed under a key from a [`KeyStore`] (usually a
//! passphrase, so that the backup opens on a new phone whose keystore is empty).
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `OFFSTBAK` |
//! | 1 | format version ([`BACKUP_FORMAT`]) |
//! | 32 | the wallet id |
//! | 8 | when it was made, ms since the Unix epoch |
//! | 16 | salt for the key store |
//! | 24 | nonce |
//! | 16 | key check value |
//! | 8 | length of the ciphertext |
//! | n | XChaCha20-Poly1305 ciphertext of the payload; the header above is its associated data |
//!
//! The payload is the identity seed (32 bytes) followed by the database file.

use std::io::Write;
use std::path::Path;

use rusqlite::Connection;
use rusqlite::backup::Backup;

use crate::protocol::identity::{Identity, NodeId};

use super::keys::{self, KeyStore, SALT_LEN, SealError, Sealed};
use super::store;
use super::{DB_FILE, Wallet, WalletError, WalletOptions};

/// The backup format this build writes and reads.
pub const BACKUP_FORMAT: u8 = 1;
const MAGIC: &[u8; 8] = b"OFFSTBAK";
const HEADER_LEN: usize = 8 + 1 + 32 + 8 + SALT_LEN + 24 + 16 + 8;

/// Why a backup could not be made or restored. Restoring never leaves a half-restored wallet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// Not an Offst backup at all.
    #[error("this file is not an Offst backup")]
    NotABackup,
    /// The file is shorter than it says: it was cut off while copying.
    #[error(
        "the backup is truncated ({got} of {expected} bytes); copy it again from where it was saved"
    )]
    Truncated {
        /// Bytes the file should have.
        expected: u64,
        /// Bytes it has.
        got: u64,
    },
    /// Written by a newer app.
    #[error("the backup was made by a newer version of Offst (format {got}); update the app")]
    NewerFormat {
        /// Its format.
        got: u8,
    },
    /// The backup belongs to another wallet.
    #[error("this backup is of wallet {backup}, not of {expected}")]
    ForAnotherWallet {
        /// The wallet in the backup.
        backup: NodeId,
        /// The wallet expected.
        expected: NodeId,
    },
    /// The key does not open this backup.
    #[error("wrong key: this passphrase or key file does not open this backup")]
    WrongKey,
    /// The right key, but the content does not authenticate.
    #[error("the backup is damaged (it does not authenticate); use another copy")]
    Damaged,
    /// Restoring over an existing wallet.
    #[error("{dir} already holds a wallet; restore into an empty directory")]
    DirectoryNotEmpty {
        /// The directory.
        dir: String,
    },
}

/// What a backup holds, from its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// The wallet.
    pub wallet: NodeId,
    /// When it was made.
    pub made_at_ms: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

struct Header {
    wallet: NodeId,
    made_at_ms: u64,
    salt: [u8; SALT_LEN],
    nonce: [u8; 24],
    check: [u8; 16],
    len: u64,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(MAGIC);
        h.push(BACKUP_FORMAT);
        h.extend_from_slice(self.wallet.as_bytes());
        h.extend_from_slice(&self.made_at_ms.to_le_bytes());
        h.extend_from_slice(&self.salt);
        h.extend_from_slice(&self.nonce);
        h.extend_from_slice(&self.check);
        h.extend_from_slice(&self.len.to_le_bytes());
        h
    }

    fn decode(file: &[u8]) -> Result<Header, BackupError> {
        if file.len() < MAGIC.len() || file.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            return Err(BackupError::NotABackup);
        }
        let version = file.get(8).copied().ok_or(BackupError::NotABackup)?;
        if version > BACKUP_FORMAT {
            return Err(BackupError::NewerFormat { got: version });
        }
        if version != BACKUP_FORMAT {
            return Err(BackupError::NotABackup);
        }
        let truncated = || BackupError::Truncated {
            expected: HEADER_LEN as u64,
            got: file.len() as u64,
        };
        let h = file.get(..HEADER_LEN).ok_or_else(truncated)?;
        let take = |from: usize, n: usize| h.get(from..from + n).ok_or_else(truncated);
        let arr32: [u8; 32] = take(9, 32)?.try_into().map_err(|_| truncated())?;
        let u64_at = |from| -> Result<u64, BackupError> {
            Ok(u64::from_le_bytes(
                take(from, 8)?.try_into().map_err(|_| truncated())?,
            ))
        };
        Ok(Header {
            wallet: NodeId::from_bytes(arr32),
            made_at_ms: u64_at(41)?,
            salt: take(49, SALT_LEN)?.try_into().map_err(|_| truncated())?,
            nonce: take(65, 24)?.try_into().map_err(|_| truncated())?,
            check: take(89, 16)?.try_into().map_err(|_| truncated())?,
            len: u64_at(105)?,
        })
    }
}

/// Read a backup's header: which wallet, when, how big. Needs no key.
pub fn inspect(path: &Path) -> Result<BackupInfo, WalletError> {
    let file = std::fs::read(path).map_err(|e| WalletError::io(path, e))?;
    let h = Header::decode(&file)?;
    check_length(&h, &file)?;
    Ok(BackupInfo {
        wallet: h.wallet,
        made_at_ms: h.made_at_ms,
        bytes: file.len() as u64,
    })
}

fn check_length(h: &Header, file: &[u8]) -> Result<(), BackupError> {
    let expected = (HEADER_LEN as u64).saturating_add(h.len);
    let got = file.len() as u64;
    if got < expected {
        return Err(BackupError::Truncated { expected, got });
    }
    if got > expected {
        return Err(BackupError::Damaged);
    }
    Ok(())
}

impl Wallet {
    /// Write a backup of this wallet to `path`, sealed under a key from `keys`. Consistent
    /// while the wallet runs (SQLite's online backup); written to a temporary file and renamed,
    /// so `path` is either the old file or the whole new one.
    pub fn backup(&mut self, path: &Path, keys: &dyn KeyStore) -> Result<BackupInfo, WalletError> {
        // What steps wrote into the shared transaction is committed first: a backup holds
        // only committed steps, like the disk.
        self.close_deferred()?;
        // Copy the database page by page into memory, then serialize it.
        let mut copy = Connection::open_in_memory().map_err(WalletError::from_sqlite)?;
        {
            let b = Backup::new(&self.conn, &mut copy).map_err(WalletError::from_sqlite)?;
            b.run_to_completion(256, std::time::Duration::ZERO, None)
                .map_err(WalletError::from_sqlite)?;
        }
        let db = copy
            .serialize(rusqlite::MAIN_DB)
            .map_err(WalletError::from_sqlite)?;
        let mut payload = zeroize::Zeroizing::new(Vec::with_capacity(32 + db.len()));
        payload.extend_from_slice(&self.identity.seed());
        payload.extend_from_slice(&db);
        let salt: [u8; SALT_LEN] = keys::random().map_err(WalletError::random)?;
        let key = keys.key(&salt)?;
        // The header is the associated data, so every field of it is fixed before sealing: the
        // nonce is chosen here and the length is the payload's plus the 16-byte tag.
        let nonce: [u8; 24] = keys::random().map_err(WalletError::random)?;
        let header = Header {
            wallet: self.id(),
            made_at_ms: self.clock.now_ms(),
            salt,
            nonce,
            check: key.check_value(),
            len: (payload.len() + 16) as u64,
        };
        let ciphertext = keys::seal_with_nonce(&key, &header.encode(), &payload, nonce);
        let mut file = header.encode();
        file.extend_from_slice(&ciphertext);
        let tmp = path.with_extension("partial");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&file)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| WalletError::io(path, e))?;
        Ok(BackupInfo {
            wallet: header.wallet,
            made_at_ms: header.made_at_ms,
            bytes: file.len() as u64,
        })
    }

    /// Restore the backup at `path` into `dir` (empty or missing), opening it with
    /// `backup_keys` and sealing the identity anew under `wallet_keys`. With `expected`, a
    /// backup of another wallet is refused. The restored wallet resyncs every channel with its
    /// friend when opened, so payments made after the backup are recovered from the friends'
    /// signed states. Nothing is written to `dir` unless the whole backup checks out.
    pub fn restore(
        path: &Path,
        dir: &Path,
        backup_keys: &dyn KeyStore,
        wallet_keys: &dyn KeyStore,
        expected: Option<NodeId>,
        options: WalletOptions,
    ) -> Result<Wallet, WalletError> {
        let file = std::fs::read(path).map_err(|e| WalletError::io(path, e))?;
        let h = Header::decode(&file)?;
        check_length(&h, &file)?;
        if let Some(expected) = expected
            && expected != h.wallet
        {
            return Err(BackupError::ForAnotherWallet {
                backup: h.wallet,
                expected,
            }
            .into());
        }
        if dir.join(DB_FILE).exists() {
            return Err(BackupError::DirectoryNotEmpty {
                dir: dir.display().to_string(),
            }
            .into());
        }
        let key = backup_keys.key(&h.salt)?;
        let sealed = Sealed {
            nonce: h.nonce,
            check: h.check,
            ciphertext: file.get(HEADER_LEN..).unwrap_or_default().to_vec(),
        };
        let payload = keys::open(&key, &h.encode(), &sealed).map_err(|e| match e {
            SealError::WrongKey => BackupError::WrongKey,
            SealError::Damaged => BackupError::Damaged,
        })?;
        let seed: [u8; 32] = payload
            .get(..32)
            .and_then(|s| s.try_into().ok())
            .ok_or(BackupError::Damaged)?;
        let identity = Identity::from_seed(seed);
        if identity.id() != h.wallet {
            return Err(BackupError::Damaged.into());
        }
        let db = payload.get(32..).unwrap_or_default();

        std::fs::create_dir_all(dir).map_err(|e| WalletError::io(dir, e))?;
        let lock = super::lock_dir(dir)?;
        let tmp = dir.join("wallet.db.restoring");
        let _ = std::fs::remove_file(&tmp);
        std::fs::write(&tmp, db).map_err(|e| WalletError::io(&tmp, e))?;
        let prepared = (|| {
            let conn = store::connect(&tmp, options.durability)?;
            let found = store::version(&conn)?;
            if found > store::SCHEMA_VERSION {
                return Err(WalletError::NewerSchema {
                    found,
                    supported: store::SCHEMA_VERSION,
                });
            }
            if super::stored_id(&conn)? != Some(h.wallet) {
                return Err(BackupError::Damaged.into());
            }
            super::store_identity(&conn, &identity, wallet_keys)?;
            store::put_meta(&conn, "restore_pending", &h.made_at_ms.to_le_bytes())?;
            // Fold the WAL into the file, so the rename moves everything.
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(WalletError::from_sqlite)?;
            drop(conn);
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| WalletError::io(&tmp, e))?;
            std::fs::rename(&tmp, dir.join(DB_FILE)).map_err(|e| WalletError::io(dir, e))
        })();
        if let Err(e) = prepared {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(dir.join("wallet.db.restoring-wal"));
            let _ = std::fs::remove_file(dir.join("wallet.db.restoring-shm"));
            return Err(e);
        }
        drop(lock);
        Wallet::open(dir, wallet_keys, options)
    }
}
