//! The relay: accepts wallets over QUIC (mutual TLS by Ed25519 keys), stores envelopes in
//! their recipients' mailboxes, and pushes mail to each wallet while it is connected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use offst_core::metrics::{self, Stage};
use offst_core::net::client::{ClientError, RelayConnection};
use offst_core::net::frame::{FrameError, read_frame, write_frame};
use offst_core::net::tls;
use offst_core::net::wire::{self, FromRelay, MAX_FRAME_SIZE, Refusal, RelayAddress, ToRelay};
use offst_core::protocol::identity::{Identity, NodeId};
use offst_core::sync::{TokenBucket, lock};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::store::{Bounds, Store, StoreError};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The key file could not be read or written.
    #[error("relay key {path}: {detail}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The mail store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The address could not be bound.
    #[error("can't listen on {addr}: {detail}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        detail: String,
    },
}

/// Application error codes on connection close.
pub mod close {
    /// The relay is shutting down.
    pub const SHUTDOWN: u32 = 1;
    /// The client broke the protocol (malformed or oversized frame).
    pub const PROTOCOL: u32 = 2;
    /// The relay is at its connection limit.
    pub const BUSY: u32 = 3;
}

/// Load the relay's identity from `dir/relay.key` (base32 seed), or make one.
pub fn load_or_create_identity(dir: &std::path::Path) -> Result<Identity, RelayError> {
    let path = dir.join("relay.key");
    let err = |detail: String| RelayError::Key {
        path: path.display().to_string(),
        detail,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let seed: [u8; 32] = data_encoding::BASE32_NOPAD
                .decode(text.trim().to_ascii_uppercase().as_bytes())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| err("expected 52 base32 characters (a 32-byte seed)".into()))?;
            Ok(Identity::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| err(e.to_string()))?;
            let text = data_encoding::BASE32_NOPAD
                .encode(&seed)
                .to_ascii_lowercase();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            use std::io::Write;
            let mut f = options.open(&path).map_err(|e| err(e.to_string()))?;
            f.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok(Identity::from_seed(seed))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct Shared {
    config: Config,
    store: Store,
    /// This relay's identity and endpoint, for forwarding to other relays.
    identity: Identity,
    key: NodeId,
    endpoint: quinn::Endpoint,
    /// Per destination relay: the wake-up of its forwarder task (the queue on disk).
    forwarders: Mutex<HashMap<NodeId, watch::Sender<u64>>>,
    /// Per destination relay: its cut-through task, which sends an envelope on as it arrives,
    /// while this relay's own commit is under way.
    cut_through: Mutex<HashMap<NodeId, mpsc::UnboundedSender<CutThrough>>>,
    /// Destination relays whose cut-through failed: their envelopes go only through the queue
    /// on disk, in order, until it is empty again.
    cut_through_paused: Mutex<std::collections::HashSet<NodeId>>,
    /// Envelopes handed to cut-through tasks and not yet sent: past
    /// [`MAX_CUT_THROUGH_BACKLOG`] new ones wait in the queue on disk only, so a slow next
    /// relay cannot make this relay hold unbounded copies in memory.
    cut_through_backlog: AtomicUsize,
    forwarded: AtomicU64,
    stopping: std::sync::atomic::AtomicBool,
    buckets: Mutex<HashMap<NodeId, TokenBucket>>,
    /// Per wallet, the last seq it acknowledged: a new connection starts after it, even before
    /// the deletion has committed.
    acked: Mutex<HashMap<NodeId, u64>>,
    connections: AtomicUsize,
    accepted: AtomicU64,
    delivered: AtomicU64,
    /// The index, unless switched off.
    index: Option<Arc<crate::index::IndexService>>,
}

impl Shared {
    /// Take one token from `sender`'s bucket, or say when one will be there.
    fn take_token(&self, sender: NodeId) -> Result<(), u64> {
        let rate = f64::from(self.config.sender_rate_per_sec.max(1));
        let burst = f64::from(self.config.sender_burst);
        lock(&self.buckets)
            .entry(sender)
            .or_insert_with(|| TokenBucket::full(rate, burst))
            .take()
    }
}

/// A running relay.
pub struct RelayHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its key: what wallets pin.
    pub key: NodeId,
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
    purge: tokio::task::JoinHandle<()>,
}

