//! The wallet's network driver: a tokio task that keeps the wallet connected to its relay,
//! sends the outbox (sealed for each friend, forwarded to friends on other relays), feeds
//! received envelopes to the wallet as durable steps, acknowledges them only after, lets time
//! pass for invoice expiry, and reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::client::{ClientError, RelayConnection};
use super::wire::Refusal;
use crate::wallet::{SharedWallet, WalletError};

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
    pub fn spawn(wallet: Arc<SharedWallet>, endpoint: quinn::Endpoint) -> Driver {
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
        wallet: &SharedWallet,
        limit: Duration,
        retrying: impl FnMut(&str),
    ) -> Result<(), WaitError> {
        let start = tokio::time::Instant::now();
        self.connected(limit, retrying).await?;
        let mut drained = self.drained.clone();
        let mut changes = wallet.lock_async().await.watch_changes();
        loop {
            let outbox = wallet
                .lock_async()
                .await
                .outbox_len()
                .map_err(WaitError::Wallet)?;
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

    /// Stop a driver that others (calls still under way) may hold too: wait up to `wait` for
    /// them to let go, then stop it; if they do not, it is asked to stop and stops when the
    /// last of them drops it. Whether it stopped within `wait`.
    pub async fn stop_shared(mut driver: std::sync::Arc<Driver>, wait: Duration) -> bool {
        let start = tokio::time::Instant::now();
        loop {
            match std::sync::Arc::try_unwrap(driver) {
                Ok(d) => {
                    d.stop().await;
                    return true;
                }
                Err(d) if start.elapsed() >= wait => {
                    let _ = d.stop.send(true);
                    return false;
                }
                Err(d) => {
                    driver = d;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
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
    wallet: Arc<SharedWallet>,
    endpoint: quinn::Endpoint,
    mut stop: watch::Receiver<bool>,
    status: watch::Sender<DriverStatus>,
    mut links: Links,
) {
    let signal = wallet.lock_async().await.outbox_signal();
    let mut drains: std::collections::BTreeMap<
        crate::protocol::identity::NodeId,
        tokio::task::JoinHandle<()>,
    > = std::collections::BTreeMap::new();
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 0u32;
    while !stopping(&stop) {
        let chosen = wallet.lock_async().await.relay();
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
        let identity = wallet.lock_async().await.identity().clone();
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
        if let Err(e) = wallet.lock_async().await.resend() {
            warn!("resend: {e}");
        }
        // Relays we moved away from: keep picking up what friends still send there.
        let to_drain = wallet
            .lock_async()
            .await
            .relays_to_drain()
            .unwrap_or_default();
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
    wallet: Arc<SharedWallet>,
    endpoint: quinn::Endpoint,
    old: crate::net::wire::RelayAddress,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    let still_listed = async |w: &SharedWallet| {
        w.lock_async()
            .await
            .relays_to_drain()
            .map(|l| l.iter().any(|(r, _)| r.key == old.key))
            .unwrap_or(false)
    };
    while !stopping(&stop) && still_listed(&wallet).await {
        let identity = wallet.lock_async().await.identity().clone();
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
                        let result = wallet.lock_async().await.receive_envelope(&d.envelope);
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
                    if !still_listed(&wallet).await {
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
    wallet: &SharedWallet,
    conn: &mut RelayConnection,
    relay: &crate::net::wire::RelayAddress,
    signal: &tokio::sync::Notify,
    stop: &mut watch::Receiver<bool>,
    links: &mut Links,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    let mut sending = Sending::new();
    let mut reports = Reporting::default();
    loop {
        sending.start(wallet, conn, relay).await?;
        reports.maybe_send(wallet, conn).await?;
        tokio::select! {
            Some((seqs, results)) = sending.answers.recv() => {
                sending.finish(wallet, seqs, results).await?;
            }
            // Held back by the relay (a quota): go on when the pause ends.
            _ = tokio::time::sleep_until(sending.hold.unwrap_or_else(tokio::time::Instant::now)), if sending.hold.is_some() => {
                sending.hold = None;
            }
            q = links.queries.recv() => {
                if let Some((query, answer)) = q {
                    // Asked here, answered on the side: mail keeps flowing meanwhile.
                    match conn.ask_routes(query).await {
                        Ok(reply) => {
                            tokio::spawn(async move {
                                let result = reply.await;
                                debug!(ok = result.is_ok(), "route query answered");
                                let _ = answer.send(result);
                            });
                        }
                        Err(e) => {
                            let _ = answer.send(Err(e));
                        }
                    }
                }
            }
            d = conn.recv_or_empty() => {
                let Some(first) = d else {
                    return Err(conn.close_reason().unwrap_or_else(|| "closed".into()));
                };
                receive_batch(wallet, conn, first, links).await?;
            }
            // Something changed (new mail, a new contact, or a move): try everything again.
            _ = signal.notified() => {
                sending.retry_unreachable();
                let chosen = wallet.lock_async().await.relay();
                if let Ok(Some(now)) = chosen
                    && now != *relay
                {
                    return Err(format!("moved to the relay at {}", now.addr));
                }
            }
            // A report held back by the minimum gap goes out when the gap ends.
            _ = tokio::time::sleep_until(reports.recheck_at()), if reports.held_back() => {}
            _ = tick.tick() => {
                let mut w = wallet.lock_async().await;
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
    /// Something may have changed during the gap: look when it ends.
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

    /// Is a report (perhaps changed) waiting for the gap to end?
    fn held_back(&self) -> bool {
        self.pending && !self.off
    }

    async fn maybe_send(
        &mut self,
        wallet: &SharedWallet,
        conn: &RelayConnection,
    ) -> Result<(), String> {
        if self.off {
            return Ok(());
        }
        // Within the gap after a report the next one cannot go anyway: look again when the
        // gap ends (the driver's loop wakes for it), not on every turn of the loop. Under load
        // the loop turns for every batch of mail, and building a report each time took the
        // wallet's lock and read its settings for nothing (`docs/benchmarks.md`).
        if self.sent_at.is_some_and(|t| t.elapsed() < REPORT_MIN_GAP) {
            self.pending = true;
            return Ok(());
        }
        self.pending = false;
        let report = wallet
            .lock_async()
            .await
            .capacity_report()
            .map_err(|e| e.to_string())?;
        let Some(report) = report else {
            return Ok(());
        };
        let now = (report.entries.clone(), report.rate);
        let due = self.sent_at.is_none_or(|t| t.elapsed() >= REPORT_PERIOD);
        if !due && self.last.as_ref() == Some(&now) {
            return Ok(());
        }
        self.sent_at = Some(tokio::time::Instant::now());
        let signed = wallet.lock_async().await.sign_report(report);
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

/// Most envelopes handled in one group commit, and most outbox messages sent at once.
const BATCH: usize = 64;

/// Received mail in groups of at least this many envelopes is committed without waiting for
/// the disk and flushed apart, without the wallet (`Wallet::receive_envelopes_unsynced`);
/// smaller groups wait for the disk in their commit (measured: `docs/benchmarks.md`).
const FLUSH_APART_FROM: usize = 8;

/// Handle `first` and whatever else has already arrived (up to [`BATCH`] envelopes) as one
/// group commit, then acknowledge them: the relay's acknowledgement is cumulative, so the last
/// seq covers the batch. Nothing is acknowledged unless its step committed.
async fn receive_batch(
    wallet: &SharedWallet,
    conn: &mut RelayConnection,
    first: super::client::Incoming,
    links: &mut Links,
) -> Result<(), String> {
    let mut mail = Vec::new();
    let mut empty = false;
    let mut next = Some(first);
    while let Some(incoming) = next.take() {
        match incoming {
            super::client::Incoming::Mail(d) => mail.push(d),
            super::client::Incoming::Empty => empty = true,
        }
        if mail.len() < BATCH && !empty {
            next = conn.try_recv_or_empty();
        }
    }
    if !mail.is_empty() {
        let envelopes: Vec<&[u8]> = mail.iter().map(|d| d.envelope.as_slice()).collect();
        for e in &envelopes {
            crate::metrics::timeline_mark(crate::metrics::Stage::Received, e);
        }
        // A large group means mail is queuing: its commit leaves the wallet and the core to
        // other work while the disk flushes. A small one means the wallet has little else to
        // do: it commits and waits for the disk in place, which is sooner and cheaper than
        // handing the flush to another thread and back.
        let result = if envelopes.len() >= FLUSH_APART_FROM {
            wallet
                .lock_async()
                .await
                .receive_envelopes_unsynced(&envelopes)
                .map(|(d, ticket)| (d, Some(ticket)))
        } else {
            wallet
                .lock_async()
                .await
                .receive_envelopes(&envelopes)
                .map(|d| (d, None))
        };
        for e in &envelopes {
            crate::metrics::timeline_mark(crate::metrics::Stage::Handled, e);
        }
        match result {
            Ok((deliveries, ticket)) => {
                debug!(count = deliveries.len(), "mail handled");
                if let Some(ticket) = ticket {
                    // On disk before the relay may forget it; the flush does not hold the
                    // wallet.
                    crate::wallet::sync(wallet, ticket)
                        .await
                        .map_err(|e| format!("could not store received mail: {e}"))?;
                }
                let last = mail.iter().map(|d| d.seq).max().unwrap_or_default();
                conn.ack(last).await.map_err(|e| e.to_string())?;
            }
            // Not acknowledged: the relay keeps it and delivers it again.
            Err(e) => return Err(format!("could not store received mail: {e}")),
        }
    }
    if empty {
        links.drained.send_modify(|n| *n += 1);
    }
    Ok(())
}

/// Most messages sent and not yet answered by the relay, per connection.
const MAX_UNANSWERED: usize = 512;

/// A batch's outbox seqs with the relay's answer to each.
type Answered = (Vec<u64>, Vec<Result<(), ClientError>>);

/// The outbox on its way to the relay: batches are sent without waiting for the answers to the
/// batches before (the relay commits them together), and each message leaves the outbox only
/// once the relay answered that it holds it.
struct Sending {
    /// Every outbox message up to this seq was sent on this connection (or skipped as
    /// unreachable): only what is newer is read from the outbox, unless a refusal sets it back.
    sent_up_to: u64,
    /// Outbox messages for friends we can't reach yet (no contact): skipped, not allowed to
    /// block the rest, until something changes.
    unreachable: std::collections::BTreeSet<u64>,
    /// Sent, answer not in yet.
    unanswered: std::collections::BTreeSet<u64>,
    /// The answers of each batch, in the order sent.
    answers: tokio::sync::mpsc::UnboundedReceiver<Answered>,
    answer_tx: tokio::sync::mpsc::UnboundedSender<Answered>,
    /// No new sends before this (the relay asked us to wait).
    hold: Option<tokio::time::Instant>,
}

impl Sending {
    fn new() -> Sending {
        let (answer_tx, answers) = tokio::sync::mpsc::unbounded_channel();
        Sending {
            sent_up_to: 0,
            unreachable: Default::default(),
            unanswered: Default::default(),
            answers,
            answer_tx,
            hold: None,
        }
    }

    /// Seal and send what the outbox holds that is not sent yet, in batches of [`BATCH`].
    async fn start(
        &mut self,
        wallet: &SharedWallet,
        conn: &RelayConnection,
        relay: &crate::net::wire::RelayAddress,
    ) -> Result<(), String> {
        while self.hold.is_none() && self.unanswered.len() < MAX_UNANSWERED {
            let items = wallet
                .lock_async()
                .await
                .outbox_after(self.sent_up_to, BATCH)
                .map_err(|e| e.to_string())?;
            let Some(last) = items.last() else {
                return Ok(());
            };
            self.sent_up_to = last.seq;
            // After a setback, what is still on its way is not sent twice.
            let items: Vec<_> = items
                .into_iter()
                .filter(|i| !self.unreachable.contains(&i.seq) && !self.unanswered.contains(&i.seq))
                .collect();
            // Seal everything under one lock, then send it all at once.
            let mut seqs = Vec::with_capacity(items.len());
            let mut sends = Vec::with_capacity(items.len());
            {
                let w = wallet.lock_async().await;
                for item in &items {
                    let mut entropy = [0u8; 72];
                    getrandom::fill(&mut entropy).map_err(|e| e.to_string())?;
                    match w.seal_outgoing(item, entropy) {
                        Ok((envelope, to_relay)) => {
                            crate::metrics::timeline_mark(crate::metrics::Stage::Sealed, &envelope);
                            let via = (to_relay.key != relay.key).then_some(to_relay);
                            seqs.push(item.seq);
                            sends.push((item.to, via, envelope));
                        }
                        Err(WalletError::Storage(why)) => {
                            // No contact for this friend (yet): keep it for when there is one.
                            warn!(from = %w.id().short(), to = %item.to.short(), kind = item.kind, "can't send: {why}");
                            self.unreachable.insert(item.seq);
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            if seqs.is_empty() {
                continue;
            }
            debug!(count = seqs.len(), "sending");
            self.unanswered.extend(seqs.iter().copied());
            let answers = conn.start_all(sends).await;
            let tx = self.answer_tx.clone();
            tokio::spawn(async move {
                let _ = tx.send((seqs, answers.await));
            });
        }
        Ok(())
    }

    /// The relay answered a batch: what it holds leaves the outbox; what it refused for now
    /// is sent again after the pause it asked for.
    async fn finish(
        &mut self,
        wallet: &SharedWallet,
        seqs: Vec<u64>,
        results: Vec<Result<(), ClientError>>,
    ) -> Result<(), String> {
        let mut gone = Vec::with_capacity(seqs.len());
        let mut failed = None;
        for (seq, result) in seqs.iter().copied().zip(results) {
            match result {
                Ok(()) => gone.push(seq),
                Err(ClientError::Refused(Refusal::SenderQuota { retry_after_ms })) => {
                    self.send_again(seq);
                    self.pause(Duration::from_millis(retry_after_ms.max(10)));
                }
                Err(ClientError::Refused(Refusal::TooLarge { size, max })) => {
                    warn!(
                        size,
                        max, "the relay refuses a message as too large; dropping it"
                    );
                    gone.push(seq);
                }
                Err(ClientError::Refused(r)) => {
                    debug!("relay refused for now: {r}");
                    self.send_again(seq);
                    self.pause(Duration::from_millis(500));
                }
                Err(e) => {
                    failed.get_or_insert(e.to_string());
                }
            }
        }
        for seq in &seqs {
            self.unanswered.remove(seq);
        }
        // What the relay did take is recorded even when the connection then failed.
        wallet
            .lock_async()
            .await
            .outbox_sent_all(&gone)
            .map_err(|e| e.to_string())?;
        match failed {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Read the outbox again from `seq` on (the relay refused it for now).
    fn send_again(&mut self, seq: u64) {
        self.sent_up_to = self.sent_up_to.min(seq.saturating_sub(1));
    }

    /// Something changed (a new contact, say): try the unreachable messages again.
    fn retry_unreachable(&mut self) {
        if let Some(&first) = self.unreachable.first() {
            self.send_again(first);
        }
        self.unreachable.clear();
    }

    fn pause(&mut self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        self.hold = Some(self.hold.map_or(until, |h| h.max(until)));
    }
}
