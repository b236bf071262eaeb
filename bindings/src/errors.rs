//! Errors by what the person was doing. Each variant's message (the foreign exception's
//! message) says what happened and what to do; the variant says which case it is, for code.

use offst_core::invite::InviteError as CoreInvite;
use offst_core::invite::PaymentRequest;
use offst_core::net::driver::WaitError;
use offst_core::net::payer::PayError as CorePay;
use offst_core::protocol::node::NodeError;
use offst_core::wallet::WalletError as CoreWallet;

/// A failure inside the library itself (a task that died, threads that could not start).
pub(crate) struct Internal(pub String);

/// Opening, creating, restoring or saving the wallet.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum WalletError {
    /// No wallet in the directory: create one or restore a backup.
    #[error("{0}")]
    NotFound(String),
    /// Another process or object has the wallet open.
    #[error("{0}")]
    InUse(String),
    /// A wallet exists there already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The database is damaged: restore a backup.
    #[error("{0}")]
    Damaged(String),
    /// Written by a newer app: update.
    #[error("{0}")]
    NewerVersion(String),
    /// The key store's key does not open this wallet (nothing was read or written).
    #[error("{0}")]
    WrongKey(String),
    /// The key store failed or refused (locked, prompt cancelled).
    #[error("{0}")]
    KeyStore(String),
    /// The disk is full; the last action was not saved.
    #[error("{0}")]
    DiskFull(String),
    /// A setting is malformed (the relay address).
    #[error("{0}")]
    BadConfig(String),
    /// Another storage failure.
    #[error("{0}")]
    Storage(String),
    /// A failure inside the library.
    #[error("{0}")]
    Internal(String),
}

impl From<CoreWallet> for WalletError {
    fn from(e: CoreWallet) -> WalletError {
        let m = e.to_string();
        match e {
            CoreWallet::NotFound { .. } => WalletError::NotFound(m),
            CoreWallet::InUse { .. } => WalletError::InUse(m),
            CoreWallet::AlreadyExists { .. } => WalletError::AlreadyExists(m),
            CoreWallet::Corrupt { .. } => WalletError::Damaged(m),
            CoreWallet::NewerSchema { .. } => WalletError::NewerVersion(m),
            CoreWallet::WrongKey => WalletError::WrongKey(m),
            CoreWallet::KeyStore(_) => WalletError::KeyStore(m),
            CoreWallet::DiskFull => WalletError::DiskFull(m),
            _ => WalletError::Storage(m),
        }
    }
}

impl From<Internal> for WalletError {
    fn from(e: Internal) -> WalletError {
        WalletError::Internal(e.0)
    }
}

/// Reading or making an invitation, a payment request or a receipt.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum InviteError {
    /// Not an Offst code at all.
    #[error("{0}")]
    NotOffst(String),
    /// The other kind (an invoice where an invitation was expected, or back).
    #[error("{0}")]
    WrongKind(String),
    /// Damaged (a typo, a cut, a bad scan): copy or scan it again.
    #[error("{0}")]
    Damaged(String),
    /// Expired: ask for a new one.
    #[error("{0}")]
    Expired(String),
    /// Not signed by whom it names: do not use it.
    #[error("{0}")]
    Forged(String),
    /// A newer format: update the app.
    #[error("{0}")]
    NewerVersion(String),
    /// Refused (already a friend, our own invitation, a bad amount, no relay yet).
    #[error("{0}")]
    Invalid(String),
    /// A failure inside the library.
    #[error("{0}")]
    Internal(String),
}

impl From<CoreInvite> for InviteError {
    fn from(e: CoreInvite) -> InviteError {
        let m = e.to_string();
        match e {
            CoreInvite::NotAnInvitation => InviteError::NotOffst(m),
            CoreInvite::WrongKind { .. } => InviteError::WrongKind(m),
            CoreInvite::BadCharacter(_) | CoreInvite::BadChecksum | CoreInvite::Malformed(_) => {
                InviteError::Damaged(m)
            }
            CoreInvite::Expired { .. } => InviteError::Expired(m),
            CoreInvite::BadSignature => InviteError::Forged(m),
            CoreInvite::UnknownVersion(_) => InviteError::NewerVersion(m),
            CoreInvite::Invalid(_) | CoreInvite::Qr(_) => InviteError::Invalid(m),
        }
    }
}

impl From<Internal> for InviteError {
    fn from(e: Internal) -> InviteError {
        InviteError::Internal(e.0)
    }
}

/// Dealing with a friend: limits, requests, details.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum FriendError {
    /// Not a key at all.
    #[error("{0}")]
    BadId(String),
    /// Not a friend (or no request from them).
    #[error("{0}")]
    UnknownFriend(String),
    /// The protocol refused (a bad currency, a limit below what they owe now, ...).
    #[error("{0}")]
    Refused(String),
    /// The wallet failed to store it.
    #[error("{0}")]
    Storage(String),
    /// A failure inside the library.
    #[error("{0}")]
    Internal(String),
}