/// Counters, for logs and load tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections now.
    pub connections: usize,
    /// Envelopes accepted since start.
    pub accepted: u64,
    /// Envelopes delivered since start (pushed; a redelivery counts again).
    pub delivered: u64,
    /// Envelopes forwarded to other relays since start.
    pub forwarded: u64,
    /// SQLite transactions the mailbox store committed since start.
    pub commits: u64,
    /// Envelopes answered for without ever being written, since start: held while their
    /// recipient acknowledged them, or while the next relay took them (cut-through).
    pub never_written: u64,
}

impl RelayHandle {
    /// Counters now.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            forwarded: self.shared.forwarded.load(Ordering::Relaxed),
            commits: self.shared.store.commits(),
            never_written: self.shared.store.never_written(),
        }
    }

    /// Envelopes accepted for other relays and not yet taken by them (committed here).
    pub async fn waiting_to_forward(&self) -> Result<u64, StoreError> {
        self.shared.store.count_forward().await
    }

    /// Make the mail store's next `n` commits fail after their statements ran. For tests.
    #[doc(hidden)]
    pub fn fail_next_commits(&self, n: u32) {
        self.shared.store.fail_next_commits(n);
    }

    /// Hold mail for connected recipients unwritten this long (zero: write all mail at once),
    /// as `hold_ms` in the configuration does, while the relay runs.
    pub fn set_hold(&self, hold_for: std::time::Duration) {
        self.shared.store.set_hold(hold_for);
    }

    /// Hold the mail store's commits back while `hold` is set. For tests.
    #[doc(hidden)]
    pub fn hold_commits(&self, hold: bool) {
        self.shared.store.hold_commits(hold);
    }

    /// What the index holds (`None` when it is switched off).
    pub fn index_stats(&self) -> Option<offst_core::routing::IndexStats> {
        self.shared.index.as_ref().map(|i| i.stats())
    }

    /// Stop: refuse new connections, close the open ones, commit every accepted envelope.
    pub async fn shutdown(self) {
        self.accept.abort();
        self.purge.abort();
        self.shared.stopping.store(true, Ordering::Relaxed);
        if let Ok(mut f) = self.shared.forwarders.lock() {
            f.clear();
        }
        self.endpoint
            .close(close::SHUTDOWN.into(), b"relay shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        self.shared.store.close();
        info!("relay stopped");
    }
}

