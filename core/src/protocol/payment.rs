//! The payment objects: invoice, request, response, commit and receipt.
//!
//! Flow (see `docs/protocol.md` for the sequence diagram):
//! 1. the seller signs an [`Invoice`];
//! 2. the buyer signs one [`Request`] per route, all sharing one hashed lock, and each hop freezes
//!    the request's amount for that hop;
//! 3. the seller answers each request with a [`Response`] signed over the request's terms and a
//!    hashed lock of its own;
//! 4. once responses cover the invoice the buyer sends a [`Commit`] to the seller, revealing its
//!    lock;
//! 5. the seller collects every committed route hop by hop with both plain locks, and the buyer
//!    ends with a [`Receipt`] anyone can check with the seller's public key.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::amount::{Currency, CurrencyError};
use super::bounds::{MAX_AMOUNT, MAX_MEMO_LEN, MAX_ROUTE_LEN, MAX_ROUTES_PER_PAYMENT};
use super::identity::{BadSignature, Hash, Identity, NodeId, Signature, SignatureBatch};

const INVOICE_DOMAIN: &str = "offst invoice v1";
const REQUEST_DOMAIN: &str = "offst request v1";
const RESPONSE_DOMAIN: &str = "offst response v1";
const ABANDON_DOMAIN: &str = "offst abandon v1";

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        super::identity::fixed_newtype_serde!($name);

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                for b in &self.0[..4] {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            /// Read the 64 hex characters [`std::fmt::Display`] writes (either case).
            fn from_str(text: &str) -> Result<$name, String> {
                let bytes = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(text.trim().as_bytes())
                    .map_err(|_| format!("{text:?} is not 64 hex characters"))?;
                let bytes: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| format!("{text:?} is not 64 hex characters"))?;
                Ok($name(bytes))
            }
        }

        impl std::fmt::Display for $name {
            /// Lowercase hex, 64 characters.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    };
}

id32!(
    /// Identifies one invoice; chosen at random by the seller.
    InvoiceId
);
id32!(
    /// Identifies one request (one route of a payment); chosen at random by the buyer.
    RequestId
);
id32!(
    /// A secret whose hash locks a payment. Revealing it is what makes the payment collectable.
    PlainLock
);
id32!(
    /// The BLAKE3 hash of a [`PlainLock`].
    HashedLock
);

impl PlainLock {
    /// The lock this secret opens.
    pub fn hashed(&self) -> HashedLock {
        HashedLock(Hash::of_bytes("offst lock v1", &self.0).0)
    }
}

/// Why a payment object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// A signature did not verify.
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
    /// A bad currency name.
    #[error(transparent)]
    Currency(#[from] CurrencyError),
    /// The memo is too long.
    #[error("an invoice memo has at most {MAX_MEMO_LEN} bytes, this one has {0}")]
    MemoTooLong(usize),
    /// An amount of zero or above the protocol's maximum.
    #[error("amount {0} is out of range: it must be between 1 and {MAX_AMOUNT}")]
    AmountOutOfRange(u64),
    /// A route shorter than buyer+seller or longer than the bound.
    #[error("a route has 2 to {MAX_ROUTE_LEN} nodes (buyer and seller included), this one has {0}")]
    RouteLength(usize),
    /// The fee list does not have one entry per mediator.
    #[error("a route with {mediators} mediators needs {mediators} fees, not {fees}")]
    FeeCount {
        /// Mediators on the route.
        mediators: usize,
        /// Fees given.
        fees: usize,
    },
    /// A node appears twice on a route.
    #[error("node {0} appears twice on the route")]
    RouteLoop(NodeId),
    /// The sum of amounts or fees overflows the protocol's maximum.
    #[error("the amounts on this route add up to more than {MAX_AMOUNT}")]
    AmountOverflow,
    /// The request's terms do not match the invoice it claims to pay.
    #[error("the request does not match its invoice: {0}")]
    InvoiceMismatch(&'static str),
    /// Too many routes for one payment.
    #[error("a payment may use at most {MAX_ROUTES_PER_PAYMENT} routes, not {0}")]
    TooManyRoutes(usize),
    /// A plain lock does not open the hashed lock it should.
    #[error("the revealed {0} lock does not match its hash")]
    WrongLock(&'static str),
}

/// What the seller asks for. Signed by the seller; anyone can check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceTerms {
    /// Random id chosen by the seller.
    pub id: InvoiceId,
    /// Who gets paid.
    pub seller: NodeId,
    /// The currency of `amount`.
    pub currency: Currency,
    /// What must reach the seller, fees not included.
    pub amount: u64,
    /// When the seller stops accepting commits, in milliseconds since the Unix epoch by the
    /// seller's clock. After it, with no commit, the seller cancels every route.
    pub expires_at_ms: u64,
    /// A note from the seller to the buyer.
    pub memo: String,
}

/// A signed invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// The terms.
    pub terms: InvoiceTerms,
    /// The seller's signature over the terms.
    pub signature: Signature,
}

