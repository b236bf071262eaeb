//! The relay's index service: capacity reports from its own wallets and from its peer relays,
//! route queries, and the federation that floods new reports to every peer.
//!
//! The index lives in memory. Reports expire within a day and wallets send fresh ones every few
//! minutes, and on reconnecting a peer sends everything it holds, so a restarted relay fills
//! its index again within one report period without a disk.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use offst_core::net::client::{ClientError, RelayConnection};
use offst_core::net::wire::RelayAddress;
use offst_core::protocol::identity::{Identity, NodeId};
use offst_core::routing::{
    Index, IndexStats, ReportError, RouteError, RouteQuery, RouteSet, SignedReport,
};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// Most bytes of reports sent to a peer in one frame (a frame holds at most 521 KiB).
const BATCH_BYTES: usize = 256 * 1024;

/// An index with at most this many hops answers a query on the task that asked: its search
/// takes microseconds, and a blocking thread woken for it and the answer handed back cost
/// more. A larger index searches on a blocking thread, so that a search of milliseconds
/// (`docs/benchmarks.md`, "Route search") never holds up the relay's connections.
pub const INLINE_SEARCH_MAX_HOPS: u64 = 2_000;

/// The index, shared with the relay's connections and its peers.
pub struct IndexService {
    index: RwLock<Index>,
    news: broadcast::Sender<SignedReport>,
    peers: Vec<RelayAddress>,
}

impl IndexService {
    /// An empty index that floods to `peers`.
    pub fn new(peers: Vec<RelayAddress>) -> Arc<IndexService> {
        let (news, _) = broadcast::channel(4096);
        Arc::new(IndexService {
            index: RwLock::new(Index::new()),
            news,
            peers,
        })
    }

    /// Is `key` one of this relay's index peers?
    pub fn is_peer(&self, key: &NodeId) -> bool {
        self.peers.iter().any(|p| p.key == *key)
    }

    /// Take `report` if it verifies and is newer than the one held; peers hear of it.
    pub fn accept(&self, report: SignedReport, now_ms: u64) -> Result<(), ReportError> {
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&report, now_ms)?;
        let _ = self.news.send(report);
        Ok(())
    }

    /// Drop what expired by `now_ms`.
    pub fn expire(&self, now_ms: u64) -> usize {
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .expire(now_ms)
    }

    /// Counts, for logs.
    pub fn stats(&self) -> IndexStats {
        self.index.read().unwrap_or_else(|e| e.into_inner()).stats()
    }

    /// Routes for `query`: computed off the async threads, unless the index is small
    /// ([`INLINE_SEARCH_MAX_HOPS`]), when the search takes less than handing it to another
    /// thread and back does.
    pub async fn find(self: &Arc<Self>, query: RouteQuery) -> Result<RouteSet, RouteError> {
        {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            if index.hop_count() <= INLINE_SEARCH_MAX_HOPS {
                return index.find_routes(&query);
            }
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.index
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .find_routes(&query)
        })
        .await
        .unwrap_or_else(|e| Err(RouteError::BadQuery(format!("the search failed: {e}"))))
    }

    fn snapshot(&self) -> Vec<SignedReport> {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .reports()
            .cloned()
            .collect()
    }

    /// Keep every peer up to date, for as long as the relay runs.
    pub fn spawn_peers(self: &Arc<Self>, endpoint: quinn::Endpoint, identity: Identity) {
        for peer in self.peers.clone() {
            tokio::spawn(peer_loop(
                self.clone(),
                peer,
                endpoint.clone(),
                identity.clone(),
            ));
        }
    }
}