/// Start a relay with `config`.
pub async fn start(config: Config) -> Result<RelayHandle, RelayError> {
    config.validate()?;
    let identity = load_or_create_identity(&config.data_dir)?;
    let store = Store::open(
        &config.data_dir,
        Bounds {
            max_messages: config.max_mailbox_messages,
            max_bytes: config.max_mailbox_bytes,
        },
    )?;
    store.set_hold(std::time::Duration::from_millis(config.hold_ms));
    let ca = match (&config.tls_certificate, &config.tls_private_key) {
        (Some(chain), Some(key)) => {
            let ca = tls::load_ca_certificate(chain, key)?;
            info!(chain = %chain.display(), "serving a CA-signed certificate to clients that check by name");
            Some(ca)
        }
        _ => None,
    };
    let server = tls::server_config(&identity, ca)?;
    // A stateless-reset key derived from the relay's identity: after a crash and restart, the
    // new process can tell clients at once that their old connections are gone (instead of
    // leaving them to time out).
    let reset = blake3::derive_key("offst relay stateless reset v1", &identity.seed());
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config.reset_key(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &reset,
    )));
    // Connection ids are checked against a keyed hash before a reset is sent; that key must
    // survive the restart too, or the new process drops the old clients' packets silently.
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(
        blake3::derive_key("offst relay connection ids v1", &identity.seed())
            .get(..8)
            .unwrap_or(&[0; 8]),
    );
    let cid_key = u64::from_le_bytes(cid_key);
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let bind_err = |e: std::io::Error| RelayError::Bind {
        addr: config.listen,
        detail: e.to_string(),
    };
    let socket = std::net::UdpSocket::bind(config.listen).map_err(bind_err)?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_err)?;
    let addr = endpoint.local_addr().map_err(|e| RelayError::Bind {
        addr: config.listen,
        detail: e.to_string(),
    })?;
    let key = identity.id();
    let index = config
        .index
        .then(|| config.peers().map(crate::index::IndexService::new))
        .transpose()?;
    let shared = Arc::new(Shared {
        config,
        store,
        identity,
        key,
        endpoint: endpoint.clone(),
        forwarders: Mutex::new(HashMap::new()),
        forwarded: AtomicU64::new(0),
        stopping: std::sync::atomic::AtomicBool::new(false),
        buckets: Mutex::new(HashMap::new()),
        acked: Mutex::new(HashMap::new()),
        cut_through: Mutex::new(HashMap::new()),
        cut_through_paused: Mutex::new(std::collections::HashSet::new()),
        cut_through_backlog: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        accepted: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        index,
    });
    info!(%key, %addr, "relay listening");
    // Resume forwarding what was accepted before a restart, from the queue on disk and in
    // order: no cut-through to those relays until it is empty.
    for relay in shared.store.forward_destinations().await? {
        lock(&shared.cut_through_paused).insert(relay.key);
        wake_forwarder(&shared, relay);
    }
    let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
    let purge = tokio::spawn(purge_loop(shared.clone()));
    if let Some(index) = &shared.index {
        index.spawn_peers(endpoint.clone(), shared.identity.clone());
        let index = index.clone();
        let stopping = shared.clone();
        tokio::spawn(async move {
            while !stopping.stopping.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let n = index.expire(now_ms());
                if n > 0 {
                    debug!(n, stats = ?index.stats(), "index: reports expired");
                }
            }
        });
    }
    Ok(RelayHandle {
        addr,
        key,
        endpoint,
        shared,
        accept,
        purge,
    })
}