impl Invoice {
    /// Sign new terms. Checks bounds first.
    pub fn sign(identity: &Identity, terms: InvoiceTerms) -> Result<Invoice, PaymentError> {
        check_terms(&terms)?;
        if terms.seller != identity.id() {
            return Err(PaymentError::InvoiceMismatch(
                "the seller must sign its own invoice",
            ));
        }
        let signature = identity.sign(INVOICE_DOMAIN, &terms);
        Ok(Invoice { terms, signature })
    }

    /// Check the bounds and the seller's signature.
    pub fn verify(&self) -> Result<(), PaymentError> {
        check_terms(&self.terms)?;
        self.terms
            .seller
            .verify(INVOICE_DOMAIN, &self.terms, &self.signature)?;
        Ok(())
    }

    /// Check the bounds now and put the seller's signature into `batch`, to be checked with
    /// others (a payment request's own signature, by the same seller): the invoice is checked
    /// once the batch verifies.
    pub fn queue_check(
        &self,
        batch: &mut crate::protocol::identity::SignatureBatch,
    ) -> Result<(), PaymentError> {
        check_terms(&self.terms)?;
        batch.queue(
            &self.terms.seller,
            INVOICE_DOMAIN,
            &self.terms,
            &self.signature,
        );
        Ok(())
    }
}

fn check_terms(terms: &InvoiceTerms) -> Result<(), PaymentError> {
    if terms.memo.len() > MAX_MEMO_LEN {
        return Err(PaymentError::MemoTooLong(terms.memo.len()));
    }
    check_amount(terms.amount)
}

fn check_amount(amount: u64) -> Result<(), PaymentError> {
    if amount == 0 || amount > MAX_AMOUNT {
        return Err(PaymentError::AmountOutOfRange(amount));
    }
    Ok(())
}

/// The terms of one route of a payment, fixed and signed by the buyer (`route[0]`).
///
/// Each hop's frozen amount is derived from these terms, never sent separately, so a mediator
/// cannot keep more than the fee the buyer quoted: changing anything breaks the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTerms {
    /// Random id chosen by the buyer, one per route.
    pub request_id: RequestId,
    /// The invoice this pays.
    pub invoice_id: InvoiceId,
    /// Currency of every amount here.
    pub currency: Currency,
    /// The buyer's hashed lock, the same on every route of one payment.
    pub src_hashed_lock: HashedLock,
    /// Buyer, mediators, seller, in order.
    pub route: Vec<NodeId>,
    /// The fee each mediator gets, in route order: `fees[i]` is for `route[i + 1]`.
    pub fees: Vec<u64>,
    /// What this route delivers to the seller.
    pub dest_payment: u64,
    /// The invoice's amount (what all routes together must deliver).
    pub total_dest_payment: u64,
}

