//! `offst serve`'s side of the app interface: a Unix socket, one task per connection.
//!
//! Every request is checked in this order before it touches the wallet, and the first check
//! that fails answers it:
//!
//! 1. the connection's own rate (so a flood costs a counter, not a signature check);
//! 2. the protocol version;
//! 3. the key has a grant ([`ApiError::UnknownApp`]);
//! 4. the signature over this connection's challenge ([`ApiError::Forged`]);
//! 5. the sequence number is above the last one ([`ApiError::Replayed`]);
//! 6. the grant is not revoked ([`ApiError::Revoked`]; read from `apps.db` for every request);
//! 7. the app's own rate, shared by all its connections ([`ApiError::RateLimited`]);
//! 8. the permission the call needs ([`ApiError::NotAllowed`]);
//! 9. for payments, the app's limit ([`ApiError::OverLimit`]), reserved before paying.
//!
//! What an app did or tried goes into the wallet's history under its name (`app_action`,
//! `app_refused`). A refusal by these checks is recorded the first time for each reason on a
//! connection, and its repeats as one row when the connection ends; reads (balances, history,
//! an invoice's state) are recorded once per kind and connection. So neither a flood of bad
//! requests nor an app that polls fills the history or holds the wallet; every change, and
//! every refusal of a call that passed the checks (a payment over its limit, say), is recorded
//! each time. Calls of one connection run side by side up to [`ApiLimits::calls_per_connection`];
//! past that the server stops reading that connection, which slows only its sender.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, warn};

use super::grants::{Grant, Grants};
use super::wire::{
    API_VERSION, ApiError, Call, FriendBalance, Hello, HistoryItem, InvoiceState, MAX_API_FRAME,
    Permission, Reply, Request, Response,
};
use crate::invite::{Invitation, PaymentRequest};
use crate::net::driver::Driver;
use crate::net::frame::{FrameError, read_frame, write_frame};
use crate::net::payer::{self, PayError};
use crate::protocol::amount::Currency;
use crate::protocol::identity::NodeId;
use crate::protocol::node::InvoiceStatus;
use crate::protocol::payment::InvoiceId;
use crate::sync::{TokenBucket, lock};
use crate::wallet::{Clock, HistoryQuery, SharedWallet, SystemClock, Wallet};

/// How much the server takes from apps.
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    /// Requests per second per app (over all its connections), sustained.
    pub app_rate: f64,
    /// ... and in a burst.
    pub app_burst: f64,
    /// Requests per second per connection, sustained (checked before anything else).
    pub connection_rate: f64,
    /// ... and in a burst.
    pub connection_burst: f64,
    /// Calls of one connection under way at once.
    pub calls_per_connection: usize,
    /// Connections at once.
    pub connections: usize,
    /// How long a payment may take before the app is told it is still under way.
    pub pay_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            app_rate: 50.0,
            app_burst: 100.0,
            connection_rate: 100.0,
            connection_burst: 200.0,
            calls_per_connection: 16,
            connections: 64,
            pay_timeout: Duration::from_secs(120),
        }
    }
}

/// What the server works with.
pub struct ApiContext {
    wallet: Arc<SharedWallet>,
    driver: Arc<Driver>,
    grants: Mutex<Grants>,
    wallet_id: NodeId,
    limits: ApiLimits,
    buckets: Mutex<HashMap<NodeId, TokenBucket>>,
}

impl ApiContext {
    /// A context over a wallet, its running driver and its grants.
    pub fn new(
        wallet: Arc<SharedWallet>,
        driver: Arc<Driver>,
        grants: Grants,
        limits: ApiLimits,
    ) -> ApiContext {
        let wallet_id = wallet.lock().id();
        ApiContext {
            wallet,
            driver,
            grants: Mutex::new(grants),
            wallet_id,
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The wallet, locked: a call waiting for it (the driver holds it for a batch of mail)
    /// leaves its runtime thread to the other calls and the driver (`SharedWallet::lock_async`).
    async fn w(&self) -> crate::sync::Guard<'_, Wallet> {
        self.wallet.lock_async().await
    }

    fn g(&self) -> crate::sync::Guard<'_, Grants> {
        lock(&self.grants)
    }

    /// Record in the wallet's history what `app` did (`refused`: tried and was refused).
    async fn record(&self, refused: bool, app: &str, what: &str, invoice: Option<InvoiceId>) {
        if let Err(e) = self.w().await.record_app(refused, app, what, invoice) {
            warn!("could not record an app's action: {e}");
        }
    }
}

