//! Paying a payment request end to end over a running [`Driver`]: routes from the relay's
//! index, the payment, and when some routes are refused on the way, the missing part again on
//! other routes (the index may lag behind the network). Gives up by abandoning the payment,
//! which frees the credit at once.

use std::time::{Duration, Instant};

use super::client::ClientError;
use super::driver::Driver;
use crate::invite::PaymentRequest;
use crate::protocol::node::PaymentStatus;
use crate::protocol::payment::Receipt;
use crate::routing::{RouteQuery, RouteSet};
use crate::wallet::{SharedWallet, WalletError};

/// How a payment ended, or why it could not start.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// No routes for the whole amount (or the index could not be asked).
    #[error("no routes: {0}")]
    NoRoutes(ClientError),
    /// The wallet refused (bad request, not enough room with a friend, ...).
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// Every route was refused; nothing moved.
    #[error("the payment was cancelled along the way; nothing moved")]
    Cancelled,
    /// Routes kept failing; the payment was abandoned and nothing moved.
    #[error("routes kept failing after {retries} retries; abandoned, nothing moved")]
    GaveUp {
        /// Retries made.
        retries: u32,
    },
    /// Still under way when time ran out (it goes on in the background).
    #[error("no receipt within {0:?}; the payment goes on and ends by the invoice's expiry")]
    Timeout(Duration),
}

/// What happened along the way, for progress output.
#[derive(Clone, Debug)]
pub enum PayStep {
    /// Routes found and the payment sent.
    Sent(RouteSet),
    /// Some routes were refused; the missing part goes again over these.
    Retried(RouteSet),
    /// Still waiting (every few seconds).
    Waiting(Duration),
}

/// Most times the missing part is routed again.
pub const MAX_RETRIES: u32 = 3;

/// After [`pay`] returned its receipt: wait (at most `limit`) until the credit has moved too,
/// that is until the first friend of each route collected (the receipt comes straight from
/// the seller; the collects come back hop by hop). Returns whether it has; if not, it moves
/// when that friend next reaches us.
pub async fn settled(
    wallet: &SharedWallet,
    invoice: &crate::protocol::payment::InvoiceId,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    // Woken by the steps that changed this payment (the collect that settles a route does:
    // it records the route's end), not by every step of the wallet.
    let mut changes = wallet.lock_async().await.watch_payment(*invoice);
    loop {
        changes.borrow_and_update();
        let done = wallet
            .lock_async()
            .await
            .node()
            .payment_progress(invoice)
            .is_some_and(|p| p.settled);
        let left = limit.saturating_sub(start.elapsed());
        if done {
            // Settled only once the step that settled it is on disk.
            let ticket = wallet.lock_async().await.ticket_now();
            return crate::wallet::sync(wallet, ticket).await.is_ok();
        }
        if left.is_zero() {
            return false;
        }
        let _ = tokio::time::timeout(left, changes.changed()).await;
    }
}

/// Routes for `query` from the driver, waiting at most 30 s for the relay's index.
pub async fn routes(driver: &Driver, query: RouteQuery) -> Result<RouteSet, ClientError> {
    tokio::time::timeout(Duration::from_secs(30), driver.find_routes(query))
        .await
        .map_err(|_| ClientError::Closed("the relay's index did not answer in 30 s".into()))?
}

/// Pay `request` from `wallet` over `driver`, splitting over at most `max_routes` routes, and
/// follow it to the receipt (at most `limit`). `progress` hears of each step.
pub async fn pay(
    wallet: &SharedWallet,
    driver: &Driver,
    request: &PaymentRequest,
    max_routes: u8,
    limit: Duration,
    mut progress: impl FnMut(PayStep),
) -> Result<Receipt, PayError> {
    let start = Instant::now();
    let invoice = request.invoice.terms.id;
    let query = wallet.lock_async().await.route_query(request, max_routes);
    let set = routes(driver, query.clone())
        .await
        .map_err(PayError::NoRoutes)?;
    let plans = set.routes.iter().map(|r| r.plan()).collect();
    // Payments made at once share one flush to disk (`wallet::sync`).
    let ticket = wallet
        .lock_async()
        .await
        .pay_request_unsynced(request, plans)?;
    crate::wallet::sync(wallet, ticket).await?;
    progress(PayStep::Sent(set));
    let mut retries = 0u32;
    let mut said = Instant::now();
    // Woken by each committed step that changed this payment (an answer, a receipt), not by
    // a timer nor by the steps of other payments.
    let mut changes = wallet.lock_async().await.watch_payment(invoice);
    loop {
        changes.borrow_and_update();
        let now = wallet.lock_async().await.node().payment_progress(&invoice);
        let Some(p) = now else {
            return Err(PayError::Cancelled);
        };
        match p.status {
            PaymentStatus::Completed => {
                let receipt = wallet
                    .lock_async()
                    .await
                    .node()
                    .payment(&invoice)
                    .and_then(|(_, r)| r.cloned());
                if let Some(r) = receipt {
                    // The receipt's step on disk before the app hears of it.
                    let ticket = wallet.lock_async().await.ticket_now();
                    crate::wallet::sync(wallet, ticket).await?;
                    return Ok(r);
                }
            }
            PaymentStatus::Cancelled if retries >= MAX_RETRIES => {
                return Err(if retries > 0 {
                    PayError::GaveUp { retries }
                } else {
                    PayError::Cancelled
                });
            }
            PaymentStatus::Cancelled | PaymentStatus::InFlight => {}
        }
        if p.status != PaymentStatus::Completed && !p.committed && p.open < p.amount {
            // Some routes were refused: route what is missing again, around their hops.
            let missing = p.amount - p.open;
            let left = crate::protocol::bounds::MAX_ROUTES_PER_PAYMENT.saturating_sub(p.routes);
            let mut q = wallet
                .lock_async()
                .await
                .route_query(request, max_routes.min(left as u8));
            q.amount = missing;
            for route in &p.failed {
                for hop in route.windows(2).skip(1) {
                    if let [a, b] = hop {
                        q.avoid.push((*a, *b));
                    }
                }
            }
            let found = if retries < MAX_RETRIES && q.max_routes > 0 {
                match routes(driver, q).await {
                    Ok(set) => Some(set),
                    Err(e) => {
                        tracing::debug!("no routes for the missing {missing}: {e}");
                        None
                    }
                }
            } else {
                None
            };
            match found {
                Some(set) => {
                    retries += 1;
                    let plans = set.routes.iter().map(|r| r.plan()).collect();
                    match wallet.lock_async().await.add_routes(invoice, plans) {
                        Ok(()) => progress(PayStep::Retried(set)),
                        Err(e) => tracing::debug!("retry refused: {e}"),
                    }
                }
                None if p.status == PaymentStatus::Cancelled => {
                    return Err(if retries > 0 {
                        PayError::GaveUp { retries }
                    } else {
                        PayError::Cancelled
                    });
                }
                None => {
                    // Free the credit of the routes still out, at once.
                    let _ = wallet.lock_async().await.abandon_payment(invoice);
                    return Err(PayError::GaveUp { retries });
                }
            }
        }
        if start.elapsed() > limit {
            return Err(PayError::Timeout(limit));
        }
        if said.elapsed() > Duration::from_secs(3) {
            progress(PayStep::Waiting(start.elapsed()));
            said = Instant::now();
        }
        let nap = limit
            .saturating_sub(start.elapsed())
            .min(Duration::from_secs(1));
        tokio::select! {
            r = changes.changed() => if r.is_err() { tokio::time::sleep(nap).await },
            _ = tokio::time::sleep(nap) => {}
        }
    }
}