/// A request: terms plus the buyer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The terms, shared by every copy of the request: a request is copied into each move
    /// that carries it, each channel's pending requests and each hop's forward, and its
    /// route and fees are never changed once signed. Encoded as the terms themselves.
    pub terms: std::sync::Arc<RequestTerms>,
    /// The buyer's signature over the terms.
    pub signature: Signature,
}

/// The amount frozen on hop `k` of a route that delivers `dest_payment` with mediator `fees`:
/// `dest_payment` plus the fees of every mediator after `route[k]`; `None` past [`MAX_AMOUNT`].
/// The one rule: requests, the buyer's budget check and the index's route search all use it.
pub fn hop_amount(dest_payment: u64, fees: &[u64], k: usize) -> Option<u64> {
    let mut total = u128::from(dest_payment);
    for fee in fees.get(k..).unwrap_or(&[]) {
        total = total.checked_add(u128::from(*fee))?;
    }
    u64::try_from(total).ok().filter(|t| *t <= MAX_AMOUNT)
}

impl RequestTerms {
    /// Structural checks: route length, fee count, no loops, amounts in range.
    pub fn check(&self) -> Result<(), PaymentError> {
        let n = self.route.len();
        if !(2..=MAX_ROUTE_LEN).contains(&n) {
            return Err(PaymentError::RouteLength(n));
        }
        if self.fees.len() != n - 2 {
            return Err(PaymentError::FeeCount {
                mediators: n - 2,
                fees: self.fees.len(),
            });
        }
        let mut seen = BTreeSet::new();
        for node in &self.route {
            if !seen.insert(*node) {
                return Err(PaymentError::RouteLoop(*node));
            }
        }
        check_amount(self.dest_payment)?;
        check_amount(self.total_dest_payment)?;
        // The largest hop amount is the first; if it fits, every hop fits.
        self.hop_amount(0).ok_or(PaymentError::AmountOverflow)?;
        Ok(())
    }

    /// The amount frozen on hop `k`, from `route[k]` to `route[k + 1]`: what reaches the seller
    /// plus the fees of every mediator after `route[k]`.
    pub fn hop_amount(&self, k: usize) -> Option<u64> {
        hop_amount(self.dest_payment, &self.fees, k)
    }

    /// The buyer.
    pub fn buyer(&self) -> Option<NodeId> {
        self.route.first().copied()
    }

    /// The seller.
    pub fn seller(&self) -> Option<NodeId> {
        self.route.last().copied()
    }

    /// Where `node` stands on the route.
    pub fn position(&self, node: &NodeId) -> Option<usize> {
        self.route.iter().position(|n| n == node)
    }
}

impl Request {
    /// Sign terms as the buyer. Checks them first.
    pub fn sign(buyer: &Identity, terms: RequestTerms) -> Result<Request, PaymentError> {
        terms.check()?;
        if terms.buyer() != Some(buyer.id()) {
            return Err(PaymentError::InvoiceMismatch(
                "the buyer must be the first node of the route",
            ));
        }
        let signature = buyer.sign(REQUEST_DOMAIN, &terms);
        Ok(Request {
            terms: std::sync::Arc::new(terms),
            signature,
        })
    }

    /// Structural checks and the buyer's signature.
    pub fn verify(&self) -> Result<(), PaymentError> {
        self.terms.check()?;
        let buyer = self.terms.buyer().ok_or(PaymentError::RouteLength(0))?;
        buyer.verify(REQUEST_DOMAIN, &self.terms, &self.signature)?;
        Ok(())
    }

    /// Structural checks now; the buyer's signature goes into `batch`, which the caller checks
    /// before it relies on the request.
    pub fn check_into(&self, batch: &mut SignatureBatch) -> Result<(), PaymentError> {
        self.terms.check()?;
        let buyer = self.terms.buyer().ok_or(PaymentError::RouteLength(0))?;
        batch.queue(&buyer, REQUEST_DOMAIN, &self.terms, &self.signature);
        Ok(())
    }
}

