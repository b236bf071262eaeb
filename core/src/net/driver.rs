//! The wallet's network driver: a tokio task that keeps the wallet connected to its relay,
//! sends the outbox (sealed for each friend, forwarded to friends on other relays), feeds
//! received envelopes to the wallet as durable steps, acknowledges them only after, lets time
//! pass for invoice expiry, and reconnects with backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::client::{ClientError, RelayConnection};
use super::wire::Refusal;
use crate::wallet::{Wallet, WalletError};

/// Where the driver stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverStatus {
    /// No relay chosen yet.
    NoRelay,
    /// Trying to connect; `attempt` so far, next try in `retry_in_ms`.
    Connecting {
        /// Attempts so far.
        attempt: u32,
        /// When the next one is.
        retry_in_ms: u64,
        /// Why the last failed.
        last_error: String,
    },
    /// Connected to the relay.
    Connected,
    /// Stopped.
    Stopped,
}

/// Why a wait on the driver ended without what was waited for.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The wallet has no relay.
    #[error("this wallet has no relay yet; choose one (a relay's KEY@HOST:PORT) first")]
    NoRelay,
    /// The driver was stopped.
    #[error("the wallet is offline (its network driver was stopped)")]
    Stopped,
    /// No connection within the time.
    #[error("could not reach the relay within {secs} s{}", if last_error.is_empty() { String::new() } else { format!(" ({last_error})") })]
    Unreachable {
        /// The limit.
        secs: u64,
        /// Why the last try failed.
        last_error: String,
    },
    /// Connected, but mail still waiting when time ran out.
    #[error("not in sync with the relay within {secs} s ({outbox} messages still to send)")]
    NotSynced {
        /// The limit.
        secs: u64,
        /// Messages still queued.
        outbox: u64,
    },
    /// The wallet failed.
    #[error(transparent)]
    Wallet(WalletError),
}

/// A running driver. Dropping it does not stop it; call [`Driver::stop`].
pub struct Driver {
    stop: watch::Sender<bool>,
    status: watch::Receiver<DriverStatus>,
    task: tokio::task::JoinHandle<()>,
    queries: tokio::sync::mpsc::Sender<Query>,
    drained: watch::Receiver<u64>,
}

/// A route query waiting for the connection.
type Query = (
    crate::routing::RouteQuery,
    tokio::sync::oneshot::Sender<Result<crate::routing::RouteSet, ClientError>>,
);

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_secs(1);

impl Driver {
    /// Start driving `wallet` over `endpoint`.
    pub fn spawn(wallet: Arc<Mutex<Wallet>>, endpoint: quinn::Endpoint) -> Driver {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Starting: "no relay" is said only once the wallet was asked.
        let (status_tx, status_rx) = watch::channel(DriverStatus::Connecting {
            attempt: 0,
            retry_in_ms: 0,
            last_error: String::new(),
        });
        let (queries_tx, queries_rx) = tokio::sync::mpsc::channel(16);
        let (drained_tx, drained_rx) = watch::channel(0u64);
        let links = Links {
            queries: queries_rx,
            drained: drained_tx,
        };
        let task = tokio::spawn(run(wallet, endpoint, stop_rx, status_tx, links));
        Driver {
            stop: stop_tx,
            status: status_rx,
            task,
            queries: queries_tx,
            drained: drained_rx,
        }
    }