/// Serve apps on `listener` until `stop` turns true.
pub async fn serve(listener: UnixListener, ctx: Arc<ApiContext>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(ctx.limits.connections.max(1)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                warn!("app socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("too many app connections; refusing one");
            drop(stream);
            continue;
        };
        let ctx = ctx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(stream, ctx, stop).await;
            drop(slot);
        });
    }
}

async fn send(tx: &mpsc::Sender<Vec<u8>>, response: &Response) -> bool {
    match postcard::to_allocvec(response) {
        Ok(bytes) => tx.send(bytes).await.is_ok(),
        Err(_) => false,
    }
}

/// What a connection's checks know between requests.
struct Session {
    challenge: [u8; 32],
    last_seq: u64,
    bucket: TokenBucket,
    /// Refusals of this connection's requests by (name recorded under, kind): the first of
    /// each is recorded at once, the rest counted and recorded as one row when the connection
    /// ends, so that a flood of bad requests cannot fill the history or hold the wallet.
    refused: HashMap<(String, std::mem::Discriminant<ApiError>), u64>,
    /// Kinds of read already recorded on this connection.
    reads_noted: std::collections::HashSet<std::mem::Discriminant<Call>>,
}

async fn connection(stream: UnixStream, ctx: Arc<ApiContext>, mut stop: watch::Receiver<bool>) {
    let (mut rd, mut wr) = stream.into_split();
    let mut challenge = [0u8; 32];
    if getrandom::fill(&mut challenge).is_err() {
        return;
    }
    let hello = Hello {
        version: API_VERSION,
        wallet: ctx.wallet_id,
        challenge,
    };
    let Ok(bytes) = postcard::to_allocvec(&hello) else {
        return;
    };
    if write_frame(&mut wr, &bytes).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut wr, &frame).await.is_err() {
                return;
            }
        }
    });
    let calls = Arc::new(Semaphore::new(ctx.limits.calls_per_connection.max(1)));
    let mut session = Session {
        challenge,
        last_seq: 0,
        bucket: TokenBucket::full(ctx.limits.connection_rate, ctx.limits.connection_burst),
        refused: HashMap::new(),
        reads_noted: Default::default(),
    };
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, MAX_API_FRAME) => f,
            _ = stop.changed() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let reason = match e {
                    FrameError::TooLarge { size, max } => {
                        format!("a frame of {size} bytes is over the {max}-byte limit")
                    }
                    e => e.to_string(),
                };
                let _ = send(&tx, &refusal(0, ApiError::BadRequest { reason })).await;
                break;
            }
        };
        let request: Request = match postcard::from_bytes(&frame) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("not a request of API version {API_VERSION}: {e}");
                ctx.record(
                    true,
                    "unknown app",
                    &format!("sent an unreadable request ({e})"),
                    None,
                )
                .await;
                let _ = send(&tx, &refusal(0, ApiError::BadRequest { reason })).await;
                break;
            }
        };
        let seq = request.seq;
        match check(&ctx, &mut session, &request) {
            Err((label, e)) => {
                let seen = session
                    .refused
                    .entry((label.clone(), std::mem::discriminant(&e)))
                    .or_insert(0);
                *seen += 1;
                if *seen == 1 {
                    ctx.record(
                        true,
                        &label,
                        &format!("{}: refused: {e}", request.call.describe()),
                        None,
                    )
                    .await;
                }
                if !send(&tx, &refusal(seq, e)).await {
                    break;
                }
            }
            Ok(grant) => {
                // At most `calls_per_connection` under way: past that, stop reading.
                let Ok(permit) = calls.clone().acquire_owned().await else {
                    break;
                };
                // Reads are recorded the first time of each kind per connection, so that an
                // app that polls does not fill the history; everything else every time.
                let record_success = match request.call {
                    Call::Balances | Call::History { .. } | Call::InvoiceStatus { .. } => session
                        .reads_noted
                        .insert(std::mem::discriminant(&request.call)),
                    _ => true,
                };
                let (ctx, tx) = (ctx.clone(), tx.clone());
                tokio::spawn(async move {
                    let what = request.call.describe();
                    let (result, invoice) = execute(&ctx, &grant, request.call).await;
                    match &result {
                        Ok(_) if !record_success => {}
                        Ok(_) => ctx.record(false, &grant.name, &what, invoice).await,
                        Err(e) => {
                            ctx.record(true, &grant.name, &format!("{what}: refused: {e}"), invoice)
                                .await
                        }
                    }
                    let _ = send(&tx, &Response { seq, result }).await;
                    drop(permit);
                });
            }
        }
    }
    for ((label, _), count) in session.refused {
        if count > 1 {
            ctx.record(
                true,
                &label,
                &format!(
                    "{} more requests refused for the same reason on one connection",
                    count - 1
                ),
                None,
            )
            .await;
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn refusal(seq: u64, e: ApiError) -> Response {
    Response {
        seq,
        result: Err(e),
    }
}

/// Checks 1–8 of the module's list. On a refusal, also the name to record it under.
fn check(ctx: &ApiContext, s: &mut Session, r: &Request) -> Result<Grant, (String, ApiError)> {
    let unknown = || format!("unknown app {}", r.app.short());
    s.bucket
        .take()
        .map_err(|retry_after_ms| (unknown(), ApiError::RateLimited { retry_after_ms }))?;
    if r.version != API_VERSION {
        return Err((
            unknown(),
            ApiError::Version {
                app: r.version,
                wallet: API_VERSION,
            },
        ));
    }
    let grant = match ctx.g().get(&r.app) {
        Ok(Some(g)) => g,
        Ok(None) => {
            return Err((
                unknown(),
                ApiError::UnknownApp {
                    app: r.app.to_string(),
                },
            ));
        }
        Err(e) => {
            return Err((
                unknown(),
                ApiError::Wallet {
                    reason: e.to_string(),
                },
            ));
        }
    };
    if !r.verify(&s.challenge) {
        return Err((
            format!("someone claiming to be {}", grant.name),
            ApiError::Forged,
        ));
    }
    if r.seq <= s.last_seq {
        return Err((
            grant.name.clone(),
            ApiError::Replayed {
                seq: r.seq,
                last: s.last_seq,
            },
        ));
    }
    s.last_seq = r.seq;
    if grant.revoked_ms.is_some() {
        return Err((
            grant.name.clone(),
            ApiError::Revoked {
                name: grant.name.clone(),
            },
        ));
    }
    lock(&ctx.buckets)
        .entry(grant.key)
        .or_insert_with(|| TokenBucket::full(ctx.limits.app_rate, ctx.limits.app_burst))
        .take()
        .map_err(|retry_after_ms| (grant.name.clone(), ApiError::RateLimited { retry_after_ms }))?;
    let needs = r.call.needs();
    if !grant.permissions.allows(needs) {
        return Err((
            grant.name.clone(),
            ApiError::NotAllowed {
                name: grant.name.clone(),
                permission: needs,
                holds: grant.permissions.to_string(),
            },
        ));
    }
    Ok(grant)
}

fn wallet_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::Wallet {
        reason: e.to_string(),
    }
}

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        reason: reason.into(),
    }
}