/// What the seller signs when it answers a request: every term a buyer or mediator relies on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseTerms {
    /// The route this answers.
    pub request_id: RequestId,
    /// The invoice.
    pub invoice_id: InvoiceId,
    /// The currency.
    pub currency: Currency,
    /// What this route delivers.
    pub dest_payment: u64,
    /// The invoice amount.
    pub total_dest_payment: u64,
    /// The buyer's hashed lock.
    pub src_hashed_lock: HashedLock,
    /// The seller's hashed lock, revealed only when the seller collects.
    pub dest_hashed_lock: HashedLock,
}

/// The seller's answer to one request, carried back along the route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The seller's hashed lock.
    pub dest_hashed_lock: HashedLock,
    /// The seller's signature over [`ResponseTerms`] built from the request and this lock.
    pub signature: Signature,
}

impl Response {
    /// The terms this response signs, for a given request.
    pub fn terms_for(request: &RequestTerms, dest_hashed_lock: HashedLock) -> ResponseTerms {
        ResponseTerms {
            request_id: request.request_id,
            invoice_id: request.invoice_id,
            currency: request.currency,
            dest_payment: request.dest_payment,
            total_dest_payment: request.total_dest_payment,
            src_hashed_lock: request.src_hashed_lock,
            dest_hashed_lock,
        }
    }

    /// Answer `request` as its seller.
    pub fn sign(
        seller: &Identity,
        request: &RequestTerms,
        dest_hashed_lock: HashedLock,
    ) -> Response {
        let terms = Response::terms_for(request, dest_hashed_lock);
        Response {
            dest_hashed_lock,
            signature: seller.sign(RESPONSE_DOMAIN, &terms),
        }
    }

    /// Check that the request's seller signed this answer to it.
    pub fn verify(&self, request: &RequestTerms) -> Result<(), PaymentError> {
        let seller = request.seller().ok_or(PaymentError::RouteLength(0))?;
        let terms = Response::terms_for(request, self.dest_hashed_lock);
        seller.verify(RESPONSE_DOMAIN, &terms, &self.signature)?;
        Ok(())
    }

    /// Like [`Response::verify`], with the seller's signature put into `batch`, which the
    /// caller checks before it relies on the answer.
    pub fn check_into(
        &self,
        request: &RequestTerms,
        batch: &mut SignatureBatch,
    ) -> Result<(), PaymentError> {
        let seller = request.seller().ok_or(PaymentError::RouteLength(0))?;
        let terms = Response::terms_for(request, self.dest_hashed_lock);
        batch.queue(&seller, RESPONSE_DOMAIN, &terms, &self.signature);
        Ok(())
    }
}

/// Sent by the buyer directly to the seller once responses cover the invoice: reveals the
/// buyer's lock and names the routes it pays with. Nobody but the buyer knows the lock, so a
/// commit needs no signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The invoice.
    pub invoice_id: InvoiceId,
    /// The buyer's secret.
    pub src_plain_lock: PlainLock,
    /// The routes (requests) that pay the invoice.
    pub request_ids: Vec<RequestId>,
}

/// The seller's word to the buyer, sent directly once it accepted the buyer's commit: its own
/// secret, which with the buyer's secret and the seller's signed responses the buyer already
/// holds makes the receipt. It saves the buyer waiting for the collects to come back hop by
/// hop (they still do, and move the credit). No signature: only the seller knows the secret,
/// and the buyer checks it against the responses' lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paid {
    /// The invoice.
    pub invoice_id: InvoiceId,
    /// The seller's secret (opens every route's `dest_hashed_lock`).
    pub dest_plain_lock: PlainLock,
}