    /// Routes for `query`: straight to the seller when it is a friend who can take the whole
    /// amount ([`crate::routing::RouteQuery::direct`]), else from the relay's index over the
    /// wallet's own connection (waiting for one).
    pub async fn find_routes(
        &self,
        query: crate::routing::RouteQuery,
    ) -> Result<crate::routing::RouteSet, ClientError> {
        if let Some(direct) = query.direct() {
            return Ok(direct);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || ClientError::Closed("the driver stopped".into());
        self.queries.send((query, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Counts each time the relay said the mailbox is empty (all mail so far handled): wait
    /// for a change to know the wallet caught up.
    pub fn watch_drained(&self) -> watch::Receiver<u64> {
        self.drained.clone()
    }

    /// Where it stands now.
    pub fn status(&self) -> DriverStatus {
        self.status.borrow().clone()
    }

    /// Changes of status, to show progress.
    pub fn watch_status(&self) -> watch::Receiver<DriverStatus> {
        self.status.clone()
    }

    /// Wait until connected, at most `limit`; `retrying` hears each new reason a try failed.
    pub async fn connected(
        &self,
        limit: Duration,
        mut retrying: impl FnMut(&str),
    ) -> Result<(), WaitError> {
        let start = tokio::time::Instant::now();
        let mut status = self.status.clone();
        let mut said = String::new();
        loop {
            let now = status.borrow_and_update().clone();
            match now {
                DriverStatus::Connected => return Ok(()),
                DriverStatus::NoRelay => return Err(WaitError::NoRelay),
                DriverStatus::Stopped => return Err(WaitError::Stopped),
                DriverStatus::Connecting { last_error, .. } if last_error != said => {
                    retrying(&last_error);
                    said = last_error;
                }
                DriverStatus::Connecting { .. } => {}
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(WaitError::Unreachable {
                    secs: limit.as_secs(),
                    last_error: said,
                });
            }
            let _ = tokio::time::timeout(left, status.changed()).await;
        }
    }

    /// Wait until everything queued was handed to the relay and the mailbox was read to the
    /// end at least once since the driver started, at most `limit`.
    pub async fn synced(
        &self,
        wallet: &Mutex<Wallet>,
        limit: Duration,
        retrying: impl FnMut(&str),
    ) -> Result<(), WaitError> {
        let start = tokio::time::Instant::now();
        self.connected(limit, retrying).await?;
        let mut drained = self.drained.clone();
        let mut changes = lock(wallet).watch_changes();
        loop {
            let outbox = lock(wallet).outbox_len().map_err(WaitError::Wallet)?;
            let caught_up = *drained.borrow_and_update() > 0;
            if outbox == 0 && caught_up {
                return Ok(());
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(WaitError::NotSynced {
                    secs: limit.as_secs(),
                    outbox,
                });
            }
            // Sent mail leaves the outbox in a step; the mailbox's end moves `drained`; a short
            // nap covers anything else.
            let nap = left.min(Duration::from_millis(50));
            tokio::select! {
                _ = drained.changed() => {}
                _ = changes.changed() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// Stop after the current step (nothing half-done: every step is durable).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn lock(wallet: &Mutex<Wallet>) -> std::sync::MutexGuard<'_, Wallet> {
    // A panic while holding the lock can't leave the wallet half-written: every change is a
    // transaction. Carry on with the inner value.
    wallet.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether to stop: asked to, or the [`Driver`] handle is gone.
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// What the driver shares with its handle besides status.
struct Links {
    queries: tokio::sync::mpsc::Receiver<Query>,
    drained: watch::Sender<u64>,
}

async fn run(
    wallet: Arc<Mutex<Wallet>>,
    endpoint: quinn::Endpoint,
    mut stop: watch::Receiver<bool>,
    status: watch::Sender<DriverStatus>,
    mut links: Links,
) {
    let signal = lock(&wallet).outbox_signal();
    let mut drains: std::collections::BTreeMap<
        crate::protocol::identity::NodeId,
        tokio::task::JoinHandle<()>,
    > = std::collections::BTreeMap::new();
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 0u32;
    while !stopping(&stop) {
        let chosen = lock(&wallet).relay();
        let relay = match chosen {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => {
                status.send_replace(DriverStatus::NoRelay);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let identity = lock(&wallet).identity().clone();
        let connected = RelayConnection::connect_to(&endpoint, &relay, &identity).await;
        let mut conn = match connected {
            Ok(c) => c,
            Err(e) => {
                attempt += 1;
                warn!(attempt, "relay unreachable: {e}; retrying in {backoff:?}");
                status.send_replace(DriverStatus::Connecting {
                    attempt,
                    retry_in_ms: backoff.as_millis() as u64,
                    last_error: e,
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        info!(relay = %relay.key.short(), "connected to the relay");
        status.send_replace(DriverStatus::Connected);
        backoff = MIN_BACKOFF;
        attempt = 0;
        // After days offline, whatever friends may have missed goes again (copies are dropped).
        if let Err(e) = lock(&wallet).resend() {
            warn!("resend: {e}");
        }
        // Relays we moved away from: keep picking up what friends still send there.
        let to_drain = lock(&wallet).relays_to_drain().unwrap_or_default();
        for (old, _) in to_drain {
            drains.retain(|_, h: &mut tokio::task::JoinHandle<()>| !h.is_finished());
            drains.entry(old.key).or_insert_with(|| {
                tokio::spawn(drain(
                    wallet.clone(),
                    endpoint.clone(),
                    old.clone(),
                    stop.clone(),
                ))
            });
        }
        let why = serve(&wallet, &mut conn, &relay, &signal, &mut stop, &mut links).await;
        debug!(?why, "connection over");
        match why {
            Ok(()) => {
                conn.close().await;
                break;
            }
            Err(e) => {
                warn!("relay connection ended: {e}; reconnecting");
                status.send_replace(DriverStatus::Connecting {
                    attempt: 0,
                    retry_in_ms: backoff.as_millis() as u64,
                    last_error: e,
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    for (_, d) in drains {
        let _ = d.await;
    }
    status.send_replace(DriverStatus::Stopped);
}

/// Receive (only) from a relay we moved away from, for as long as it is on the drain list.
async fn drain(
    wallet: Arc<Mutex<Wallet>>,
    endpoint: quinn::Endpoint,
    old: crate::net::wire::RelayAddress,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    let still_listed = |w: &Mutex<Wallet>| {
        lock(w)
            .relays_to_drain()
            .map(|l| l.iter().any(|(r, _)| r.key == old.key))
            .unwrap_or(false)
    };
    while !stopping(&stop) && still_listed(&wallet) {
        let identity = lock(&wallet).identity().clone();
        let conn = RelayConnection::connect_to(&endpoint, &old, &identity).await;
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                debug!(relay = %old.key.short(), "old relay unreachable: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        info!(relay = %old.key.short(), "draining the relay we moved away from");
        let mut recheck = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                m = conn.recv_or_empty() => match m {
                    Some(super::client::Incoming::Mail(d)) => {
                        let result = lock(&wallet).receive_envelope(&d.envelope);
                        match result {
                            Ok(_) => {
                                if conn.ack(d.seq).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                warn!("could not store mail from the old relay: {e}");
                                break;
                            }
                        }
                    }
                    Some(super::client::Incoming::Empty) => {
                        debug!(relay = %old.key.short(), "old relay drained for now");
                    }
                    None => break,
                },
                _ = recheck.tick() => {
                    if !still_listed(&wallet) {
                        break;
                    }
                }
                _ = stop.changed() => {
                    if stopping(&stop) {
                        break;
                    }
                }
            }
        }
        conn.close().await;
    }
}

/// Serve one connection: Ok when asked to stop, Err when the connection failed.
async fn serve(
    wallet: &Mutex<Wallet>,
    conn: &mut RelayConnection,
    relay: &crate::net::wire::RelayAddress,
    signal: &tokio::sync::Notify,
    stop: &mut watch::Receiver<bool>,
    links: &mut Links,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    let mut unreachable: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    let mut reports = Reporting::default();
    loop {
        send_outbox(wallet, conn, relay, &mut unreachable).await?;
        reports.maybe_send(wallet, conn).await?;
        tokio::select! {
            q = links.queries.recv() => {
                if let Some((query, answer)) = q {
                    let result = conn.find_routes(query).await;
                    debug!(ok = result.is_ok(), "route query answered");
                    let _ = answer.send(result);
                }
            }
            d = conn.recv_or_empty() => {
                let d = match d {
                    Some(super::client::Incoming::Mail(d)) => d,
                    Some(super::client::Incoming::Empty) => {
                        links.drained.send_modify(|n| *n += 1);
                        continue;
                    }
                    None => {
                        return Err(conn.close_reason().unwrap_or_else(|| "closed".into()));
                    }
                };
                let result = lock(wallet).receive_envelope(&d.envelope);
                match result {
                    Ok(delivery) => {
                        debug!(seq = d.seq, ?delivery, "mail handled");
                        conn.ack(d.seq).await.map_err(|e| e.to_string())?;
                    }
                    // Not acknowledged: the relay keeps it and delivers it again.
                    Err(e) => return Err(format!("could not store received mail: {e}")),
                }
            }
            // Something changed (new mail, a new contact, or a move): try everything again.
            _ = signal.notified() => {
                unreachable.clear();
                let chosen = lock(wallet).relay();
                if let Ok(Some(now)) = chosen
                    && now != *relay
                {
                    return Err(format!("moved to the relay at {}", now.addr));
                }
            }
            // A report held back by the minimum gap goes out when the gap ends.
            _ = tokio::time::sleep_until(reports.recheck_at()), if reports.held_back() => {}
            _ = tick.tick() => {
                let mut w = lock(wallet);
                if let Err(e) = w.tick() {
                    warn!("tick: {e}");
                }
            }
            _ = stop.changed() => {
                if stopping(stop) {
                    return Ok(());
                }
            }
        }
    }
}

/// Capacity reports to the relay's index: on connecting, when what the wallet would report
/// changes (at most every [`REPORT_MIN_GAP`]), and every [`REPORT_PERIOD`] in any case.
#[derive(Default)]
struct Reporting {
    /// What was last sent (entries and rate), and when.
    last: Option<(
        Vec<crate::routing::ReportEntry>,
        crate::protocol::amount::Rate,
    )>,
    sent_at: Option<tokio::time::Instant>,
    /// The relay runs no index (or refuses our reports): stop asking on this connection.
    off: bool,
    /// A change is waiting for the gap to end.
    pending: bool,
}

const REPORT_PERIOD: Duration = Duration::from_secs(5 * 60);
const REPORT_MIN_GAP: Duration = Duration::from_millis(500);

impl Reporting {
    /// When a report held back by the gap may go.
    fn recheck_at(&self) -> tokio::time::Instant {
        self.sent_at
            .map_or_else(tokio::time::Instant::now, |t| t + REPORT_MIN_GAP)
    }

    /// Is a changed report waiting for the gap to end?
    fn held_back(&self) -> bool {
        self.pending && !self.off
    }

    async fn maybe_send(
        &mut self,
        wallet: &Mutex<Wallet>,
        conn: &RelayConnection,
    ) -> Result<(), String> {
        if self.off {
            return Ok(());
        }
        let report = lock(wallet).capacity_report().map_err(|e| e.to_string())?;
        let Some(report) = report else {
            return Ok(());
        };
        let now = (report.entries.clone(), report.rate);
        let due = self.sent_at.is_none_or(|t| t.elapsed() >= REPORT_PERIOD);
        if !due && self.last.as_ref() == Some(&now) {
            self.pending = false;
            return Ok(());
        }
        if self.sent_at.is_some_and(|t| t.elapsed() < REPORT_MIN_GAP) {
            self.pending = true;
            return Ok(());
        }
        self.pending = false;
        self.sent_at = Some(tokio::time::Instant::now());
        let signed = lock(wallet).sign_report(report);
        match conn.report(signed).await {
            Ok(()) => {
                debug!(entries = now.0.len(), "capacity report sent");
                self.last = Some(now);
                Ok(())
            }
            Err(ClientError::Refused(Refusal::SenderQuota { .. })) => Ok(()),
            Err(ClientError::Refused(r)) => {
                info!("the relay takes no capacity report: {r}");
                self.off = true;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

async fn send_outbox(
    wallet: &Mutex<Wallet>,
    conn: &RelayConnection,
    relay: &crate::net::wire::RelayAddress,
    unreachable: &mut std::collections::BTreeSet<u64>,
) -> Result<(), String> {
    loop {
        let items = lock(wallet).outbox(64).map_err(|e| e.to_string())?;
        let items: Vec<_> = items
            .into_iter()
            .filter(|i| !unreachable.contains(&i.seq))
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        for item in items {
            let mut entropy = [0u8; 72];
            getrandom::fill(&mut entropy).map_err(|e| e.to_string())?;
            let sealed = lock(wallet).seal_outgoing(&item, entropy);
            let (envelope, to_relay) = match sealed {
                Ok(x) => x,
                Err(WalletError::Storage(why)) => {
                    // No contact for this friend (yet): keep it for when there is one.
                    warn!(from = %lock(wallet).id().short(), to = %item.to.short(), kind = item.kind, "can't send: {why}");
                    unreachable.insert(item.seq);
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            debug!(seq = item.seq, to = %item.to.short(), "sending");
            let sent = if to_relay.key == relay.key {
                conn.send(item.to, envelope).await
            } else {
                conn.forward(item.to, to_relay, envelope).await
            };
            match sent {
                Ok(()) => lock(wallet)
                    .outbox_sent(item.seq)
                    .map_err(|e| e.to_string())?,
                Err(ClientError::Refused(Refusal::SenderQuota { retry_after_ms })) => {
                    tokio::time::sleep(Duration::from_millis(retry_after_ms.max(10))).await;
                    break;
                }
                Err(ClientError::Refused(Refusal::TooLarge { size, max })) => {
                    warn!(
                        size,
                        max, "the relay refuses a message as too large; dropping it"
                    );
                    lock(wallet)
                        .outbox_sent(item.seq)
                        .map_err(|e| e.to_string())?;
                }
                Err(ClientError::Refused(r)) => {
                    debug!("relay refused for now: {r}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}