fn now_ms() -> u64 {
    SystemClock.now_ms()
}

/// Run an allowed call: the answer, and the invoice it concerned (for history).
async fn execute(
    ctx: &ApiContext,
    grant: &Grant,
    call: Call,
) -> (Result<Reply, ApiError>, Option<InvoiceId>) {
    match call {
        Call::Balances => (balances(ctx).await, None),
        Call::History { limit } => (history(ctx, limit).await, None),
        Call::CreateInvoice {
            currency,
            amount,
            memo,
            minutes,
        } => match create_invoice(ctx, grant, &currency, amount, &memo, minutes).await {
            Ok((id, reply)) => (Ok(reply), Some(id)),
            Err(e) => (Err(e), None),
        },
        Call::InvoiceStatus { invoice, wait_ms } => (
            invoice_status(ctx, grant, invoice, wait_ms).await,
            Some(invoice),
        ),
        Call::Pay { request } => pay(ctx, grant, &request).await,
        Call::Invite { name, hours } => {
            if !(1..=720).contains(&hours) {
                return (Err(bad("an invitation lasts 1 to 720 hours")), None);
            }
            let r = ctx
                .w()
                .await
                .invite(&name, u64::from(hours) * 3_600_000)
                .map(|inv| Reply::Invitation {
                    text: inv.to_text(),
                    uri: inv.to_uri(),
                })
                .map_err(wallet_error);
            (r, None)
        }
        Call::AcceptInvitation { invitation, name } => {
            let r = match Invitation::parse(&invitation, now_ms()) {
                Ok(inv) => ctx
                    .w()
                    .await
                    .accept_invitation(&inv, &name)
                    .map_err(wallet_error)
                    .map(|()| Reply::Done),
                Err(e) => Err(bad(e.to_string())),
            };
            (r, None)
        }
        Call::SetLimit {
            friend,
            currency,
            amount,
        } => {
            let r = match Currency::new(&currency) {
                Ok(c) => ctx
                    .w()
                    .await
                    .set_limit(friend, c, amount)
                    .map_err(wallet_error)
                    .map(|()| Reply::Done),
                Err(e) => Err(bad(e.to_string())),
            };
            (r, None)
        }
        Call::SetRelay { relay } => {
            let r = match relay.parse() {
                Ok(a) => ctx
                    .w()
                    .await
                    .set_relay(a)
                    .map_err(wallet_error)
                    .map(|()| Reply::Done),
                Err(e) => Err(bad(e)),
            };
            (r, None)
        }
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

async fn balances(ctx: &ApiContext) -> Result<Reply, ApiError> {
    let w = ctx.w().await;
    let mut totals: std::collections::BTreeMap<String, i128> = Default::default();
    let mut friends = Vec::new();
    for f in w.node().friends().copied().collect::<Vec<_>>() {
        let v = w.friend_view(f, 0).map_err(wallet_error)?;
        for l in &v.lines {
            let t = totals.entry(l.currency.as_str().to_string()).or_default();
            *t = t.saturating_add(l.balance);
            friends.push(FriendBalance {
                friend: v.id,
                name: v.name.clone(),
                currency: l.currency.as_str().to_string(),
                balance: clamp_i64(l.balance),
                our_limit: l.our_limit,
                their_limit: l.their_limit,
            });
        }
    }
    Ok(Reply::Balances {
        totals: totals.into_iter().map(|(c, b)| (c, clamp_i64(b))).collect(),
        friends,
    })
}

async fn history(ctx: &ApiContext, limit: u32) -> Result<Reply, ApiError> {
    if !(1..=500).contains(&limit) {
        return Err(bad("history is read 1 to 500 rows at a time"));
    }
    let rows = ctx
        .w()
        .await
        .history(&HistoryQuery {
            limit: limit as usize,
            ..HistoryQuery::default()
        })
        .map_err(wallet_error)?;
    Ok(Reply::History(
        rows.into_iter()
            .map(|h| HistoryItem {
                seq: h.seq,
                at_ms: h.at_ms,
                kind: h.kind.as_str().to_string(),
                amount: h.amount,
                currency: h.currency.map(|c| c.as_str().to_string()),
                detail: h.detail,
            })
            .collect(),
    ))
}

async fn create_invoice(
    ctx: &ApiContext,
    grant: &Grant,
    currency: &str,
    amount: u64,
    memo: &str,
    minutes: u32,
) -> Result<(InvoiceId, Reply), ApiError> {
    if !(1..=10_080).contains(&minutes) {
        return Err(bad("an invoice lasts 1 to 10,080 minutes (a week)"));
    }
    if amount == 0 {
        return Err(bad("an invoice asks for more than 0"));
    }
    let currency = Currency::new(currency).map_err(|e| bad(e.to_string()))?;
    let (invoice, request) = {
        let mut w = ctx.w().await;
        let invoice = w
            .create_invoice(currency, amount, u64::from(minutes) * 60_000, memo)
            .map_err(wallet_error)?;
        let request = w.payment_request(&invoice).map_err(wallet_error)?;
        (invoice, request)
    };
    let id = invoice.terms.id;
    ctx.g()
        .remember_invoice(&grant.key, &id)
        .map_err(wallet_error)?;
    Ok((
        id,
        Reply::Invoice {
            invoice: id,
            request: request.to_text(),
            uri: request.to_uri(),
            expires_at_ms: invoice.terms.expires_at_ms,
        },
    ))
}

async fn invoice_status(
    ctx: &ApiContext,
    grant: &Grant,
    invoice: InvoiceId,
    wait_ms: u32,
) -> Result<Reply, ApiError> {
    if wait_ms > 60_000 {
        return Err(bad("wait at most 60,000 ms per call"));
    }
    let owner = ctx.g().invoice_owner(&invoice).map_err(wallet_error)?;
    if owner != Some(grant.key) {
        return Err(ApiError::NotYours {
            invoice: invoice.to_string(),
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(wait_ms));
    let mut changes = ctx.w().await.watch_changes();
    loop {
        let reply = {
            let w = ctx.w().await;
            let (inv, status) = w
                .issued_invoice(&invoice)
                .map_err(wallet_error)?
                .ok_or_else(|| wallet_error("the wallet does not hold this invoice"))?;
            let state = match status {
                InvoiceStatus::Paid(_) => InvoiceState::Paid,
                InvoiceStatus::Cancelled => InvoiceState::Cancelled,
                InvoiceStatus::Open => InvoiceState::Open,
            };
            Reply::InvoiceStatus {
                invoice,
                state,
                amount: inv.terms.amount,
                currency: inv.terms.currency.as_str().to_string(),
                memo: inv.terms.memo.clone(),
            }
        };
        let open = matches!(
            reply,
            Reply::InvoiceStatus {
                state: InvoiceState::Open,
                ..
            }
        );
        if !open || tokio::time::Instant::now() >= deadline {
            return Ok(reply);
        }
        // Wake on the wallet's next step, and at least every 250 ms to see a revocation.
        let _ = tokio::time::timeout(Duration::from_millis(250), changes.changed()).await;
        match ctx.g().get(&grant.key) {
            Ok(Some(g)) if g.revoked_ms.is_none() => {}
            _ => {
                return Err(ApiError::Revoked {
                    name: grant.name.clone(),
                });
            }
        }
    }
}

async fn pay(
    ctx: &ApiContext,
    grant: &Grant,
    text: &str,
) -> (Result<Reply, ApiError>, Option<InvoiceId>) {
    let request = match PaymentRequest::parse(text, now_ms()) {
        Ok(r) => r,
        Err(e) => return (Err(bad(e.to_string())), None),
    };
    let id = request.invoice.terms.id;
    (pay_request(ctx, grant, &request).await, Some(id))
}

async fn pay_request(
    ctx: &ApiContext,
    grant: &Grant,
    request: &PaymentRequest,
) -> Result<Reply, ApiError> {
    let terms = &request.invoice.terms;
    let asked_currency = terms.currency.as_str().to_string();
    let Some(allowed) = grant.currency.clone() else {
        return Err(ApiError::NotAllowed {
            name: grant.name.clone(),
            permission: Permission::Pay,
            holds: format!("{} (no spending limit set)", grant.permissions),
        });
    };
    if allowed != asked_currency {
        return Err(ApiError::WrongCurrency {
            name: grant.name.clone(),
            allowed,
            asked: asked_currency,
        });
    }
    let over = |spent, asked| ApiError::OverLimit {
        name: grant.name.clone(),
        limit: grant.pay_limit,
        spent,
        asked,
        currency: terms.currency.as_str().to_string(),
    };
    // The amount alone over the limit: refused before asking anyone for routes.
    let spent = ctx.g().spent(&grant.key, now_ms()).map_err(wallet_error)?;
    if spent
        .checked_add(terms.amount)
        .is_none_or(|total| total > grant.pay_limit)
    {
        return Err(over(spent, terms.amount));
    }
    const MAX_ROUTES: u8 = 8;
    let query = ctx.w().await.route_query(request, MAX_ROUTES);
    let set = payer::routes(&ctx.driver, query)
        .await
        .map_err(|e| ApiError::NotPaid {
            reason: format!("no routes: {e}"),
        })?;
    let asked = terms
        .amount
        .checked_add(set.total_fee)
        .ok_or_else(|| bad("the amount with fees is too large"))?;
    let reservation = ctx
        .g()
        .reserve(&grant.key, &terms.id, asked, grant.pay_limit, now_ms())
        .map_err(wallet_error)?
        .map_err(|spent| over(spent, asked))?;
    let result = payer::pay(
        &ctx.wallet,
        &ctx.driver,
        request,
        MAX_ROUTES,
        ctx.limits.pay_timeout,
        |_| {},
    )
    .await;
    match result {
        Ok(receipt) => Ok(Reply::Paid {
            invoice: terms.id,
            amount: receipt.amount(),
            receipt: crate::invite::receipt_to_text(&receipt),
        }),
        Err(e) => {
            // The limit is given back only if nothing is under way or paid.
            let status = ctx.w().await.payment_view(terms.id).map(|v| v.status);
            let settled_nothing = !matches!(status, Ok("in_flight" | "completed"));
            if settled_nothing
                && !matches!(e, PayError::Timeout(_))
                && let Err(err) = ctx.g().refund(reservation)
            {
                warn!("could not give back an app's reservation: {err}");
            }
            Err(ApiError::NotPaid {
                reason: e.to_string(),
            })
        }
    }
}
