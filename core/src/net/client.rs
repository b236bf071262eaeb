//! A wallet's connection to its relay: send envelopes (each answered once stored durably),
//! receive pushed mail, acknowledge it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::frame::{FrameError, read_frame, write_frame};
use super::tls;
use super::wire::{self, FromRelay, MAX_FRAME_SIZE, Refusal, RelayAddress, ToRelay};
use crate::protocol::identity::{Identity, NodeId};

/// Why talking to the relay failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Could not connect (unreachable, or the relay is not the pinned one).
    #[error("can't connect to the relay at {addr}: {detail}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why (a wrong relay key says so).
        detail: String,
    },
    /// The relay did not accept an envelope (or a report).
    #[error("the relay refused: {0}")]
    Refused(Refusal),
    /// The index found no routes.
    #[error(transparent)]
    Route(#[from] crate::routing::RouteError),
    /// The connection is gone.
    #[error("the connection to the relay closed: {0}")]
    Closed(String),
    /// A relay known only by name could not be checked (its certificate, or its proof of key).
    #[error("can't check the relay at {addr}: {detail}")]
    Discover {
        /// The address asked for.
        addr: String,
        /// Why.
        detail: String,
    },
}

/// Mail from the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its mailbox position; acknowledge with [`RelayConnection::ack`].
    pub seq: u64,
    /// When the relay stored it.
    pub received_ms: u64,
    /// The envelope.
    pub envelope: Vec<u8>,
}

/// What the relay pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Mail.
    Mail(Delivery),
    /// Everything in the mailbox was delivered.
    Empty,
}