async fn purge_loop(shared: Arc<Shared>) {
    let age = shared.config.max_mail_age_secs;
    if age == 0 {
        return;
    }
    loop {
        let cutoff = now_ms().saturating_sub(age.saturating_mul(1000));
        match shared.store.purge(cutoff).await {
            Ok(0) => {}
            Ok(n) => info!(n, "deleted mail older than max_mail_age_secs"),
            Err(e) => warn!("purge failed: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.connections.load(Ordering::Relaxed) >= shared.config.max_connections {
            warn!(remote = %incoming.remote_address(), "at the connection limit; refusing");
            incoming.refuse();
            continue;
        }
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let shared2 = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => match tls::peer_id(&conn) {
                    Ok(id) => serve(conn, id, shared2.clone()).await,
                    Err(e) => warn!(%remote, "client without a usable key: {e}"),
                },
                Err(e) => warn!(%remote, "handshake failed: {e}"),
            }
            shared2.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Serve one wallet until it goes away.
async fn serve(conn: quinn::Connection, id: NodeId, shared: Arc<Shared>) {
    debug!(client = %id.short(), remote = %conn.remote_address(), "wallet connected");
    let (send, mut recv) = match conn.accept_bi().await {
        Ok(s) => s,
        Err(e) => {
            debug!(client = %id.short(), "no stream: {e}");
            return;
        }
    };
    let (out_tx, out_rx) = mpsc::channel::<FromRelay>(256);
    let (urgent_tx, urgent_rx) = mpsc::channel::<FromRelay>(256);
    let writer = tokio::spawn(write_loop(send, urgent_rx, out_rx));
    // Answers go out in the order the envelopes came in, each once its batch committed; up to
    // MAX_IN_FLIGHT envelopes of one connection may be waiting for their commit.
    let (replies, replies_rx) = mpsc::channel::<(u64, Queued)>(MAX_IN_FLIGHT);
    let responder = tokio::spawn(respond_loop(shared.clone(), replies_rx, out_tx.clone()));
    let acked = Arc::new(AtomicU64::new(0));
    let (ack_tx, ack_rx) = watch::channel(0u64);
    let deliver = tokio::spawn(deliver_loop(
        id,
        shared.clone(),
        out_tx.clone(),
        ack_rx,
        acked.clone(),
    ));
    loop {
        let frame = match read_frame(&mut recv, MAX_FRAME_SIZE).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(FrameError::TooLarge { size, max }) => {
                warn!(client = %id.short(), size, "oversized frame; closing");
                let _ = out_tx
                    .send(FromRelay::Error {
                        reason: format!("frame of {size} bytes is over the {max}-byte limit"),
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                conn.close(close::PROTOCOL.into(), b"oversized frame");
                break;
            }
            Err(e) => {
                debug!(client = %id.short(), "stream ended: {e}");
                break;
            }
        };
        let msg: ToRelay = match wire::decode(&frame) {
            Ok(m) => m,
            Err(reason) => {
                warn!(client = %id.short(), "malformed frame; closing");
                let _ = out_tx.send(FromRelay::Error { reason }).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                conn.close(close::PROTOCOL.into(), b"malformed frame");
                break;
            }
        };
        match msg {
            ToRelay::Send {
                id: req,
                to,
                envelope,
            } => {
                let answer = queue_envelope(&shared, id, to, None, envelope);
                if replies.send((req, answer)).await.is_err() {
                    break;
                }
            }
            ToRelay::Forward {
                id: req,
                to,
                relay,
                envelope,
            } => {
                let relay = (relay.key != shared.key).then_some(relay);
                let answer = queue_envelope(&shared, id, to, relay, envelope);
                if replies.send((req, answer)).await.is_err() {
                    break;
                }
            }
            ToRelay::Hello => {}
            ToRelay::Report { id: req, report } => {
                let answer = take_report(&shared, id, report);
                let reply = match answer {
                    Ok(()) => FromRelay::Accepted { id: req },
                    Err(reason) => FromRelay::Refused { id: req, reason },
                };
                if out_tx.send(reply).await.is_err() {
                    break;
                }
            }
            ToRelay::Reports { id: req, reports } => {
                let reply = match &shared.index {
                    None => FromRelay::Refused {
                        id: req,
                        reason: Refusal::IndexOff,
                    },
                    Some(index) if !index.is_peer(&id) => FromRelay::Refused {
                        id: req,
                        reason: Refusal::NotAPeer,
                    },
                    Some(index) => {
                        let now = now_ms();
                        let mut refused = 0usize;
                        for r in reports {
                            match index.accept(r, now) {
                                Ok(()) | Err(offst_core::routing::ReportError::Stale { .. }) => {}
                                Err(e) => {
                                    refused += 1;
                                    debug!(peer = %id.short(), "peer report refused: {e}");
                                }
                            }
                        }
                        if refused > 0 {
                            warn!(peer = %id.short(), refused, "index peer sent reports that do not verify");
                        }
                        FromRelay::Accepted { id: req }
                    }
                };
                if out_tx.send(reply).await.is_err() {
                    break;
                }
            }
            ToRelay::FindRoutes { id: req, query } => {
                let Some(index) = shared.index.clone() else {
                    let reply = FromRelay::Refused {
                        id: req,
                        reason: Refusal::IndexOff,
                    };
                    if out_tx.send(reply).await.is_err() {
                        break;
                    }
                    continue;
                };
                if let Err(retry_after_ms) = shared.take_token(id) {
                    let reply = FromRelay::Refused {
                        id: req,
                        reason: Refusal::SenderQuota { retry_after_ms },
                    };
                    if out_tx.send(reply).await.is_err() {
                        break;
                    }
                    continue;
                }
                // Answered ahead of the mail waiting to go out.
                let out = urgent_tx.clone();
                tokio::spawn(async move {
                    let result = index.find(query).await;
                    let _ = out.send(FromRelay::Routes { id: req, result }).await;
                });
            }
            ToRelay::Identify => {
                let answer = match tls::identity_binding(&conn) {
                    Some(binding) => FromRelay::Identity {
                        key: shared.key,
                        proof: tls::prove_identity(&shared.identity, &binding),
                    },
                    None => FromRelay::Error {
                        reason: "no TLS exporter on this connection".into(),
                    },
                };
                if out_tx.send(answer).await.is_err() {
                    break;
                }
            }
            ToRelay::Ack { seq } => {
                if let Err(e) = shared.store.delete(id, seq) {
                    warn!("ack not stored: {e}");
                }
                acked.fetch_max(seq, Ordering::Relaxed);
                if let Ok(mut map) = shared.acked.lock() {
                    let e = map.entry(id).or_insert(0);
                    *e = (*e).max(seq);
                }
                ack_tx.send_replace(seq);
            }
        }
    }
    deliver.abort();
    // Its subscription must be gone before unsubscribing, or the mailbox's tail would stay.
    let _ = deliver.await;
    drop(replies);
    let _ = responder.await;
    drop(out_tx);
    drop(urgent_tx);
    let _ = writer.await;
    shared.store.unsubscribe(&id);
    debug!(client = %id.short(), "wallet gone");
}

/// A wallet's own capacity report for the index.
fn take_report(
    shared: &Arc<Shared>,
    sender: NodeId,
    report: offst_core::routing::SignedReport,
) -> Result<(), Refusal> {
    let index = shared.index.as_ref().ok_or(Refusal::IndexOff)?;
    if report.report.node != sender {
        return Err(Refusal::BadReport {
            reason: "a wallet reports only its own channels".into(),
        });
    }
    shared
        .take_token(sender)
        .map_err(|retry_after_ms| Refusal::SenderQuota { retry_after_ms })?;
    match index.accept(report, now_ms()) {
        // A report sent again (after a reconnect) is no news, and no error.
        Ok(()) | Err(offst_core::routing::ReportError::Stale { .. }) => Ok(()),
        Err(e) => Err(Refusal::BadReport {
            reason: e.to_string(),
        }),
    }
}

/// Envelopes of one connection waiting for their commit.
const MAX_IN_FLIGHT: usize = 1024;

/// An envelope's way to its answer.
enum Queued {
    /// Refused before storing.
    Refused(Refusal),
    /// Queued for the store; for another relay, if set: also sent on by cut-through (then
    /// the receiver says whether the next relay took it).
    Stored(
        crate::store::Pending,
        Option<RelayAddress>,
        Option<u64>,
        Option<tokio::sync::oneshot::Receiver<bool>>,
    ),
}

/// An envelope for the next relay, sent before this relay's commit: recipient, envelope, and
/// whether the next relay took it.
type CutThrough = (NodeId, Vec<u8>, Done);

/// Where cut-through reports whether the next relay took an envelope: to the connection that
/// answers its sender, and to the store, which holds it unwritten meanwhile.
struct Done {
    tx: tokio::sync::oneshot::Sender<bool>,
    sent_on: crate::store::SentOn,
}

impl Done {
    fn send(self, taken: bool) {
        self.sent_on.set(taken);
        let _ = self.tx.send(taken);
    }
}

/// Hand `envelope` to the cut-through task of `relay` (started on first use), unless its
/// cut-through is paused. The receiver hears whether the next relay took it.
fn cut_through(
    shared: &Arc<Shared>,
    relay: &RelayAddress,
    to: NodeId,
    envelope: &[u8],
) -> Option<(tokio::sync::oneshot::Receiver<bool>, crate::store::SentOn)> {
    let mut paused = lock(&shared.cut_through_paused);
    if shared.cut_through_backlog.load(Ordering::Relaxed) >= MAX_CUT_THROUGH_BACKLOG {
        // From here on, in order through the queue on disk until it is empty.
        paused.insert(relay.key);
    }
    if paused.contains(&relay.key) {
        return None;
    }
    drop(paused);
    let (tx, heard) = tokio::sync::oneshot::channel();
    let sent_on = crate::store::SentOn::new();
    let done = Done {
        tx,
        sent_on: sent_on.clone(),
    };
    let mut tasks = lock(&shared.cut_through);
    let tx = tasks.entry(relay.key).or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(cut_through_loop(shared.clone(), relay.clone(), rx));
        tx
    });
    tx.send((to, envelope.to_vec(), done)).ok()?;
    shared.cut_through_backlog.fetch_add(1, Ordering::Relaxed);
    Some((heard, sent_on))
}

/// Most envelopes waiting in memory for cut-through, over all next relays.
const MAX_CUT_THROUGH_BACKLOG: usize = 4096;

/// Send envelopes on to `relay` as they arrive, in order, in batches, without waiting for the
/// answers to earlier batches. What the next relay does not take (or a lost connection) pauses
/// cut-through to it: those envelopes, once committed here, go through the queue on disk,
/// which keeps their order, and cut-through resumes when that queue is empty.
async fn cut_through_loop(
    shared: Arc<Shared>,
    relay: RelayAddress,
    mut rx: mpsc::UnboundedReceiver<CutThrough>,
) {
    let mut conn: Option<RelayConnection> = None;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        shared
            .cut_through_backlog
            .fetch_sub(batch.len(), Ordering::Relaxed);
        if broken.swap(false, Ordering::Relaxed) {
            conn = None;
        }
        if lock(&shared.cut_through_paused).contains(&relay.key) {
            for (_, _, done) in batch {
                done.send(false);
            }
            continue;
        }
        if conn.is_none() {
            match RelayConnection::connect_to(&shared.endpoint, &relay, &shared.identity).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    debug!(relay = %relay.key.short(), "cut-through: can't reach: {e}");
                    lock(&shared.cut_through_paused).insert(relay.key);
                    for (_, _, done) in batch {
                        done.send(false);
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        let mut items = Vec::with_capacity(batch.len());
        let mut dones = Vec::with_capacity(batch.len());
        for (to, envelope, done) in batch {
            metrics::timeline_mark(Stage::Forwarding, &envelope);
            items.push((to, None, envelope));
            dones.push(done);
        }
        let answers = c.start_all(items).await;
        let (shared, key, broken) = (shared.clone(), relay.key, broken.clone());
        tokio::spawn(async move {
            for (answer, done) in answers.await.into_iter().zip(dones) {
                let taken = match answer {
                    Ok(()) => true,
                    // Permanent: the queue on disk logs and drops it.
                    Err(ClientError::Refused(_)) => false,
                    Err(_) => {
                        broken.store(true, Ordering::Relaxed);
                        false
                    }
                };
                if taken {
                    shared.forwarded.fetch_add(1, Ordering::Relaxed);
                } else {
                    lock(&shared.cut_through_paused).insert(key);
                }
                done.send(taken);
            }
        });
    }
}

/// Check an envelope's bounds and queue it for storing, keeping the order of arrival.
fn queue_envelope(
    shared: &Arc<Shared>,
    sender: NodeId,
    to: NodeId,
    relay: Option<RelayAddress>,
    envelope: Vec<u8>,
) -> Queued {
    let key = metrics::timeline_key(&envelope);
    metrics::timeline_mark_key(Stage::RelayIn, key);
    let size = envelope.len() as u64;
    if size > shared.config.max_envelope_bytes {
        return Queued::Refused(Refusal::TooLarge {
            size,
            max: shared.config.max_envelope_bytes,
        });
    }
    if let Some(r) = &relay
        && (r.addr.is_empty() || r.addr.len() > 255)
    {
        return Queued::Refused(Refusal::Unavailable);
    }
    if let Err(retry_after_ms) = shared.take_token(sender) {
        return Queued::Refused(Refusal::SenderQuota { retry_after_ms });
    }
    let sent_on = relay
        .as_ref()
        .and_then(|r| cut_through(shared, r, to, &envelope));
    let queued = match (&relay, sent_on) {
        (Some(r), Some((heard, state))) => shared
            .store
            .enqueue_sent_on(r.clone(), to, envelope, now_ms(), state)
            .map(|p| (p, Some(heard))),
        (_, _) => shared
            .store
            .enqueue(relay.clone(), to, envelope, now_ms())
            .map(|p| (p, None)),
    };
    match queued {
        Ok((p, sent_on)) => Queued::Stored(p, relay, key, sent_on),
        Err(e) => {
            warn!("could not queue an envelope: {e}");
            Queued::Refused(Refusal::Unavailable)
        }
    }
}

async fn respond_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(u64, Queued)>,
    out: mpsc::Sender<FromRelay>,
) {
    while let Some((req, queued)) = rx.recv().await {
        let answer = match queued {
            Queued::Refused(r) => Err(r),
            Queued::Stored(pending, relay, key, sent_on) => match pending.await {
                Ok(Ok(Ok(seq))) => {
                    metrics::timeline_mark_key(Stage::Stored, key);
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    // Mail for this relay's own users went to their deliveries as soon as it
                    // was inserted, and they were woken again at the commit.
                    match (relay, sent_on) {
                        (None, _) => {}
                        (Some(r), None) => wake_forwarder(&shared, r),
                        // Sent on before the commit: once the next relay took it, it leaves
                        // the queue; if not, the queue's forwarder sends it.
                        (Some(r), Some(heard)) => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                // Seq 0: held and never written, as the next relay took it.
                                if heard.await == Ok(true) {
                                    if seq == 0 {
                                        return;
                                    }
                                    if let Err(e) = shared.store.delete_forward(seq) {
                                        warn!("forward queue: {e}");
                                    }
                                } else {
                                    wake_forwarder(&shared, r);
                                }
                            });
                        }
                    }
                    Ok(())
                }
                Ok(Ok(Err(refusal))) => Err(refusal),
                Ok(Err(e)) => {
                    warn!("could not store an envelope: {e}");
                    Err(Refusal::Unavailable)
                }
                Err(_) => Err(Refusal::Unavailable),
            },
        };
        let reply = match answer {
            Ok(()) => FromRelay::Accepted { id: req },
            Err(reason) => FromRelay::Refused { id: req, reason },
        };
        if out.send(reply).await.is_err() {
            return;
        }
    }
}

