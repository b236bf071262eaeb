//! `offst-bench`: the load generator. Starts two relays and the wallets of a scenario in this
//! process, all durable (real SQLite files with `synchronous=FULL`, real QUIC on loopback
//! through the relays), runs payments at a target rate or flat out, and reports payments/s,
//! latency, CPU, bytes on the wire and SQLite commits per payment. It also reports the crypto
//! floor: what the signatures, checks, hashes and envelope encryption of one payment cost on
//! this machine, measured on the same run, and the payments/s they alone would allow.
//!
//! Scenarios:
//! - `direct`: friend pays friend;
//! - `chain --hops H`: through H-1 mediators, each charging a fee;
//! - `multi --routes K`: payments too big for one route, split over K mediators (back and
//!   forth, so the capacity comes back);
//! - `offline --hops H`: a chain whose middle mediator goes offline and comes back.
//!
//! Wallets alternate between the two relays, so most hops cross from one relay to the other.
//! Every payment goes the way an app pays: routes from the relay's index (a friend who can take
//! the whole amount is paid directly), then the payment, followed to its receipt. At the end it
//! waits for every message to settle and checks the invariants: both sides of every channel
//! agree, nothing stays frozen, balances sum to zero, and the seller got exactly what completed.
//! The last line is one JSON object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use offst_core::invite::PaymentRequest;
use offst_core::metrics::{CryptoCounts, crypto_counts};
use offst_core::net::client::client_endpoint;
use offst_core::net::driver::Driver;
use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::NodeId;
use offst_core::wallet::{KeyFile, SharedWallet, Wallet, WalletOptions};
use offst_relay::RelayHandle;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Offst load generator: payments through real relays, against the crypto floor")]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Friend pays friend.
    Direct(Common),
    /// Through hops-1 mediators, each charging 1 + 0.1 %.
    Chain {
        /// Hops from buyer to seller.
        #[arg(long, default_value_t = 4)]
        hops: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Payments split over several routes (buyer and seller pay each other in turn).
    Multi {
        /// Parallel mediators between buyer and seller.
        #[arg(long, default_value_t = 4)]
        routes: usize,
        #[command(flatten)]
        common: Common,
    },
    /// A chain whose middle mediator goes offline and comes back.
    Offline {
        /// Hops from buyer to seller.
        #[arg(long, default_value_t = 3)]
        hops: usize,
        /// How long the mediator stays away, and then online, each time (ms).
        #[arg(long, default_value_t = 1_500)]
        away_ms: u64,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Payments to make.
    #[arg(long, default_value_t = 1_000)]
    payments: u64,
    /// Payments started per second (0: flat out, limited by --inflight). Default: flat out,
    /// except `multi`: 1 per second, since its splits need the index to know the capacities
    /// the last payment left, and wallets report changes at most every half second.
    #[arg(long)]
    rate: Option<f64>,
    /// Most payments under way at once. A payment is under way until its credit moved, which
    /// can be after its receipt (its latency ends at the receipt), so the requests pending in
    /// each channel stay within this. Default: as many as one channel may hold pending
    /// (`MAX_PENDING_REQUESTS`), which keeps every channel's moves full; more would be refused
    /// on the way.
    #[arg(long, default_value_t = offst_core::protocol::bounds::MAX_PENDING_REQUESTS)]
    inflight: usize,
    /// Each payment's amount (multi: the default needs three of four routes).
    #[arg(long)]
    amount: Option<u64>,
    /// Give a payment up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print only the JSON object.
    #[arg(long)]
    json: bool,
    /// Wallets commit with `synchronous=NORMAL` (safe against a killed app, not against a
    /// power loss): to see what the wallets' fsyncs cost. The goals are measured without it.
    #[arg(long)]
    normal_sync: bool,
    /// Record when each envelope reaches each stage of its way (sealed, at a relay, stored,
    /// forwarded, delivered, received, handled) and report the time between stages, for
    /// envelopes sealed in the middle 40 % of the run. Costs a hash and a lock per stage.
    #[arg(long)]
    timeline: bool,
    /// Keep the run's data directory (every wallet's and relay's SQLite file) instead of
    /// removing it, and say where it is: to read what the run wrote (`docs/benchmarks.md`
    /// counts the pages each table wrote this way).
    #[arg(long)]
    keep: bool,
    /// Time every SQLite statement of the wallets and relays during the payments, and report
    /// the costliest per payment (`sql_profile` in the JSON, a table without `--json`): how
    /// often each ran and the time inside it. SQLite measures wall time, so a `COMMIT` counts
    /// its wait for the disk. Costs a lock per statement.
    #[arg(long)]
    sql_profile: bool,
    /// Time how long each wallet's lock is held during the payments, and report each wallet's
    /// share of the run's wall time and its holds and time per payment (`wallet_locks` in the
    /// JSON, a table without `--json`): which wallet's work is the most, and whether one is
    /// near saturation. Costs a clock reading and a lock per hold.
    #[arg(long)]
    lock_profile: bool,
}

/// Everything moves in this currency; limits are large enough for every scenario except
/// `multi`, whose channels are small on purpose.
const LIMIT: u64 = 1_000_000_000_000;
const MULTI_LIMIT: u64 = 1_000;
const MEDIATOR_RATE: Rate = Rate {
    base: 1,
    ppm: 1_000,
};

fn units() -> Currency {
    Currency::new("EUR").unwrap_or_else(|e| unreachable!("{e}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One wallet with its network driver (none while "offline").
struct Node {
    wallet: Arc<SharedWallet>,
    driver: tokio::sync::RwLock<Option<Driver>>,
    id: NodeId,
}

impl Node {
    fn start(dir: &Path, rate: Rate, relay: &RelayHandle, normal: bool) -> Result<Node, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let key = dir.join("wallet.key");
        KeyFile::generate(&key).map_err(|e| e.to_string())?;
        let options = WalletOptions {
            rate,
            durability: if normal {
                offst_core::wallet::Durability::Normal
            } else {
                offst_core::wallet::Durability::Full
            },
            ..WalletOptions::default()
        };
        let mut w = Wallet::create(dir, &KeyFile::new(&key), options).map_err(|e| e.to_string())?;
        w.set_relay(offst_core::net::wire::RelayAddress {
            addr: relay.addr.to_string(),
            key: relay.key,
        })
        .map_err(|e| e.to_string())?;
        let id = w.id();
        let wallet = Arc::new(SharedWallet::new(w));
        let driver = Driver::spawn(
            wallet.clone(),
            client_endpoint().map_err(|e| e.to_string())?,
        );
        Ok(Node {
            wallet,
            driver: tokio::sync::RwLock::new(Some(driver)),
            id,
        })
    }

    async fn go_offline(&self) {
        if let Some(d) = self.driver.write().await.take() {
            d.stop().await;
        }
    }

    async fn come_back(&self) -> Result<(), String> {
        let mut slot = self.driver.write().await;
        if slot.is_none() {
            let endpoint = client_endpoint().map_err(|e| e.to_string())?;
            *slot = Some(Driver::spawn(self.wallet.clone(), endpoint));
        }
        Ok(())
    }

    async fn synced(&self, limit: Duration) -> Result<(), String> {
        let d = self.driver.read().await;
        let d = d.as_ref().ok_or("offline")?;
        d.synced(&self.wallet, limit, |_| {})
            .await
            .map_err(|e| e.to_string())
    }
}

async fn start_relays(root: &Path) -> Result<Vec<RelayHandle>, String> {
    let dirs = [root.join("relay-1"), root.join("relay-2")];
    offst_relay::local::start_on_loopback(&dirs, |c| {
        // A load test sends far faster than one phone may.
        c.sender_rate_per_sec = 1_000_000;
        c.sender_burst = 1_000_000;
    })
    .await
}

async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return Err(format!("gave up waiting: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// `a` invites `b`, `b` accepts, `a` accepts the request; each lets the other owe `limit`.
async fn befriend(a: &Node, b: &Node, limit: u64) -> Result<(), String> {
    let inv = a
        .wallet
        .lock()
        .invite("", 3_600_000)
        .map_err(|e| e.to_string())?;
    b.wallet
        .lock()
        .accept_invitation(&inv, "")
        .map_err(|e| e.to_string())?;
    until("a friend request", Duration::from_secs(60), || {
        a.wallet
            .lock()
            .friend_requests()
            .is_ok_and(|r| r.iter().any(|r| r.from.id == b.id))
    })
    .await?;
    a.wallet
        .lock()
        .accept_friend_request(b.id, "")
        .map_err(|e| e.to_string())?;
    until("the friendship", Duration::from_secs(60), || {
        b.wallet.lock().node().channel(&a.id).is_some()
            && a.wallet.lock().node().channel(&b.id).is_some()
            && b.wallet.lock().contact(&a.id).is_ok_and(|c| c.is_some())
    })
    .await?;
    a.wallet
        .lock()
        .set_limit(b.id, units(), limit)
        .map_err(|e| e.to_string())?;
    b.wallet
        .lock()
        .set_limit(a.id, units(), limit)
        .map_err(|e| e.to_string())?;
    let agreed = |x: &Node, y: &Node| {
        let w = x.wallet.lock();
        w.friend_view(y.id, 0).is_ok_and(|v| {
            v.lines
                .iter()
                .any(|l| l.our_limit == limit && l.their_limit == limit)
        })
    };
    until("the limits", Duration::from_secs(60), || {
        agreed(a, b) && agreed(b, a)
    })
    .await
}

/// Who pays whom in a scenario.
struct Plan {
    name: &'static str,
    hops: usize,
    nodes: Vec<Arc<Node>>,
    /// (buyer, seller) for payment i: i % pairs.len().
    pairs: Vec<(usize, usize)>,
    amount: u64,
    /// The node that goes offline now and then.
    flaky: Option<(usize, u64)>,
    /// Friendships made.
    channels: usize,
}

async fn build(
    scenario: &Scenario,
    root: &Path,
    relays: &[RelayHandle],
    normal: bool,
) -> Result<Plan, String> {
    let relay = |i: usize| relays.get(i % relays.len()).ok_or("no relay");
    let dir = |i: usize| root.join(format!("wallet-{i}"));
    let (name, hops, shape, amount, flaky) = match scenario {
        Scenario::Direct(c) => ("direct", 1, Shape::Chain(1), c.amount.unwrap_or(10), None),
        Scenario::Chain { hops, common } => (
            "chain",
            *hops,
            Shape::Chain(*hops),
            common.amount.unwrap_or(10),
            None,
        ),
        Scenario::Multi { routes, common } => (
            "multi",
            2,
            Shape::Diamond(*routes),
            common.amount.unwrap_or(MULTI_LIMIT * 5 / 2),
            None,
        ),
        Scenario::Offline {
            hops,
            away_ms,
            common,
        } => (
            "offline",
            *hops,
            Shape::Chain(*hops),
            common.amount.unwrap_or(10),
            Some((hops / 2, *away_ms)),
        ),
    };
    if hops == 0 || hops > 7 {
        return Err("hops must be 1 to 7".into());
    }
    let mut nodes = Vec::new();
    match shape {
        Shape::Chain(h) => {
            for i in 0..=h {
                let rate = if i == 0 || i == h {
                    Rate { base: 0, ppm: 0 }
                } else {
                    MEDIATOR_RATE
                };
                nodes.push(Arc::new(Node::start(&dir(i), rate, relay(i)?, normal)?));
            }
            for i in 0..h {
                let (Some(a), Some(b)) = (nodes.get(i), nodes.get(i + 1)) else {
                    return Err("chain".into());
                };
                befriend(a, b, LIMIT).await?;
            }
            Ok(Plan {
                name,
                hops,
                pairs: vec![(0, h)],
                nodes,
                amount,
                flaky,
                channels: h,
            })
        }
        Shape::Diamond(k) => {
            // 0: buyer, 1: seller, 2..: mediators.
            for i in 0..k + 2 {
                let rate = if i < 2 {
                    Rate { base: 0, ppm: 0 }
                } else {
                    MEDIATOR_RATE
                };
                nodes.push(Arc::new(Node::start(&dir(i), rate, relay(i)?, normal)?));
            }
            for m in 2..k + 2 {
                let (Some(b), Some(s), Some(mm)) = (nodes.first(), nodes.get(1), nodes.get(m))
                else {
                    return Err("diamond".into());
                };
                befriend(b, mm, MULTI_LIMIT).await?;
                befriend(mm, s, MULTI_LIMIT).await?;
            }
            Ok(Plan {
                name,
                hops,
                pairs: vec![(0, 1), (1, 0)],
                nodes,
                amount,
                flaky,
                channels: 2 * k,
            })
        }
    }
}

enum Shape {
    Chain(usize),
    Diamond(usize),
}

/// CPU seconds this process used so far (user + system).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command (in parentheses): utime is the 14th field, stime the 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes sent on the loopback interface so far (every packet between wallets and relays).
fn loopback_bytes() -> u64 {
    let Ok(dev) = std::fs::read_to_string("/proc/net/dev") else {
        return 0;
    };
    dev.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() == "lo").then(|| {
                rest.split_whitespace()
                    .nth(8)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// What one kind of crypto operation costs on this machine now: `fixed + per_byte * bytes`
/// seconds for an operation over `bytes` bytes.
#[derive(Clone, Copy, Default)]
struct Cost {
    fixed: f64,
    per_byte: f64,
}

impl Cost {
    /// The line through two timings: `short` seconds over `short_len` bytes and `long` over
    /// `long_len`. Timing noise cannot make either part negative.
    fn fit(short: f64, short_len: usize, long: f64, long_len: usize) -> Cost {
        let span = long_len.saturating_sub(short_len).max(1) as f64;
        let per_byte = ((long - short) / span).max(0.0);
        Cost {
            fixed: (short - per_byte * short_len as f64).max(0.0),
            per_byte,
        }
    }

    /// [`Cost::fit`] through `at` timed over `short` and over `long` bytes.
    fn fit_by(at: impl Fn(&[u8]) -> f64, short: &[u8], long: &[u8]) -> Cost {
        Cost::fit(at(short), short.len(), at(long), long.len())
    }

    /// `n` operations over `bytes` bytes in all.
    fn of(&self, n: u64, bytes: u64) -> f64 {
        n as f64 * self.fixed + bytes as f64 * self.per_byte
    }

    fn mean(&self, other: &Cost) -> Cost {
        Cost {
            fixed: (self.fixed + other.fixed) / 2.0,
            per_byte: (self.per_byte + other.per_byte) / 2.0,
        }
    }
}

/// Unit costs of the crypto a payment does, measured here.
#[derive(Clone, Copy)]
struct Unit {
    sign: Cost,
    verify: Cost,
    hash: Cost,
    seal: Cost,
    open: Cost,
    /// An X25519 agreement and the symmetric key derived from it (no bytes).
    agreement: f64,
    /// A batch of signatures checked together costs `batch + batched.of(n, bytes)`.
    batch: f64,
    batched: Cost,
}

impl Unit {
    /// The mean of two measurements, field by field.
    fn mean(&self, other: &Unit) -> Unit {
        Unit {
            sign: self.sign.mean(&other.sign),
            verify: self.verify.mean(&other.verify),
            hash: self.hash.mean(&other.hash),
            seal: self.seal.mean(&other.seal),
            open: self.open.mean(&other.open),
            agreement: (self.agreement + other.agreement) / 2.0,
            batch: (self.batch + other.batch) / 2.0,
            batched: self.batched.mean(&other.batched),
        }
    }

    /// The CPU seconds the operations in `c` take.
    fn floor(&self, c: &CryptoCounts) -> f64 {
        self.sign.of(c.signs, c.signed_bytes)
            + self.verify.of(c.verifies, c.verified_bytes)
            + self.hash.of(c.hashes, c.hashed_bytes)
            + self.seal.of(c.seals, c.sealed_bytes)
            + self.open.of(c.opens, c.opened_bytes)
            + c.agreements as f64 * self.agreement
            + c.batches as f64 * self.batch
            + self.batched.of(c.batched, c.batched_bytes)
    }

    /// In microseconds, and microseconds per KiB, for the report.
    fn json(&self) -> serde_json::Value {
        let us = 1e6;
        let kib = 1024.0 * 1e6;
        json!({
            "sign": self.sign.fixed * us, "sign_per_kib": self.sign.per_byte * kib,
            "verify": self.verify.fixed * us, "verify_per_kib": self.verify.per_byte * kib,
            "hash": self.hash.fixed * us, "hash_per_kib": self.hash.per_byte * kib,
            "seal": self.seal.fixed * us, "seal_per_kib": self.seal.per_byte * kib,
            "open": self.open.fixed * us, "open_per_kib": self.open.per_byte * kib,
            "agreement": self.agreement * us,
            "batch": self.batch * us,
            "batched": self.batched.fixed * us, "batched_per_kib": self.batched.per_byte * kib,
        })
    }
}

/// Time each crypto operation a payment does, on this machine now, each at two sizes so that
/// an operation over more bytes costs more. Run before the payments and again once they
/// settled: a virtual machine's cores can run at different speeds from one minute to the next
/// (other machines' load on the host), and the floor uses the mean.
fn measure_crypto() -> Unit {
    use chacha20poly1305::aead::{Aead, KeyInit};
    use offst_core::protocol::identity::{Identity, SignatureBatch, canonical_bytes};
    use serde_bytes::Bytes;
    let time = |n: u32, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() / f64::from(n)
    };
    const DOMAIN: &str = "offst bench";
    // Messages of about 200 bytes, as most the protocol signs, and of 16 KiB.
    let short = vec![5u8; 190];
    let long = vec![5u8; 16 * 1024];
    let len = |m: &[u8]| canonical_bytes(DOMAIN, &Bytes::new(m)).len();
    // Signed and checked as the protocol does it, through the same calls, under a key kept
    // decoded as the wallets keep it (a wallet checks the same few keys over and over).
    let me = Identity::from_seed([7; 32]);
    let id = me.id();
    let sign_at = |m: &[u8]| {
        let value = Bytes::new(m);
        time(1_000, &mut || {
            std::hint::black_box(me.sign(DOMAIN, std::hint::black_box(&value)));
        })
    };
    let sign = Cost::fit(sign_at(&short), len(&short), sign_at(&long), len(&long));
    let verify_at = |m: &[u8]| {
        let value = Bytes::new(m);
        let sig = me.sign(DOMAIN, &value);
        time(1_000, &mut || {
            std::hint::black_box(id.verify(DOMAIN, &value, &sig).is_ok());
        })
    };
    let verify = Cost::fit(verify_at(&short), len(&short), verify_at(&long), len(&long));
    let hash_at = |m: &[u8]| {
        time(10_000, &mut || {
            let mut h = blake3::Hasher::new_derive_key(DOMAIN);
            h.update(m);
            std::hint::black_box(h.finalize());
        })
    };
    let hash = Cost::fit_by(hash_at, &short, &long);
    // An envelope: XChaCha20-Poly1305 under a key agreed earlier (a sender and a recipient
    // keep it), at the smallest padded size (512 bytes) and at 32 KiB.
    let secret = x25519_dalek::StaticSecret::from([9u8; 32]);
    let their = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([3u8; 32]));
    let nonce = chacha20poly1305::XNonce::default();
    let agreement = time(2_000, &mut || {
        let shared = secret.diffie_hellman(std::hint::black_box(&their));
        std::hint::black_box(blake3::derive_key(DOMAIN, shared.as_bytes()));
    });
    let key = blake3::derive_key(DOMAIN, secret.diffie_hellman(&their).as_bytes());
    let small_body = vec![1u8; 512];
    let big_body = vec![1u8; 32 * 1024];
    let seal_at = |body: &[u8]| {
        time(1_000, &mut || {
            let c = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
            std::hint::black_box(c.encrypt(&nonce, std::hint::black_box(body)).ok());
        })
    };
    let seal = Cost::fit_by(seal_at, &small_body, &big_body);
    let sealed = |body: &[u8]| {
        chacha20poly1305::XChaCha20Poly1305::new(&key.into())
            .encrypt(&nonce, body)
            .unwrap_or_default()
    };
    let (small_ct, big_ct) = (sealed(&small_body), sealed(&big_body));
    let open_at = |ct: &[u8]| {
        time(1_000, &mut || {
            let c = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
            std::hint::black_box(c.decrypt(&nonce, std::hint::black_box(ct)).ok());
        })
    };
    let open = Cost::fit_by(open_at, &small_ct, &big_ct);
    // Batches as a move's are checked (`SignatureBatch`): the move's signature with its
    // requests' and responses' (two signers, as a buyer's and a seller's), timed with one and
    // with 64 short messages, and with 64 of 4 KiB.
    let signers = [Identity::from_seed([1; 32]), Identity::from_seed([2; 32])];
    let batch_of = |n: usize, size: usize| {
        let msgs: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; size]).collect();
        let signed: Vec<_> = msgs
            .iter()
            .zip(signers.iter().cycle())
            .map(|(m, who)| (who.id(), who.sign(DOMAIN, &Bytes::new(m))))
            .collect();
        time(100, &mut || {
            let mut b = SignatureBatch::new();
            for (m, (id, sig)) in msgs.iter().zip(&signed) {
                b.queue(id, DOMAIN, &Bytes::new(m), sig);
            }
            std::hint::black_box(b.verify());
        })
    };
    let (one, many, many_long) = (
        batch_of(1, short.len()),
        batch_of(64, short.len()),
        batch_of(64, 4 * 1024),
    );
    let (short_len, long_len) = (len(&short), len(&[5u8; 4 * 1024]));
    let per_signature = ((many - one) / 63.0).max(0.0);
    let batch = (one - per_signature).max(0.0);
    let per_long_signature = (many_long - batch) / 64.0;
    let batched = Cost::fit(per_signature, short_len, per_long_signature, long_len);
    Unit {
        sign,
        verify,
        hash,
        seal,
        open,
        agreement,
        batch,
        batched,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// One payment: the seller's request, then the buyer pays it and follows it to the receipt.
/// Returns the invoice, to wait for the credit to move.
async fn one_payment(
    buyer: &Node,
    seller: &Node,
    amount: u64,
    limit: Duration,
) -> Result<offst_core::protocol::payment::InvoiceId, String> {
    // As a merchant's server does: invoices made at once share one flush to disk.
    let (request, ticket): (PaymentRequest, _) = {
        let mut s = seller.wallet.lock_async().await;
        let (inv, ticket) = s
            .create_invoice_unsynced(units(), amount, 300_000, "")
            .map_err(|e| e.to_string())?;
        (s.payment_request(&inv).map_err(|e| e.to_string())?, ticket)
    };
    offst_core::wallet::sync(&seller.wallet, ticket)
        .await
        .map_err(|e| e.to_string())?;
    let d = buyer.driver.read().await;
    let d = d.as_ref().ok_or("the buyer is offline")?;
    offst_core::net::payer::pay(&buyer.wallet, d, &request, 8, limit, |_| {})
        .await
        .map(|_| request.invoice.terms.id)
        .map_err(|e| e.to_string())
}

/// Check what must hold once everything settled; returns the violations, described.
fn invariants(plan: &Plan, completed: u64, before: &[i128]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut sum: i128 = 0;
    let mut nets = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let w = n.wallet.lock();
        let mut net: i128 = 0;
        for f in w.node().friends().copied().collect::<Vec<_>>() {
            let Ok(v) = w.friend_view(f, 0) else {
                bad.push(format!("wallet {i}: no view of a friend"));
                continue;
            };
            for l in &v.lines {
                net += l.balance;
                if l.frozen_by_us != 0 || l.frozen_by_them != 0 {
                    let ch = w.node().channel(&f);
                    bad.push(format!(
                        "wallet {i}: credit still frozen with a friend ({} by us, {} by them; \
                         channel at move {}, {}, {} operations queued, {} pending; {} messages \
                         in the outbox)",
                        l.frozen_by_us,
                        l.frozen_by_them,
                        ch.map_or(0, |c| c.counter()),
                        if ch.is_some_and(|c| c.holds_token()) {
                            "ours to move"
                        } else {
                            "theirs to move"
                        },
                        ch.map_or(0, |c| c.queue().len()),
                        ch.map_or(0, |c| c.state().pending.len()),
                        w.outbox_len().unwrap_or(0),
                    ));
                }
            }
            // Both sides of the channel agree.
            if let Some(other) = plan.nodes.iter().find(|o| o.id == f) {
                let theirs = other
                    .wallet
                    .lock()
                    .friend_view(n.id, 0)
                    .ok()
                    .and_then(|v| v.lines.first().map(|l| l.balance));
                let mine = v.lines.first().map(|l| l.balance);
                if theirs.map(|t| -t) != mine {
                    bad.push(format!("wallet {i}: the two sides of a channel disagree"));
                }
            }
        }
        sum += net;
        nets.push(net);
    }
    if sum != 0 {
        bad.push(format!("balances sum to {sum}, not 0"));
    }
    // For one-way scenarios the seller got exactly amount per completed payment.
    if let [(b, s)] = plan.pairs.as_slice() {
        let got = nets.get(*s).copied().unwrap_or(0) - before.get(*s).copied().unwrap_or(0);
        let want = i128::from(plan.amount) * i128::from(completed);
        if got != want {
            bad.push(format!("the seller got {got}, not {want}"));
        }
        let paid = before.get(*b).copied().unwrap_or(0) - nets.get(*b).copied().unwrap_or(0);
        if paid < want {
            bad.push(format!(
                "the buyer paid {paid}, less than the {want} delivered"
            ));
        }
    }
    bad
}

fn nets(plan: &Plan) -> Vec<i128> {
    plan.nodes
        .iter()
        .map(|n| {
            let w = n.wallet.lock();
            w.node()
                .friends()
                .copied()
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|f| w.friend_view(f, 0).ok())
                .flat_map(|v| v.lines.into_iter().map(|l| l.balance))
                .sum()
        })
        .collect()
}

/// The wallets' durable steps and their SQLite write transactions (fewer when steps share a
/// group commit; more for outbox bookkeeping).
fn commits(plan: &Plan) -> (u64, u64) {
    plan.nodes.iter().fold((0, 0), |(steps, disk), n| {
        let w = n.wallet.lock();
        (steps + w.commits(), disk + w.disk_commits())
    })
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let common = match &args.scenario {
        Scenario::Direct(c)
        | Scenario::Chain { common: c, .. }
        | Scenario::Multi { common: c, .. }
        | Scenario::Offline { common: c, .. } => c.clone(),
    };
    let say = |s: &str| {
        if !common.json {
            eprintln!("{s}");
        }
    };
    let rate = common.rate.unwrap_or(match args.scenario {
        Scenario::Multi { .. } => 1.0,
        _ => 0.0,
    });
    if common.sql_profile {
        // Before any wallet or relay opens its database: the profile is installed at open.
        offst_core::metrics::sql_profile_start();
    }
    let root: PathBuf = std::env::temp_dir().join(format!("offst-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = async {
        say("measuring the crypto floor's unit costs");
        let unit_start = measure_crypto();
        let relays = start_relays(&root).await?;
        say("starting wallets and making friends by invitation");
        let plan = build(&args.scenario, &root, &relays, common.normal_sync).await?;
        // Routes come from the index: wait until every wallet's report is in.
        let n = plan.nodes.len();
        // Every channel both ways, with its limits.
        let hops = 2 * plan.channels as u64;
        until(
            "every wallet's report in the index",
            Duration::from_secs(60),
            || {
                relays.iter().all(|r| {
                    r.index_stats()
                        .is_some_and(|s| s.reporting >= n as u64 && s.hops >= hops)
                })
            },
        )
        .await?;
        let before_nets = nets(&plan);
        // The mediator that comes and goes.
        let stop_flaky = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flaky = plan.flaky.and_then(|(i, away)| {
            let node = plan.nodes.get(i)?.clone();
            let stop = stop_flaky.clone();
            Some(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(away)).await;
                    node.go_offline().await;
                    tokio::time::sleep(Duration::from_millis(away)).await;
                    let _ = node.come_back().await;
                }
                let _ = node.come_back().await;
            }))
        });
        say(&format!(
            "{} payments of {} ({}, {} hop(s)), {}",
            common.payments,
            plan.amount,
            plan.name,
            plan.hops,
            if rate > 0.0 {
                format!("{} per second", rate)
            } else {
                format!("flat out, {} at once", common.inflight)
            }
        ));
        let (crypto0, cpu0, bytes0, commits0) = (
            crypto_counts(),
            cpu_seconds(),
            loopback_bytes(),
            commits(&plan),
        );
        let relay_commits0: u64 = relays.iter().map(|r| r.stats().commits).sum();
        let never_written0: u64 = relays.iter().map(|r| r.stats().never_written).sum();
        let start = Instant::now();
        if common.timeline {
            offst_core::metrics::timeline_start();
        }
        if common.lock_profile {
            offst_core::metrics::lock_profile_start();
        }
        // The set-up's statements (schemas, friendships) are left out.
        offst_core::metrics::sql_profile_reset();
        let gate = Arc::new(tokio::sync::Semaphore::new(common.inflight.max(1)));
        let mut tasks = Vec::new();
        let limit = Duration::from_secs(common.timeout);
        let pairs = plan.pairs.clone();
        let progress_every = (common.payments / 10).max(1);
        for i in 0..common.payments {
            if rate > 0.0 {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
            }
            let permit = gate
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let (b, s) = pairs
                .get(i as usize % pairs.len())
                .copied()
                .ok_or("no pair")?;
            let (Some(buyer), Some(seller)) = (plan.nodes.get(b), plan.nodes.get(s)) else {
                return Err("pair".to_string());
            };
            let (buyer, seller, amount) = (buyer.clone(), seller.clone(), plan.amount);
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = one_payment(&buyer, &seller, amount, limit).await;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if let Ok(invoice) = &r {
                    // The receipt comes before the collects: the payment holds its place until
                    // its credit moved (the check at the end waits for all of it anyway).
                    offst_core::net::payer::settled(&buyer.wallet, invoice, limit).await;
                }
                drop(permit);
                (ms, r.map(drop))
            }));
            if (i + 1) % progress_every == 0 {
                say(&format!(
                    "  {} started, {:.1} s",
                    i + 1,
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        let mut latencies = Vec::new();
        let mut completed = 0u64;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for t in tasks {
            let (ms, r) = t.await.map_err(|e| e.to_string())?;
            match r {
                Ok(()) => {
                    completed += 1;
                    latencies.push(ms);
                }
                Err(e) => *errors.entry(e).or_default() += 1,
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let timeline = timeline_report(offst_core::metrics::timeline_take(), seconds);
        let wallet_locks = common.lock_profile.then(|| {
            let wallets: Vec<usize> = plan
                .nodes
                .iter()
                .map(|n| Arc::as_ptr(&n.wallet) as usize)
                .collect();
            lock_report(
                &wallets,
                &plan.pairs,
                &offst_core::metrics::lock_profile_take(),
                seconds,
                completed,
            )
        });
        let sql_profile = common
            .sql_profile
            .then(|| sql_profile_report(offst_core::metrics::sql_profile_take(), common.payments));
        let (crypto, cpu, bytes, wallet_commits) = (
            crypto_counts().since(&crypto0),
            cpu_seconds() - cpu0,
            loopback_bytes().saturating_sub(bytes0),
            commits(&plan),
        );
        let wallet_steps = wallet_commits.0.saturating_sub(commits0.0);
        let wallet_commits = wallet_commits.1.saturating_sub(commits0.1);
        let relay_commits = relays
            .iter()
            .map(|r| r.stats().commits)
            .sum::<u64>()
            .saturating_sub(relay_commits0);
        let never_written = relays
            .iter()
            .map(|r| r.stats().never_written)
            .sum::<u64>()
            .saturating_sub(never_written0);
        stop_flaky.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = flaky {
            let _ = f.await;
        }
        say("settling: every wallet in sync, nothing frozen");
        let settle = Instant::now();
        let mut violations;
        loop {
            for node in &plan.nodes {
                let _ = node.synced(Duration::from_secs(30)).await;
            }
            violations = invariants(&plan, completed, &before_nets);
            if violations.is_empty() || settle.elapsed() > Duration::from_secs(120) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for v in &violations {
            eprintln!("invariant violated: {v}");
        }
        say("measuring the crypto floor's unit costs again");
        let unit_end = measure_crypto();
        let unit = unit_start.mean(&unit_end);
        latencies.sort_by(f64::total_cmp);
        let done = completed.max(1) as f64;
        let per = |x: u64| x as f64 / done;
        let floor_cpu = unit.floor(&crypto) / done;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let floor_pps = if floor_cpu > 0.0 {
            cores / floor_cpu
        } else {
            0.0
        };
        let pps = completed as f64 / seconds;
        let (busy, crypto_share) = ratio_factors(cpu, seconds, cores, floor_cpu, done);
        for node in &plan.nodes {
            node.go_offline().await;
        }
        for r in relays {
            r.shutdown().await;
        }
        let counts = |c: &CryptoCounts| {
            json!({
                "signs_per_payment": per(c.signs),
                "verifies_per_payment": per(c.verifies),
                "hashes_per_payment": per(c.hashes),
                "seals_per_payment": per(c.seals),
                "opens_per_payment": per(c.opens),
                "agreements_per_payment": per(c.agreements),
                "batches_per_payment": per(c.batches),
                "batched_per_payment": per(c.batched),
                "signed_bytes_per_payment": per(c.signed_bytes),
                "verified_bytes_per_payment": per(c.verified_bytes),
                "batched_bytes_per_payment": per(c.batched_bytes),
                "hashed_bytes_per_payment": per(c.hashed_bytes),
                "sealed_bytes_per_payment": per(c.sealed_bytes),
                "opened_bytes_per_payment": per(c.opened_bytes),
                "unit_us": unit.json(),
                "unit_us_start": unit_start.json(),
                "unit_us_end": unit_end.json(),
                "floor_cpu_ms_per_payment": floor_cpu * 1e3,
            })
        };
        Ok(json!({
            "scenario": plan.name,
            "hops": plan.hops,
            "wallets": plan.nodes.len(),
            "relays": 2,
            "payments": common.payments,
            "amount": plan.amount,
            "rate": rate,
            "inflight": common.inflight,
            "completed": completed,
            "cancelled": common.payments - completed,
            // `direct` and `chain` have room for every payment and nobody goes offline: a
            // payment that does not complete there is a fault (the run fails).
            "all_must_complete": plan.flaky.is_none() && plan.name != "multi",
            "errors": errors,
            "seconds": seconds,
            "payments_per_sec": pps,
            "p50_ms": percentile(&latencies, 0.50),
            "p95_ms": percentile(&latencies, 0.95),
            "p99_ms": percentile(&latencies, 0.99),
            "cpu_sec_per_payment": cpu / done,
            "cores": cores,
            "bytes_per_payment": per(bytes),
            "wallet_steps_per_payment": per(wallet_steps),
            "wallet_commits_per_payment": per(wallet_commits),
            "relay_commits_per_payment": per(relay_commits),
            "relay_envelopes_never_written_per_payment": per(never_written),
            "crypto": counts(&crypto),
            "crypto_floor_payments_per_sec": floor_pps,
            "ratio_to_crypto_floor": if floor_pps > 0.0 { pps / floor_pps } else { 0.0 },
            // The ratio's two factors (their product): how busy the cores were, and the
            // cryptography's share of the CPU they spent.
            "cores_busy_share": busy,
            "crypto_share_of_cpu": crypto_share,
            "invariant_violations": violations.len(),
            "wallet_sync": if common.normal_sync { "normal" } else { "full" },
            "timeline": timeline,
            "sql_profile": sql_profile,
            "wallet_locks": wallet_locks,
            "started_ms": now_ms(),
        }))
    }
    .await;
    if common.keep {
        eprintln!("the run's data is kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

/// The ratio to the crypto floor as two factors whose product it is: the share of the cores'
/// time the run kept busy (`cpu` seconds of CPU over `seconds` of wall time on `cores`), and
/// the cryptography's share of that CPU (the floor's `floor_cpu` seconds per payment over the
/// CPU per payment, `cpu` over `done` payments). A ratio below the goal is the one, the other
/// or both; zeros when nothing ran.
fn ratio_factors(cpu: f64, seconds: f64, cores: f64, floor_cpu: f64, done: f64) -> (f64, f64) {
    let busy = if seconds > 0.0 && cores > 0.0 {
        cpu / (seconds * cores)
    } else {
        0.0
    };
    let share = if cpu > 0.0 {
        floor_cpu * done / cpu
    } else {
        0.0
    };
    (busy, share)
}

/// The runtime's worker threads: `BENCH_WORKERS`, or one per core. Wallets block their worker
/// while SQLite waits for the disk, so more threads than cores keep the cores busy meanwhile
/// (in real life each wallet is its own phone).
fn workers() -> usize {
    std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let json = match &args.scenario {
        Scenario::Direct(c)
        | Scenario::Chain { common: c, .. }
        | Scenario::Multi { common: c, .. }
        | Scenario::Offline { common: c, .. } => c.json,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(v) => {
            let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
            if !json {
                eprintln!(
                    "{} of {} completed in {:.1} s: {:.1} payments/s, p50 {:.1} ms, p99 {:.1} ms; crypto floor {:.0}/s",
                    f("completed"),
                    f("payments"),
                    f("seconds"),
                    f("payments_per_sec"),
                    f("p50_ms"),
                    f("p99_ms"),
                    f("crypto_floor_payments_per_sec"),
                );
                eprintln!(
                    "ratio to the floor {:.3}: the cores {:.0} % busy, the cryptography {:.0} % of their CPU ({:.3} of {:.3} ms per payment)",
                    f("ratio_to_crypto_floor"),
                    f("cores_busy_share") * 100.0,
                    f("crypto_share_of_cpu") * 100.0,
                    v.pointer("/crypto/floor_cpu_ms_per_payment")
                        .and_then(serde_json::Value::as_f64)
                        .unwrap_or(0.0),
                    f("cpu_sec_per_payment") * 1e3,
                );
            }
            if !json && let Some(p) = v.get("sql_profile").and_then(|p| p.as_object()) {
                let g = |r: &serde_json::Value, k: &str| {
                    r.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
                };
                eprintln!(
                    "SQLite statements, {:.1} µs per payment in all (wall time; a COMMIT includes its wait for the disk):",
                    p.get("us_per_payment")
                        .and_then(serde_json::Value::as_f64)
                        .unwrap_or(0.0)
                );
                eprintln!("  per payment   µs/payment   µs each  statement");
                for r in p
                    .get("statements")
                    .and_then(|s| s.as_array())
                    .into_iter()
                    .flatten()
                {
                    eprintln!(
                        "  {:11.2} {:12.1} {:9.1}  {}",
                        g(r, "per_payment"),
                        g(r, "us_per_payment"),
                        g(r, "us_each"),
                        r.get("sql").and_then(|s| s.as_str()).unwrap_or("")
                    );
                }
            }
            if !json && let Some(rows) = v.get("wallet_locks").and_then(|l| l.as_array()) {
                eprintln!("wallet locks (wall time held, from taking to releasing):");
                eprintln!("  wallet  role       share   holds/payment   µs/payment");
                for r in rows {
                    let g = |k: &str| r.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
                    eprintln!(
                        "  {:6}  {:9} {:5.1} % {:15.2} {:12.1}",
                        g("wallet"),
                        r.get("role").and_then(|s| s.as_str()).unwrap_or(""),
                        g("held_share") * 100.0,
                        g("holds_per_payment"),
                        g("held_us_per_payment"),
                    );
                }
            }
            if !json && let Some(kinds) = v.get("timeline").and_then(|t| t.as_object()) {
                for (kind, rows) in kinds {
                    eprintln!("timeline, envelopes through {}:", kind.replace('_', " "));
                    for r in rows.as_array().into_iter().flatten() {
                        let g =
                            |k: &str| r.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
                        eprintln!(
                            "  {:26} mean {:6.2} ms, p50 {:6.2}, p90 {:6.2} ({} envelopes)",
                            r.get("between").and_then(|b| b.as_str()).unwrap_or(""),
                            g("mean_ms"),
                            g("p50_ms"),
                            g("p90_ms"),
                            g("count")
                        );
                    }
                }
            }
            println!("{v}");
            let violations = v
                .get("invariant_violations")
                .and_then(serde_json::Value::as_u64);
            let must = v
                .get("all_must_complete")
                .and_then(serde_json::Value::as_bool);
            let cancelled = v.get("cancelled").and_then(serde_json::Value::as_u64);
            if must == Some(true) && cancelled != Some(0) {
                eprintln!(
                    "error: {} payment(s) did not complete in a scenario with room for all of them (see \"errors\")",
                    cancelled.unwrap_or_default()
                );
                return std::process::ExitCode::FAILURE;
            }
            if violations == Some(0) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Each wallet's lock over the run, in the plan's order (`wallets`: each wallet's address, as
/// the profile keys it): its share of the run's `seconds` held, and its holds and time held
/// per completed payment. A wallet is a buyer or a seller if one of the plan's `pairs` has it
/// so, else a mediator.
fn lock_report(
    wallets: &[usize],
    pairs: &[(usize, usize)],
    profile: &offst_core::metrics::LockProfile,
    seconds: f64,
    completed: u64,
) -> serde_json::Value {
    let done = completed.max(1) as f64;
    let rows: Vec<serde_json::Value> = wallets
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let role = match (
                pairs.iter().any(|p| p.0 == i),
                pairs.iter().any(|p| p.1 == i),
            ) {
                (true, true) => "both",
                (true, false) => "buyer",
                (false, true) => "seller",
                (false, false) => "mediator",
            };
            let u = profile.get(addr).copied().unwrap_or_default();
            json!({
                "wallet": i,
                "role": role,
                "held_share": u.held_ns as f64 / 1e9 / seconds.max(1e-9),
                "holds_per_payment": u.holds as f64 / done,
                "held_us_per_payment": u.held_ns as f64 / 1e3 / done,
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// The statements that took the most time in all, per payment, costliest first (at most 25),
/// and the time of all statements per payment.
fn sql_profile_report(
    profile: offst_core::metrics::SqlProfile,
    payments: u64,
) -> serde_json::Value {
    let per = |n: u64| n as f64 / payments.max(1) as f64;
    let total_ns: u64 = profile.values().map(|(_, ns)| *ns).sum();
    let mut rows: Vec<(String, u64, u64)> = profile
        .into_iter()
        .map(|(sql, (count, ns))| (sql, count, ns))
        .collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let statements: Vec<serde_json::Value> = rows
        .iter()
        .take(25)
        .map(|(sql, count, ns)| {
            serde_json::json!({
                "sql": sql,
                "per_payment": per(*count),
                "us_per_payment": per(*ns) / 1e3,
                "us_each": *ns as f64 / 1e3 / (*count).max(1) as f64,
            })
        })
        .collect();
    serde_json::json!({
        "us_per_payment": per(total_ns) / 1e3,
        "statements": statements,
    })
}

/// The time between the stages of each envelope's way, by kind of way: `one_relay` (sender and
/// recipient on the same relay) and `two_relays` (forwarded from one relay to the other).
/// Envelopes sealed in the middle 40 % of the run that reached their recipient's commit.
fn timeline_report(marks: offst_core::metrics::Timeline, seconds: f64) -> serde_json::Value {
    use offst_core::metrics::Stage;
    if marks.is_empty() {
        return serde_json::Value::Null;
    }
    let (lo, hi) = ((seconds * 0.3 * 1e6) as u64, (seconds * 0.7 * 1e6) as u64);
    let name = |s: Stage| format!("{s:?}").to_lowercase();
    // kind -> gap name (in path order) -> milliseconds
    let mut gaps: BTreeMap<&str, BTreeMap<(usize, String), Vec<f64>>> = BTreeMap::new();
    for (_, mut v) in marks {
        v.sort_by_key(|m| m.1);
        let Some(&(Stage::Sealed, t0)) = v.first() else {
            continue;
        };
        if !(lo..=hi).contains(&t0) || v.iter().filter(|m| m.0 == Stage::Handled).count() != 1 {
            continue;
        }
        // The way ends at the recipient's commit: a relay answers for mail it held only after
        // the recipient acknowledged it, so its `Stored` can come later, off the way.
        if let Some(end) = v.iter().position(|m| m.0 == Stage::Handled) {
            v.truncate(end + 1);
        }
        let kind = if v.iter().any(|m| m.0 == Stage::Forwarding) {
            "two_relays"
        } else {
            "one_relay"
        };
        let per = gaps.entry(kind).or_default();
        for (i, (a, b)) in v.iter().zip(v.iter().skip(1)).enumerate() {
            let ms = b.1.saturating_sub(a.1) as f64 / 1e3;
            per.entry((i, format!("{} -> {}", name(a.0), name(b.0))))
                .or_default()
                .push(ms);
        }
        let total = v.last().map_or(0, |m| m.1).saturating_sub(t0) as f64 / 1e3;
        per.entry((usize::MAX, "total".into()))
            .or_default()
            .push(total);
    }
    let mut out = serde_json::Map::new();
    for (kind, per) in gaps {
        let Some(n) = per.get(&(usize::MAX, "total".to_string())).map(Vec::len) else {
            continue;
        };
        let mut rows = Vec::new();
        for ((_, gap), mut ms) in per {
            // Envelopes whose stages came in another order (rare) are left out of the rows.
            if ms.len() * 10 < n * 9 {
                continue;
            }
            ms.sort_by(f64::total_cmp);
            let mean = ms.iter().sum::<f64>() / ms.len() as f64;
            rows.push(serde_json::json!({
                "between": gap, "count": ms.len(), "mean_ms": mean,
                "p50_ms": percentile(&ms, 0.5), "p90_ms": percentile(&ms, 0.9),
            }));
        }
        out.insert(kind.to_string(), serde_json::Value::Array(rows));
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use offst_core::metrics::Stage;

    /// A cost per operation and per byte is read off two timings, and prices counts of both.
    #[test]
    fn the_floor_prices_operations_and_their_bytes() {
        // 10 µs + 2 ns a byte, timed at 200 and at 16,384 bytes.
        let line = |n: usize| 10e-6 + 2e-9 * n as f64;
        let c = Cost::fit(line(200), 200, line(16_384), 16_384);
        assert!((c.fixed - 10e-6).abs() < 1e-12 && (c.per_byte - 2e-9).abs() < 1e-15);
        assert!((c.of(3, 1_000) - (30e-6 + 2e-6)).abs() < 1e-12);
        // Noise that makes the longer timing the shorter costs nothing per byte, never less.
        let flat = Cost::fit(10e-6, 200, 9e-6, 16_384);
        assert_eq!((flat.fixed, flat.per_byte), (10e-6, 0.0));
        let unit = Unit {
            sign: c,
            verify: Cost::default(),
            hash: Cost::default(),
            seal: Cost {
                fixed: 1e-6,
                per_byte: 1e-9,
            },
            open: Cost::default(),
            agreement: 50e-6,
            batch: 30e-6,
            batched: Cost {
                fixed: 8e-6,
                per_byte: 0.0,
            },
        };
        let counts = CryptoCounts {
            signs: 2,
            signed_bytes: 500,
            seals: 1,
            sealed_bytes: 2_048,
            agreements: 1,
            batches: 1,
            batched: 4,
            ..CryptoCounts::default()
        };
        let expected = (20e-6 + 1e-6) + (1e-6 + 2.048e-6) + 50e-6 + 30e-6 + 32e-6;
        assert!((unit.floor(&counts) - expected).abs() < 1e-12);
    }

    /// The ratio's two factors multiply to the ratio the report gives (payments/s over the
    /// floor's), and name which one falls short.
    #[test]
    fn the_ratio_is_the_cores_busy_share_times_the_cryptographys_share() {
        // 3,000 payments in 2 s on 2 cores, 3.6 s of CPU (1.2 ms each, the cores 90 % busy),
        // 0.36 ms of it cryptography (30 %).
        let (cpu, seconds, cores, floor_cpu, done) = (3.6, 2.0, 2.0, 0.36e-3, 3_000.0);
        let (busy, share) = ratio_factors(cpu, seconds, cores, floor_cpu, done);
        assert!((busy - 0.9).abs() < 1e-12 && (share - 0.3).abs() < 1e-12);
        let ratio = (done / seconds) / (cores / floor_cpu);
        assert!((busy * share - ratio).abs() < 1e-12);
        assert_eq!(ratio_factors(0.0, 0.0, 2.0, 0.0, 1.0), (0.0, 0.0));
    }

    /// Each wallet's lock: its share of the run and its holds and time per payment, with its
    /// role from the plan's pairs; a wallet never locked has zeros.
    #[test]
    #[allow(clippy::indexing_slicing, clippy::unwrap_used)]
    fn the_lock_report_gives_each_wallets_share_and_role() {
        use offst_core::metrics::LockUse;
        let profile: offst_core::metrics::LockProfile = [
            (
                100,
                LockUse {
                    holds: 40,
                    held_ns: 2_000_000_000,
                },
            ),
            (
                200,
                LockUse {
                    holds: 5,
                    held_ns: 500_000_000,
                },
            ),
        ]
        .into_iter()
        .collect();
        let r = lock_report(&[100, 200, 300], &[(0, 2)], &profile, 4.0, 10);
        let rows = r.as_array().unwrap();
        let f = |i: usize, k: &str| rows[i][k].as_f64().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows.iter()
                .map(|r| r["role"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["buyer", "mediator", "seller"]
        );
        assert_eq!((f(0, "held_share"), f(0, "holds_per_payment")), (0.5, 4.0));
        assert_eq!(f(0, "held_us_per_payment"), 200_000.0);
        assert_eq!(
            (f(1, "held_share"), f(1, "held_us_per_payment")),
            (0.125, 50_000.0)
        );
        assert_eq!((f(2, "held_share"), f(2, "holds_per_payment")), (0.0, 0.0));
    }

    /// The statement profile: the costliest 25 by time, each per payment and per run.
    #[test]
    #[allow(clippy::indexing_slicing)]
    fn the_sql_profile_reports_the_costliest_statements_per_payment() {
        let mut p = offst_core::metrics::SqlProfile::new();
        p.insert("COMMIT".into(), (20, 4_000_000));
        p.insert("INSERT INTO a".into(), (100, 1_000_000));
        for i in 0..30 {
            p.insert(format!("SELECT {i}"), (1, 1_000));
        }
        let r = sql_profile_report(p, 10);
        let rows = r["statements"].as_array().cloned().unwrap_or_default();
        assert_eq!(rows.len(), 25);
        assert_eq!(rows[0]["sql"], "COMMIT");
        assert_eq!(rows[0]["per_payment"], 2.0);
        assert_eq!(rows[0]["us_per_payment"], 400.0);
        assert_eq!(rows[0]["us_each"], 200.0);
        assert_eq!(rows[1]["sql"], "INSERT INTO a");
        assert_eq!(rows[1]["us_each"], 10.0);
        assert_eq!(r["us_per_payment"], 503.0);
    }

    /// A relay's answer for held mail comes after the recipient's commit: the envelope's way,
    /// and its total, still end at that commit.
    #[test]
    fn an_envelopes_way_ends_at_the_recipients_commit() -> Result<(), String> {
        let mut marks = offst_core::metrics::Timeline::new();
        marks.insert(
            1,
            vec![
                (Stage::Sealed, 5_000_000),
                (Stage::RelayIn, 5_001_000),
                (Stage::Delivered, 5_002_000),
                (Stage::Received, 5_003_000),
                (Stage::Handled, 5_004_000),
                (Stage::Stored, 5_024_000),
            ],
        );
        let report = timeline_report(marks, 10.0);
        let rows = report
            .get("one_relay")
            .and_then(|r| r.as_array())
            .ok_or("no rows")?;
        let row = |name: &str| {
            rows.iter()
                .find(|r| r.get("between").and_then(|b| b.as_str()) == Some(name))
                .and_then(|r| r.get("mean_ms"))
                .and_then(serde_json::Value::as_f64)
        };
        assert_eq!(row("total"), Some(4.0));
        assert_eq!(row("handled -> stored"), None);
        Ok(())
    }
}