/// What a request is answered with.
enum Reply {
    Accepted,
    Routes(crate::routing::RouteSet),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, ClientError>>>>>;

/// Why the connection closed, as the reader saw it, for answers that will never come.
fn closed_error(closed: &Mutex<Option<String>>) -> ClientError {
    let why = closed.lock().ok().and_then(|c| c.clone());
    ClientError::Closed(why.unwrap_or_else(|| "connection closed".into()))
}

/// An envelope to send: the recipient, their relay when it is not ours, the sealed bytes.
pub type OutgoingEnvelope = (NodeId, Option<RelayAddress>, Vec<u8>);

/// An open connection to a relay.
pub struct RelayConnection {
    conn: quinn::Connection,
    out: mpsc::Sender<ToRelay>,
    /// Small frames that must not wait behind a queue of envelopes (route queries,
    /// acknowledgements): the writer takes them first.
    urgent: mpsc::Sender<ToRelay>,
    writer: tokio::task::JoinHandle<()>,
    pending: Pending,
    next_id: AtomicU64,
    mail: mpsc::Receiver<Incoming>,
    closed: Arc<Mutex<Option<String>>>,
}

/// A client endpoint on an ephemeral local port.
pub fn client_endpoint() -> Result<quinn::Endpoint, ClientError> {
    let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
    quinn::Endpoint::client(any).map_err(|e| ClientError::Connect {
        addr: any,
        detail: e.to_string(),
    })
}

impl RelayConnection {
    /// Connect to the relay with key `relay` at `addr`, as `identity`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        relay: NodeId,
        identity: &Identity,
    ) -> Result<RelayConnection, ClientError> {
        let err = |detail: String| ClientError::Connect { addr, detail };
        let config = tls::client_config(identity, relay).map_err(|e| err(e.to_string()))?;
        let conn = endpoint
            .connect_with(config, addr, tls::SERVER_NAME)
            .map_err(|e| err(e.to_string()))?
            .await
            .map_err(|e| err(e.to_string()))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| err(e.to_string()))?;
        write_frame(&mut send, &wire::encode(&ToRelay::Hello))
            .await
            .map_err(|e| err(e.to_string()))?;
        let (out_tx, mut out_rx) = mpsc::channel::<ToRelay>(256);
        let (urgent_tx, mut urgent_rx) = mpsc::channel::<ToRelay>(256);
        let (mail_tx, mail_rx) = mpsc::channel::<Incoming>(1024);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(Mutex::new(None));
        let writer = tokio::spawn(async move {
            loop {
                // A route query waited about 10 ms behind batches of envelopes here under load
                // (docs/benchmarks.md): urgent frames go first.
                let msg = tokio::select! {
                    biased;
                    Some(m) = urgent_rx.recv() => m,
                    Some(m) = out_rx.recv() => m,
                    else => break,
                };
                if write_frame(&mut send, &wire::encode(&msg)).await.is_err() {
                    return;
                }
            }
            // Closing: end the stream and wait until the relay has read all of it.
            if send.finish().is_ok() {
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(5), send.stopped()).await;
            }
        });
        let pending2 = pending.clone();
        let closed2 = closed.clone();
        tokio::spawn(async move {
            let reason = loop {
                let frame = match read_frame(&mut recv, MAX_FRAME_SIZE).await {
                    Ok(Some(f)) => f,
                    Ok(None) => break "the relay ended the stream".to_string(),
                    Err(FrameError::Io(e)) => break e,
                    Err(e) => break e.to_string(),
                };
                match wire::decode::<FromRelay>(&frame) {
                    Ok(FromRelay::Accepted { id }) => answer(&pending2, id, Ok(Reply::Accepted)),
                    Ok(FromRelay::Routes { id, result }) => answer(
                        &pending2,
                        id,
                        result.map(Reply::Routes).map_err(ClientError::Route),
                    ),
                    Ok(FromRelay::Refused { id, reason }) => {
                        answer(&pending2, id, Err(ClientError::Refused(reason)))
                    }
                    Ok(FromRelay::Deliver {
                        seq,
                        received_ms,
                        envelope,
                    }) => {
                        let d = Delivery {
                            seq,
                            received_ms,
                            envelope,
                        };
                        if mail_tx.send(Incoming::Mail(d)).await.is_err() {
                            break "the wallet stopped reading".to_string();
                        }
                    }
                    Ok(FromRelay::Empty) => {
                        if mail_tx.send(Incoming::Empty).await.is_err() {
                            break "the wallet stopped reading".to_string();
                        }
                    }
                    Ok(FromRelay::Error { reason }) => break format!("the relay said: {reason}"),
                    // Only asked for by `discover`.
                    Ok(FromRelay::Identity { .. }) => {}
                    Err(e) => break e,
                }
            };
            if let Ok(mut c) = closed2.lock() {
                *c = Some(reason.clone());
            }
            if let Ok(mut p) = pending2.lock() {
                for (_, tx) in p.drain() {
                    let _ = tx.send(Err(ClientError::Closed(reason.clone())));
                }
            }
        });
        Ok(RelayConnection {
            conn,
            out: out_tx,
            urgent: urgent_tx,
            writer,
            pending,
            next_id: AtomicU64::new(1),
            mail: mail_rx,
            closed,
        })
    }

    fn closed_reason(&self) -> String {
        self.closed
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .or_else(|| self.conn.close_reason().map(|r| r.to_string()))
            .unwrap_or_else(|| "connection closed".into())
    }

    /// Resolve `relay`'s address and connect to it, giving up after 10 s. The error says why,
    /// for logs and status.
    pub async fn connect_to(
        endpoint: &quinn::Endpoint,
        relay: &RelayAddress,
        identity: &Identity,
    ) -> Result<RelayConnection, String> {
        let addr = resolve(endpoint, &relay.addr).await?;
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            RelayConnection::connect(endpoint, addr, relay.key, identity),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
    }

    /// Send `envelope` to `to`; returns once the relay stored it durably.
    pub async fn send(&self, to: NodeId, envelope: Vec<u8>) -> Result<(), ClientError> {
        self.request(|id| ToRelay::Send { id, to, envelope })
            .await
            .map(drop)
    }

    /// Give the relay's index this wallet's capacity report.
    pub async fn report(&self, report: crate::routing::SignedReport) -> Result<(), ClientError> {
        self.request(|id| ToRelay::Report { id, report })
            .await
            .map(drop)
    }

    /// Give a peer relay's index a batch of reports (relays of one federation only).
    pub async fn reports(
        &self,
        reports: Vec<crate::routing::SignedReport>,
    ) -> Result<(), ClientError> {
        self.request(|id| ToRelay::Reports { id, reports })
            .await
            .map(drop)
    }

    /// Ask the relay's index for routes.
    pub async fn find_routes(
        &self,
        query: crate::routing::RouteQuery,
    ) -> Result<crate::routing::RouteSet, ClientError> {
        self.ask_routes(query).await?.await
    }

    /// Send a route query and return at once: the answer comes through the returned future,
    /// which does not borrow the connection (so a driver goes on with its mail meanwhile).
    pub async fn ask_routes(
        &self,
        query: crate::routing::RouteQuery,
    ) -> Result<
        impl std::future::Future<Output = Result<crate::routing::RouteSet, ClientError>>
        + Send
        + 'static,
        ClientError,
    > {
        let rx = self
            .start_on(&self.urgent, |id| ToRelay::FindRoutes { id, query })
            .await?;
        let closed = self.closed.clone();
        Ok(async move {
            let reply = rx.await.map_err(|_| closed_error(&closed))??;
            match reply {
                Reply::Routes(set) => Ok(set),
                Reply::Accepted => {
                    Err(ClientError::Closed("the relay answered out of turn".into()))
                }
            }
        })
    }

    /// Send the request `make(id)` and wait for the relay's answer to `id`.
    async fn request(&self, make: impl FnOnce(u64) -> ToRelay) -> Result<Reply, ClientError> {
        self.start(make)
            .await?
            .await
            .map_err(|_| ClientError::Closed(self.closed_reason()))?
    }

    /// Send a request; its answer comes through the receiver.
    async fn start(
        &self,
        make: impl FnOnce(u64) -> ToRelay,
    ) -> Result<oneshot::Receiver<Result<Reply, ClientError>>, ClientError> {
        self.start_on(&self.out, make).await
    }

    /// Send a request on `lane` (the normal or the urgent queue).
    async fn start_on(
        &self,
        lane: &mpsc::Sender<ToRelay>,
        make: impl FnOnce(u64) -> ToRelay,
    ) -> Result<oneshot::Receiver<Result<Reply, ClientError>>, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        lane.send(make(id))
            .await
            .map_err(|_| ClientError::Closed(self.closed_reason()))?;
        Ok(rx)
    }

    /// Send `envelope` to `to`, a user of the relay `relay` (which may be this one); returns
    /// once this relay stored it durably. This relay forwards it.
    pub async fn forward(
        &self,
        to: NodeId,
        relay: RelayAddress,
        envelope: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.request(|id| ToRelay::Forward {
            id,
            to,
            relay,
            envelope,
        })
        .await
        .map(drop)
    }

    /// The next mail, waiting for it; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        loop {
            match self.mail.recv().await? {
                Incoming::Mail(d) => return Some(d),
                Incoming::Empty => {}
            }
        }
    }

    /// The next mail or the news that the mailbox is empty; `None` once the connection is
    /// gone.
    pub async fn recv_or_empty(&mut self) -> Option<Incoming> {
        self.mail.recv().await
    }

    /// What has already arrived, without waiting: `None` when nothing has.
    pub fn try_recv_or_empty(&mut self) -> Option<Incoming> {
        self.mail.try_recv().ok()
    }

    /// Send several envelopes at once (each to `to`, through `relay` when it is another relay
    /// than ours), without waiting for one answer before sending the next: the relay commits
    /// them together. The answers come back in the same order.
    pub async fn send_all(&self, items: Vec<OutgoingEnvelope>) -> Vec<Result<(), ClientError>> {
        self.start_all(items).await.await
    }

    /// Like [`RelayConnection::send_all`], but returns once everything is sent: the answers
    /// come through the returned future, which does not borrow the connection (so a driver
    /// goes on with its mail while the relay commits).
    pub async fn start_all(
        &self,
        items: Vec<OutgoingEnvelope>,
    ) -> impl std::future::Future<Output = Vec<Result<(), ClientError>>> + Send + 'static {
        let mut waits = Vec::with_capacity(items.len());
        for (to, relay, envelope) in items {
            let started = self
                .start(|id| match relay {
                    None => ToRelay::Send { id, to, envelope },
                    Some(relay) => ToRelay::Forward {
                        id,
                        to,
                        relay,
                        envelope,
                    },
                })
                .await;
            waits.push(started);
        }
        let closed = self.closed.clone();
        async move {
            let mut out = Vec::with_capacity(waits.len());
            for wait in waits {
                let reply = match wait {
                    Ok(rx) => rx.await.unwrap_or_else(|_| Err(closed_error(&closed))),
                    Err(e) => Err(e),
                };
                out.push(reply.map(drop));
            }
            out
        }
    }

    /// Mail up to and including `seq` was handled: the relay may delete it.
    pub async fn ack(&self, seq: u64) -> Result<(), ClientError> {
        self.urgent
            .send(ToRelay::Ack { seq })
            .await
            .map_err(|_| ClientError::Closed(self.closed_reason()))
    }

    /// Why the connection closed, if it did.
    pub fn close_reason(&self) -> Option<String> {
        self.conn.close_reason().map(|r| r.to_string())
    }

    /// The underlying QUIC connection (for tests that misbehave on purpose).
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Close the connection after the relay has read everything sent (acknowledgements
    /// included).
    pub async fn close(self) {
        let RelayConnection {
            conn,
            out,
            urgent,
            writer,
            ..
        } = self;
        drop(out);
        drop(urgent);
        let _ = writer.await;
        conn.close(0u32.into(), b"bye");
    }
}