impl From<WalletError> for FriendError {
    fn from(e: WalletError) -> FriendError {
        FriendError::Storage(e.to_string())
    }
}

impl From<CoreWallet> for FriendError {
    fn from(e: CoreWallet) -> FriendError {
        match e {
            CoreWallet::Refused(NodeError::UnknownFriend(_)) => {
                FriendError::UnknownFriend(e.to_string())
            }
            CoreWallet::Refused(n) => FriendError::Refused(n.to_string()),
            e => FriendError::Storage(e.to_string()),
        }
    }
}

impl From<Internal> for FriendError {
    fn from(e: Internal) -> FriendError {
        FriendError::Internal(e.0)
    }
}

/// Paying a payment request.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum PayError {
    /// The request is damaged, forged, or not a payment request.
    #[error("{0}")]
    BadRequest(String),
    /// The request expired: ask the seller for a new one.
    #[error("{0}")]
    Expired(String),
    /// No set of routes can carry the amount now (friends' limits, or not connected to the
    /// seller through friends).
    #[error("{0}")]
    NoRoute(String),
    /// Not enough credit with the first friend of a route.
    #[error("{0}")]
    NotEnoughCredit(String),
    /// Every route was refused on the way; nothing moved.
    #[error("{0}")]
    Cancelled(String),
    /// Routes kept failing; abandoned, nothing moved.
    #[error("{0}")]
    GaveUp(String),
    /// No receipt in time; the payment goes on and ends by the invoice's expiry.
    #[error("{0}")]
    Timeout(String),
    /// The relay could not be reached.
    #[error("{0}")]
    Offline(String),
    /// The wallet refused (already paying this invoice, ...).
    #[error("{0}")]
    Refused(String),
    /// A failure inside the library.
    #[error("{0}")]
    Internal(String),
}

impl From<CoreInvite> for PayError {
    fn from(e: CoreInvite) -> PayError {
        match e {
            CoreInvite::Expired { .. } => PayError::Expired(e.to_string()),
            e => PayError::BadRequest(e.to_string()),
        }
    }
}

impl From<Internal> for PayError {
    fn from(e: Internal) -> PayError {
        PayError::Internal(e.0)
    }
}

/// How a payment of `req` failed, as a [`PayError`].
pub(crate) fn pay_error(req: &PaymentRequest, e: CorePay) -> PayError {
    let t = &req.invoice.terms;
    let m = e.to_string();
    match e {
        CorePay::NoRoutes(c) => super::no_routes(req, c),
        CorePay::Wallet(CoreWallet::Refused(NodeError::InsufficientCapacity { .. })) => {
            PayError::NotEnoughCredit(m)
        }
        CorePay::Wallet(CoreWallet::Refused(NodeError::InvoiceExpired { .. })) => {
            PayError::Expired(format!("{m}; ask {} for a new invoice", t.seller))
        }
        CorePay::Wallet(_) => PayError::Refused(m),
        CorePay::Cancelled => PayError::Cancelled(format!("{m}; ask the seller for a new invoice")),
        CorePay::GaveUp { .. } => {
            PayError::GaveUp(format!("{m}; ask the seller for a new invoice"))
        }
        CorePay::Timeout(_) => PayError::Timeout(m),
    }
}

/// Reaching the relay.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum NetworkError {
    /// No relay chosen yet.
    #[error("{0}")]
    NoRelay(String),
    /// The relay could not be reached in time.
    #[error("{0}")]
    Unreachable(String),
    /// Connected, but mail still waiting when time ran out.
    #[error("{0}")]
    NotSynced(String),
    /// The wallet was closed.
    #[error("{0}")]
    Closed(String),
    /// The wallet failed.
    #[error("{0}")]
    Storage(String),
    /// A failure inside the library.
    #[error("{0}")]
    Internal(String),
}

impl From<WaitError> for NetworkError {
    fn from(e: WaitError) -> NetworkError {
        let m = e.to_string();
        match e {
            WaitError::NoRelay => NetworkError::NoRelay(m),
            WaitError::Stopped => NetworkError::Closed(m),
            WaitError::Unreachable { .. } => NetworkError::Unreachable(m),
            WaitError::NotSynced { .. } => NetworkError::NotSynced(m),
            WaitError::Wallet(_) => NetworkError::Storage(m),
        }
    }
}

impl From<Internal> for NetworkError {
    fn from(e: Internal) -> NetworkError {
        NetworkError::Internal(e.0)
    }
}

/// What a platform key store says when it can't give the key. (Not flat: the foreign side
/// throws it, so it must cross back with its reason.)
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum KeyStoreError {
    /// Locked, refused (a cancelled prompt), or failed: `reason` says which, for people.
    #[error("{reason}")]
    Unavailable {
        /// For people.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeyStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> KeyStoreError {
        KeyStoreError::Unavailable {
            reason: format!("the key store failed: {}", e.reason),
        }
    }
}
