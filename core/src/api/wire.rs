//! The messages between an app and `offst serve`, on a local socket: 4-byte length-prefixed
//! postcard frames ([`crate::net::frame`]), at most [`MAX_API_FRAME`] bytes.
//!
//! 1. On connecting, the wallet sends [`Hello`]: the API version, the wallet's id and a fresh
//!    random challenge.
//! 2. The app sends [`Request`]s: its key, a sequence number that grows by at least one per
//!    request, the [`Call`], and its signature over (challenge, sequence, call). A request
//!    copied from another connection fails the signature (another challenge); one sent again
//!    on the same connection fails the sequence. Neither reaches the wallet.
//! 3. The wallet answers each with a [`Response`] carrying the same sequence number. Calls run
//!    side by side, so answers may come in another order than the requests.

use serde::{Deserialize, Serialize};

use crate::protocol::identity::{Identity, NodeId, Signature};
use crate::protocol::payment::InvoiceId;

/// The version of this protocol; the wallet refuses requests from another.
pub const API_VERSION: u16 = 1;

/// Largest frame either side accepts.
pub const MAX_API_FRAME: usize = 64 * 1024;

const REQUEST_DOMAIN: &str = "offst app request v1";

/// The wallet's greeting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`API_VERSION`] of the wallet.
    pub version: u16,
    /// The wallet's id.
    pub wallet: NodeId,
    /// Signed into every request of this connection.
    pub challenge: [u8; 32],
}

/// One signed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`API_VERSION`] of the app.
    pub version: u16,
    /// The app's key.
    pub app: NodeId,
    /// Greater than the sequence number of the app's previous request on this connection.
    pub seq: u64,
    /// What the app asks.
    pub call: Call,
    /// The app's signature over (challenge, seq, call).
    pub signature: Signature,
}

#[derive(Serialize)]
struct Signed<'a> {
    challenge: &'a [u8; 32],
    seq: u64,
    call: &'a Call,
}

impl Request {
    /// A request signed by `app` for the connection that sent `challenge`.
    pub fn sign(app: &Identity, challenge: &[u8; 32], seq: u64, call: Call) -> Request {
        let signature = app.sign(
            REQUEST_DOMAIN,
            &Signed {
                challenge,
                seq,
                call: &call,
            },
        );
        Request {
            version: API_VERSION,
            app: app.id(),
            seq,
            call,
            signature,
        }
    }

    /// Whether `app` signed this request for the connection that sent `challenge`.
    pub fn verify(&self, challenge: &[u8; 32]) -> bool {
        self.app
            .verify(
                REQUEST_DOMAIN,
                &Signed {
                    challenge,
                    seq: self.seq,
                    call: &self.call,
                },
                &self.signature,
            )
            .is_ok()
    }
}

/// What an app may do; each [`Call`] needs one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Balances, friends and history.
    Read,
    /// Create invoices and see how they end.
    Receive,
    /// Pay payment requests, within a spending limit per 24 hours.
    Pay,
    /// Friends, limits and the relay.
    Manage,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Receive,
        Permission::Pay,
        Permission::Manage,
    ];

    /// Its name: `read`, `receive`, `pay`, `manage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Receive => "receive",
            Permission::Pay => "pay",
            Permission::Manage => "manage",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Receive => 2,
            Permission::Pay => 4,
            Permission::Manage => 8,
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Permissions(u8);

impl Permissions {
    /// No permission.
    pub const NONE: Permissions = Permissions(0);

    /// The set holding `list`.
    pub fn of(list: &[Permission]) -> Permissions {
        Permissions(list.iter().fold(0, |acc, p| acc | p.bit()))
    }

    /// Whether `p` is in the set.
    pub fn allows(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// The members, in [`Permission::ALL`]'s order.
    pub fn list(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.allows(*p))
            .collect()
    }

    /// The stored form.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From the stored form; unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Permissions {
        Permissions(bits & 0x0f)
    }

    /// Parse `read,receive,pay,manage` (any subset, comma-separated).
    pub fn parse(text: &str) -> Result<Permissions, String> {
        let mut list = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let p = Permission::ALL
                .into_iter()
                .find(|p| p.as_str() == word)
                .ok_or_else(|| {
                    format!("{word:?} is not a permission; say read, receive, pay or manage")
                })?;
            list.push(p);
        }
        if list.is_empty() {
            return Err("no permission given; say read, receive, pay or manage".into());
        }
        Ok(Permissions::of(&list))
    }
}