/// The first address of `addr` ("host:port") that `endpoint` can reach (the same IP family).
pub async fn resolve(endpoint: &quinn::Endpoint, addr: &str) -> Result<SocketAddr, String> {
    let v6 = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let all: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("can't resolve {addr}: {e}"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv6() == v6)
        .or(all.first())
        .copied()
        .ok_or_else(|| format!("{addr} has no address"))
}

/// Learn the key of the relay at `addr` ("host:port"), which serves a CA-signed certificate
/// for `host`: check that certificate against `roots` (see [`tls::web_roots`]), then have the
/// relay sign this connection's TLS exporter with its Ed25519 key. The answer is what wallets
/// pin from then on. Gives up after 10 s.
pub async fn discover(
    endpoint: &quinn::Endpoint,
    addr: &str,
    roots: Arc<rustls::RootCertStore>,
    identity: &Identity,
) -> Result<RelayAddress, ClientError> {
    let err = |detail: String| ClientError::Discover {
        addr: addr.to_string(),
        detail,
    };
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| err("expected host:port".into()))?;
    let work = async {
        let socket = resolve(endpoint, addr).await?;
        let config = tls::web_client_config(identity, roots).map_err(|e| e.to_string())?;
        let conn = endpoint
            .connect_with(config, socket, host)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let binding = tls::identity_binding(&conn).ok_or("no TLS exporter on the connection")?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, &wire::encode(&ToRelay::Identify))
            .await
            .map_err(|e| e.to_string())?;
        let answer = loop {
            let frame = read_frame(&mut recv, MAX_FRAME_SIZE)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the relay ended the stream without proving its key")?;
            match wire::decode::<FromRelay>(&frame)? {
                FromRelay::Identity { key, proof } => break (key, proof),
                // Mail for this identity waits at the relay for the wallet's own connection.
                FromRelay::Deliver { .. } | FromRelay::Empty => {}
                FromRelay::Error { reason } => return Err(format!("the relay said: {reason}")),
                other => return Err(format!("unexpected answer {other:?}")),
            }
        };
        conn.close(0u32.into(), b"bye");
        let (key, proof) = answer;
        tls::check_identity(key, &binding, &proof).map_err(|_| {
            format!("the relay's proof of its key {key} does not match this connection")
        })?;
        Ok::<_, String>(key)
    };
    let key = tokio::time::timeout(std::time::Duration::from_secs(10), work)
        .await
        .map_err(|_| err("timed out".into()))?
        .map_err(|e| {
            if e.contains("UnknownIssuer") {
                err(format!(
                    "{e} (its certificate is not from a CA this wallet trusts; if the relay \
                     has no CA-signed certificate, use its key instead of its name)"
                ))
            } else {
                err(e)
            }
        })?;
    Ok(RelayAddress {
        addr: addr.to_string(),
        key,
    })
}

fn answer(pending: &Pending, id: u64, result: Result<Reply, ClientError>) {
    let tx = pending.lock().ok().and_then(|mut p| p.remove(&id));
    if let Some(tx) = tx {
        let _ = tx.send(result);
    }
}