fn wake_forwarder(shared: &Arc<Shared>, relay: RelayAddress) {
    let Ok(mut map) = shared.forwarders.lock() else {
        return;
    };
    if let Some(tx) = map.get(&relay.key) {
        tx.send_modify(|n| *n += 1);
        return;
    }
    let (tx, rx) = watch::channel(0u64);
    map.insert(relay.key, tx);
    tokio::spawn(forward_loop(shared.clone(), relay, rx));
}

/// Forward what waits for `relay`, oldest first, until it has stored each; retry with backoff.
async fn forward_loop(shared: Arc<Shared>, relay: RelayAddress, mut wake: watch::Receiver<u64>) {
    const MIN_BACKOFF: Duration = Duration::from_millis(250);
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    let mut backoff = MIN_BACKOFF;
    let mut conn: Option<RelayConnection> = None;
    let mut cursor = 0u64;
    while !shared.stopping.load(Ordering::Relaxed) {
        wake.mark_unchanged();
        let batch = match shared.store.fetch_forward(relay.key, cursor, 64).await {
            Ok(b) => b,
            Err(e) => {
                warn!("forward queue: {e}");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if batch.is_empty() {
            if shared.store.held_forward(&relay.key) > 0 {
                // Envelopes cut-through sent before the pause are held, their answers awaited:
                // one the next relay refuses is written and must go before newer ones.
                let hold = shared
                    .store
                    .hold_for()
                    .max(std::time::Duration::from_millis(1));
                let _ = tokio::time::timeout(hold, wake.changed()).await;
                continue;
            }
            // Everything for this relay went: envelopes may go on by cut-through again.
            lock(&shared.cut_through_paused).remove(&relay.key);
            if wake.changed().await.is_err() {
                return;
            }
            continue;
        }
        if conn.is_none() {
            match RelayConnection::connect_to(&shared.endpoint, &relay, &shared.identity).await {
                Ok(c) => {
                    info!(relay = %relay.key.short(), addr = %relay.addr, "forwarding");
                    conn = Some(c);
                }
                Err(e) => {
                    warn!(relay = %relay.key.short(), addr = %relay.addr, "can't reach: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        // The whole batch at once: the next relay commits it together and answers each in
        // order, instead of one round trip and one commit per envelope.
        let seqs: Vec<u64> = batch.iter().map(|out| out.seq).collect();
        for out in &batch {
            metrics::timeline_mark(Stage::Forwarding, &out.envelope);
        }
        let answers = c
            .send_all(
                batch
                    .into_iter()
                    .map(|out| (out.recipient, None, out.envelope))
                    .collect(),
            )
            .await;
        // What the next relay holds leaves the queue. The cursor passes only what is settled
        // in order, so an envelope refused for now is fetched (and sent) again.
        let mut in_order = true;
        let mut setback = None;
        for (seq, answer) in seqs.into_iter().zip(answers) {
            let settled = match answer {
                Ok(()) => {
                    shared.forwarded.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(ClientError::Refused(Refusal::TooLarge { size, max })) => {
                    // Permanent: the next relay will never take it. Logged, then dropped.
                    error!(relay = %relay.key.short(), size, max, "the next relay refuses this envelope as too large; dropping it");
                    true
                }
                Err(ClientError::Refused(Refusal::SenderQuota { retry_after_ms })) => {
                    setback.get_or_insert(Setback::Quota(retry_after_ms));
                    false
                }
                Err(ClientError::Refused(reason)) => {
                    debug!(relay = %relay.key.short(), "refused for now: {reason}; retrying in {backoff:?}");
                    setback.get_or_insert(Setback::Refused);
                    false
                }
                Err(e) => {
                    warn!(relay = %relay.key.short(), "connection lost: {e}; retrying in {backoff:?}");
                    setback.get_or_insert(Setback::Lost);
                    false
                }
            };
            if settled {
                if in_order {
                    cursor = seq;
                }
                if let Err(e) = shared.store.delete_forward(seq) {
                    warn!("forward queue: {e}");
                }
            } else {
                in_order = false;
            }
        }
        match setback {
            None => backoff = MIN_BACKOFF,
            Some(Setback::Quota(ms)) => {
                tokio::time::sleep(Duration::from_millis(ms.max(10))).await;
            }
            Some(s) => {
                if matches!(s, Setback::Lost) {
                    conn = None;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why a forwarded batch was not all taken.
enum Setback {
    /// The next relay asks us to wait this many ms.
    Quota(u64),
    /// Refused for now.
    Refused,
    /// The connection failed.
    Lost,
}

/// Push the wallet's mail, oldest first, keeping at most `delivery_window` unacknowledged.
async fn deliver_loop(
    id: NodeId,
    shared: Arc<Shared>,
    out: mpsc::Sender<FromRelay>,
    mut acks: watch::Receiver<u64>,
    acked: Arc<AtomicU64>,
) {
    let mut mail = shared.store.subscribe(id).0;
    let window = shared.config.delivery_window;
    let mut cursor = shared
        .acked
        .lock()
        .ok()
        .and_then(|m| m.get(&id).copied())
        .unwrap_or(0);
    let mut in_flight: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut announced_empty = false;
    loop {
        // Forget what the wallet acknowledged.
        let done = acked.load(Ordering::Relaxed);
        while in_flight.front().is_some_and(|s| *s <= done) {
            in_flight.pop_front();
        }
        let room = window.saturating_sub(in_flight.len() as u64);
        if room == 0 {
            if acks.changed().await.is_err() {
                return;
            }
            continue;
        }
        mail.mark_unchanged();
        let batch = match shared.store.fetch(id, cursor, room.min(64)).await {
            Ok(b) => b,
            Err(e) => {
                warn!("fetch failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if !announced_empty {
                announced_empty = true;
                if out.send(FromRelay::Empty).await.is_err() {
                    return;
                }
            }
            if mail.changed().await.is_err() {
                return;
            }
            continue;
        }
        announced_empty = false;
        for m in batch {
            metrics::timeline_mark(Stage::Delivered, &m.envelope);
            cursor = m.seq;
            in_flight.push_back(m.seq);
            let frame = FromRelay::Deliver {
                seq: m.seq,
                received_ms: m.received_ms,
                envelope: m.envelope,
            };
            if out.send(frame).await.is_err() {
                return;
            }
            shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Write frames to a wallet, those in `urgent` (route answers) before the rest.
async fn write_loop(
    mut send: quinn::SendStream,
    mut urgent: mpsc::Receiver<FromRelay>,
    mut rx: mpsc::Receiver<FromRelay>,
) {
    loop {
        let msg = tokio::select! {
            biased;
            Some(m) = urgent.recv() => m,
            Some(m) = rx.recv() => m,
            else => break,
        };
        if write_frame(&mut send, &wire::encode(&msg)).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}