impl std::fmt::Display for Permissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.list().into_iter().map(Permission::as_str).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// What an app asks of the wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// The balance per currency and with each friend (`read`).
    Balances,
    /// The newest `limit` history rows (`read`; at most 500).
    History {
        /// How many.
        limit: u32,
    },
    /// Issue an invoice (`receive`).
    CreateInvoice {
        /// Its currency.
        currency: String,
        /// What is asked.
        amount: u64,
        /// What it is for (shown to the buyer).
        memo: String,
        /// Minutes until it expires (1 to 10,080).
        minutes: u32,
    },
    /// How an invoice this app created stands; waits up to `wait_ms` (at most 60,000) for it
    /// to be paid or to expire (`receive`).
    InvoiceStatus {
        /// The invoice.
        invoice: InvoiceId,
        /// How long to wait for it to end.
        wait_ms: u32,
    },
    /// Pay a payment request (`OFFSTP1...` or `offst:OFFSTP1...`) and wait for the receipt
    /// (`pay`, within the app's limit).
    Pay {
        /// The payment request's text.
        request: String,
    },
    /// An invitation to become friends (`manage`).
    Invite {
        /// Our name, as the friend will see it.
        name: String,
        /// Hours until it expires (1 to 720).
        hours: u32,
    },
    /// Accept an invitation (`manage`).
    AcceptInvitation {
        /// The invitation's text.
        invitation: String,
        /// Our name, as they will see it.
        name: String,
    },
    /// Let a friend owe us up to `amount` (`manage`).
    SetLimit {
        /// The friend.
        friend: NodeId,
        /// The currency.
        currency: String,
        /// The most they may owe us.
        amount: u64,
    },
    /// Use this relay (`KEY@HOST:PORT`; `manage`).
    SetRelay {
        /// The relay's address.
        relay: String,
    },
}

impl Call {
    /// The permission the call needs.
    pub fn needs(&self) -> Permission {
        match self {
            Call::Balances | Call::History { .. } => Permission::Read,
            Call::CreateInvoice { .. } | Call::InvoiceStatus { .. } => Permission::Receive,
            Call::Pay { .. } => Permission::Pay,
            Call::Invite { .. }
            | Call::AcceptInvitation { .. }
            | Call::SetLimit { .. }
            | Call::SetRelay { .. } => Permission::Manage,
        }
    }

    /// A short description for history.
    pub fn describe(&self) -> String {
        match self {
            Call::Balances => "read balances".into(),
            Call::History { limit } => format!("read {limit} history rows"),
            Call::CreateInvoice {
                currency, amount, ..
            } => format!("create an invoice for {amount} {currency}"),
            Call::InvoiceStatus { invoice, .. } => {
                let id: String = invoice.to_string().chars().take(8).collect();
                format!("follow invoice {id}")
            }
            Call::Pay { .. } => "pay a payment request".into(),
            Call::Invite { .. } => "make an invitation".into(),
            Call::AcceptInvitation { .. } => "accept an invitation".into(),
            Call::SetLimit {
                friend,
                currency,
                amount,
            } => format!("set {}'s limit to {amount} {currency}", friend.short()),
            Call::SetRelay { relay } => format!("use relay {relay}"),
        }
    }
}

/// One friend's balance in one currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendBalance {
    /// The friend.
    pub friend: NodeId,
    /// The name we gave the friend.
    pub name: String,
    /// The currency.
    pub currency: String,
    /// What the friend owes us (negative: what we owe).
    pub balance: i64,
    /// The most the friend may owe us.
    pub our_limit: u64,
    /// The most we may owe the friend.
    pub their_limit: u64,
}

/// One history row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Position in history.
    pub seq: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The kind (`invoice_paid`, `app_action`, ...).
    pub kind: String,
    /// The amount, with its sign from our side.
    pub amount: Option<i64>,
    /// Its currency.
    pub currency: Option<String>,
    /// A sentence for people.
    pub detail: String,
}

/// How an invoice stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceState {
    /// Not paid yet.
    Open,
    /// The buyer committed: the money is on its way and cannot be taken back.
    Paid,
    /// Expired unpaid; it can no longer be paid.
    Cancelled,
}