/// The seller's word to the buyer once it accepted an early commit ([`Commit`] sent with the
/// requests): its secret and its signed response to each route it collects. The responses
/// travel hop by hop only with the collects, so the buyer learns them here; it checks each
/// against the request it signed and the secret against each, and builds its receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The invoice.
    pub invoice_id: InvoiceId,
    /// The seller's secret (opens every response's `dest_hashed_lock`).
    pub dest_plain_lock: PlainLock,
    /// The seller's response to each route it collects.
    pub responses: Vec<(RequestId, Response)>,
}

/// What a buyer signs to give up a payment it has not committed: the invoice and the lock its
/// requests carry (which binds the signature to this buyer's attempt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbandonTerms {
    /// The invoice.
    pub invoice_id: InvoiceId,
    /// The buyer's hashed lock.
    pub src_hashed_lock: HashedLock,
}

/// Sent by the buyer directly to the seller: "I will not commit; cancel my routes now rather
/// than at expiry". Signed by the buyer, so nobody else can cancel a payment in progress. The
/// seller still decides: an invoice already committed stays committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abandon {
    /// The terms.
    pub terms: AbandonTerms,
    /// Who signs: the buyer, whose key signed the requests carrying this lock.
    pub buyer: NodeId,
    /// The buyer's signature.
    pub signature: Signature,
}

impl Abandon {
    /// Sign as the buyer.
    pub fn sign(buyer: &Identity, terms: AbandonTerms) -> Abandon {
        Abandon {
            signature: buyer.sign(ABANDON_DOMAIN, &terms),
            buyer: buyer.id(),
            terms,
        }
    }

    /// Check the signature of the claimed buyer.
    pub fn verify(&self) -> Result<(), PaymentError> {
        self.buyer
            .verify(ABANDON_DOMAIN, &self.terms, &self.signature)?;
        Ok(())
    }
}

/// Proof that a seller was paid: the seller's signed response to one route of the payment and
/// both secrets. The seller reveals its secret only after it accepted the buyer's commit, so
/// the receipt shows the invoice was paid in full.
///
/// A `Receipt` obtained from [`Receipt::verify`]'s `Ok` has been checked; check any receipt you
/// did not build yourself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Who was paid.
    pub seller: NodeId,
    /// What the seller signed.
    pub terms: ResponseTerms,
    /// The seller's signature.
    pub signature: Signature,
    /// The buyer's secret (opens `terms.src_hashed_lock`).
    pub src_plain_lock: PlainLock,
    /// The seller's secret (opens `terms.dest_hashed_lock`).
    pub dest_plain_lock: PlainLock,
}

impl Receipt {
    /// The receipt for `request`, from the seller's `response` to it and the two secrets. It
    /// verifies if the response's signature does and the secrets open both locks.
    pub fn from_response(
        seller: NodeId,
        request: &RequestTerms,
        response: &Response,
        src_plain_lock: PlainLock,
        dest_plain_lock: PlainLock,
    ) -> Receipt {
        Receipt {
            seller,
            terms: Response::terms_for(request, response.dest_hashed_lock),
            signature: response.signature,
            src_plain_lock,
            dest_plain_lock,
        }
    }

    /// Check the receipt offline with nothing but the seller's public key.
    pub fn verify(&self) -> Result<(), PaymentError> {
        if self.src_plain_lock.hashed() != self.terms.src_hashed_lock {
            return Err(PaymentError::WrongLock("buyer's"));
        }
        if self.dest_plain_lock.hashed() != self.terms.dest_hashed_lock {
            return Err(PaymentError::WrongLock("seller's"));
        }
        self.seller
            .verify(RESPONSE_DOMAIN, &self.terms, &self.signature)?;
        Ok(())
    }

    /// The invoice this receipt is for.
    pub fn invoice_id(&self) -> InvoiceId {
        self.terms.invoice_id
    }

    /// The invoice amount that was paid.
    pub fn amount(&self) -> u64 {
        self.terms.total_dest_payment
    }
}