/// Reports in frames of at most [`BATCH_BYTES`].
fn batches(reports: Vec<SignedReport>) -> Vec<Vec<SignedReport>> {
    let mut out: Vec<Vec<SignedReport>> = Vec::new();
    let mut size = 0;
    for r in reports {
        let len = offst_core::net::wire::encode(&r).len();
        if out.is_empty() || size + len > BATCH_BYTES {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = out.last_mut() {
            last.push(r);
        }
    }
    out
}

/// Connect to `peer`, send it everything, then every new report, reconnecting with backoff.
async fn peer_loop(
    service: Arc<IndexService>,
    peer: RelayAddress,
    endpoint: quinn::Endpoint,
    identity: Identity,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(250);
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    let mut backoff = MIN_BACKOFF;
    loop {
        let conn = match RelayConnection::connect_to(&endpoint, &peer, &identity).await {
            Ok(c) => c,
            Err(e) => {
                debug!(peer = %peer.key.short(), addr = %peer.addr, "index peer unreachable: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        // Subscribe before the snapshot, so nothing falls between the two.
        let mut news = service.news.subscribe();
        let result = async {
            let all = service.snapshot();
            let count = all.len();
            for batch in batches(all) {
                conn.reports(batch).await?;
            }
            info!(peer = %peer.key.short(), reports = count, "index peer up to date");
            loop {
                let first = match news.recv().await {
                    Ok(r) => r,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too much news to follow one by one: send everything again.
                        for batch in batches(service.snapshot()) {
                            conn.reports(batch).await?;
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                let mut pending = vec![first];
                while let Ok(r) = news.try_recv() {
                    pending.push(r);
                }
                for batch in batches(pending) {
                    conn.reports(batch).await?;
                }
            }
        }
        .await;
        match result {
            Ok(()) => return,
            Err(ClientError::Refused(reason)) => {
                warn!(peer = %peer.key.short(), "index peer refuses our reports: {reason}");
            }
            Err(e) => debug!(peer = %peer.key.short(), "index peer connection lost: {e}"),
        }
        conn.close().await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use offst_core::protocol::amount::{Currency, Rate};
    use offst_core::routing::{CapacityReport, ReportEntry};

    /// An index of `n` wallets on a ring, each able to send 100 either way to its neighbours.
    fn ring(n: usize) -> (Arc<IndexService>, Vec<NodeId>) {
        let ids: Vec<Identity> = (0..n)
            .map(|i| {
                let mut seed = [7u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
                Identity::from_seed(seed)
            })
            .collect();
        let keys: Vec<NodeId> = ids.iter().map(Identity::id).collect();
        let eur = Currency::new("EUR").unwrap();
        let service = IndexService::new(Vec::new());
        for (i, id) in ids.iter().enumerate() {
            let entries = [(i + 1) % n, (i + n - 1) % n]
                .into_iter()
                .map(|f| ReportEntry {
                    friend: keys[f],
                    currency: eur,
                    send: 100,
                    recv: 100,
                })
                .collect();
            let report = CapacityReport {
                node: keys[i],
                issued_ms: 1_000,
                expires_ms: 3_600_000,
                rate: Rate { base: 1, ppm: 0 },
                entries,
            }
            .sign(id);
            service.accept(report, 2_000).unwrap();
        }
        (service, keys)
    }

    /// A small index answers on the asking task, a large one on a blocking thread: both give
    /// the route along the ring.
    #[tokio::test]
    async fn small_and_large_indexes_both_answer() {
        for n in [10, 1_200] {
            let (service, keys) = ring(n);
            let hops = service.index.read().unwrap().hop_count();
            assert_eq!(
                hops > INLINE_SEARCH_MAX_HOPS,
                n > 10,
                "{n} wallets: {hops} hops"
            );
            let query = RouteQuery {
                from: keys[0],
                to: keys[3],
                currency: Currency::new("EUR").unwrap(),
                amount: 10,
                max_routes: 1,
                avoid: Vec::new(),
                first_hops: None,
            };
            let set = service.find(query).await.unwrap();
            assert_eq!(set.routes.len(), 1, "{n} wallets");
            assert_eq!(set.routes[0].route, keys[..4].to_vec(), "{n} wallets");
        }
    }
}