/// The wallet's answer to a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Call::Balances`].
    Balances {
        /// Per currency.
        totals: Vec<(String, i64)>,
        /// Per friend and currency.
        friends: Vec<FriendBalance>,
    },
    /// To [`Call::History`], newest first.
    History(Vec<HistoryItem>),
    /// To [`Call::CreateInvoice`].
    Invoice {
        /// Its id.
        invoice: InvoiceId,
        /// The payment request to show the buyer (text, as in a QR code).
        request: String,
        /// The same as an `offst:` link.
        uri: String,
        /// When it expires.
        expires_at_ms: u64,
    },
    /// To [`Call::InvoiceStatus`].
    InvoiceStatus {
        /// The invoice.
        invoice: InvoiceId,
        /// How it stands.
        state: InvoiceState,
        /// What it asks.
        amount: u64,
        /// In this currency.
        currency: String,
        /// Its memo.
        memo: String,
    },
    /// To [`Call::Pay`]: paid.
    Paid {
        /// The invoice.
        invoice: InvoiceId,
        /// The amount the seller received.
        amount: u64,
        /// The receipt's text (`OFFSTR1...`), checkable offline.
        receipt: String,
    },
    /// To [`Call::Invite`].
    Invitation {
        /// The text.
        text: String,
        /// As an `offst:` link.
        uri: String,
    },
    /// Done (to calls with nothing to return).
    Done,
}

/// The wallet's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's sequence number (0 when the request could not be read).
    pub seq: u64,
    /// The answer.
    pub result: Result<Reply, ApiError>,
}

/// Why a request was refused. Every refusal is also recorded in the wallet's history (repeats
/// of one reason on one connection as a single row when it ends; see [`super::server`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApiError {
    /// The key is not one the owner granted anything.
    #[error(
        "app key {app} has no access to this wallet; its owner grants it with `offst apps add NAME {app} --allow PERMISSIONS`"
    )]
    UnknownApp {
        /// The key, as text.
        app: String,
    },
    /// The owner revoked this app.
    #[error("the owner revoked app {name:?}; ask them to add it again if this is a mistake")]
    Revoked {
        /// The app's name.
        name: String,
    },
    /// The signature does not match the key and this connection's challenge.
    #[error(
        "the request's signature does not match its key for this connection: forged, or copied from another connection"
    )]
    Forged,
    /// The sequence number is not above the previous request's.
    #[error("request number {seq} does not follow number {last}: a replay, refused")]
    Replayed {
        /// This request's number.
        seq: u64,
        /// The last number accepted on this connection.
        last: u64,
    },
    /// The app lacks the permission the call needs.
    #[error(
        "app {name:?} may not {permission}: it holds {holds}; the owner can change that with `offst apps add`"
    )]
    NotAllowed {
        /// The app's name.
        name: String,
        /// What the call needs.
        permission: Permission,
        /// What the app holds.
        holds: String,
    },
    /// Paying would take the app over its spending limit.
    #[error(
        "paying {asked} {currency} would take app {name:?} over its limit of {limit} {currency} per 24 hours ({spent} spent)"
    )]
    OverLimit {
        /// The app's name.
        name: String,
        /// Its limit per 24 hours.
        limit: u64,
        /// Spent in the last 24 hours.
        spent: u64,
        /// This payment, with fees.
        asked: u64,
        /// The currency.
        currency: String,
    },
    /// The app may pay only in its limit's currency.
    #[error("app {name:?} may pay only in {allowed}, not {asked}")]
    WrongCurrency {
        /// The app's name.
        name: String,
        /// Its limit's currency.
        allowed: String,
        /// The payment's.
        asked: String,
    },
    /// Too many requests; try again later.
    #[error("too many requests; try again in {retry_after_ms} ms")]
    RateLimited {
        /// How long to wait.
        retry_after_ms: u64,
    },
    /// The invoice was not created by this app.
    #[error("invoice {invoice} was not created by this app")]
    NotYours {
        /// The invoice id, as text.
        invoice: String,
    },
    /// The request could not be read or its values are out of range.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// Another version of this protocol.
    #[error("the app speaks API version {app}, the wallet {wallet}; update the older one")]
    Version {
        /// The app's.
        app: u16,
        /// The wallet's.
        wallet: u16,
    },
    /// The wallet refused (not enough credit, unknown friend, ...).
    #[error("the wallet refused: {reason}")]
    Wallet {
        /// Why.
        reason: String,
    },
    /// The payment did not go through; nothing was spent.
    #[error("not paid: {reason}")]
    NotPaid {
        /// Why.
        reason: String,
    },
}
