//! Two relays (real processes), four wallets with their network drivers, two per relay:
//! friendship by invitation, a payment along a chain that crosses both relays, a payee that is
//! offline during the payment, and a relay killed with SIGKILL and restarted mid-traffic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offst_core::net::client::client_endpoint;
use offst_core::net::driver::Driver;
use offst_core::net::wire::RelayAddress;
use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::{Identity, NodeId};
use offst_core::protocol::node::{PaymentStatus, RoutePlan};
use offst_core::wallet::{EventKind, RawKey, SecretKey, SharedWallet, Wallet, WalletOptions};

mod common;
use common::{scratch, spawn};

struct RelayProc {
    child: Child,
    key: NodeId,
    addr: SocketAddr,
    dir: PathBuf,
    peers: Vec<String>,
}

/// A relay's key, made in `dir` without starting it.
fn key_of(dir: &Path) -> NodeId {
    std::fs::create_dir_all(dir).unwrap();
    offst_relay::server::load_or_create_identity(dir)
        .unwrap()
        .id()
}

/// A free UDP port on loopback that no other test's port-0 socket can take before the relay
/// binds it.
fn free_port() -> u16 {
    common::port_outside_the_ephemeral_range().port()
}

impl RelayProc {
    fn start(dir: &Path, listen: &str) -> RelayProc {
        RelayProc::start_with_peers(dir, listen, Vec::new())
    }

    fn start_with_peers(dir: &Path, listen: &str, peers: Vec<String>) -> RelayProc {
        std::fs::create_dir_all(dir).unwrap();
        let data = dir.to_string_lossy().into_owned();
        let mut args = vec!["--listen", listen, "--data-dir", &data];
        for p in &peers {
            args.push("--index-peer");
            args.push(p);
        }
        let (child, key, addr) = spawn(dir, &args);
        RelayProc {
            child,
            key,
            addr,
            dir: dir.to_path_buf(),
            peers,
        }
    }

    fn address(&self) -> RelayAddress {
        RelayAddress {
            addr: self.addr.to_string(),
            key: self.key,
        }
    }

    fn kill_and_restart(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        let again =
            RelayProc::start_with_peers(&self.dir, &self.addr.to_string(), self.peers.clone());
        assert_eq!(again.key, self.key);
        *self = again;
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hours() -> Currency {
    Currency::new("hours").unwrap()
}

struct Peer {
    name: &'static str,
    wallet: Arc<SharedWallet>,
    driver: Mutex<Option<Driver>>,
    id: NodeId,
}

impl Peer {
    fn new(dir: &Path, name: &'static str, seed: u8, relay: RelayAddress) -> Peer {
        let keys = RawKey(SecretKey::from_bytes([seed; 32]));
        let options = WalletOptions {
            rate: Rate { base: 1, ppm: 0 },
            ..WalletOptions::default()
        };
        let mut w = Wallet::create_with_identity(
            &dir.join(name),
            Identity::from_seed([seed; 32]),
            &keys,
            options,
        )
        .unwrap();
        w.set_relay(relay).unwrap();
        let id = w.id();
        let wallet = Arc::new(SharedWallet::new(w));
        let p = Peer {
            name,
            wallet,
            driver: Mutex::new(None),
            id,
        };
        p.go_online();
        p
    }

    fn w(&self) -> offst_core::sync::Guard<'_, Wallet> {
        self.wallet.lock()
    }

    fn go_online(&self) {
        let ep = client_endpoint().unwrap();
        *self.driver.lock().unwrap() = Some(Driver::spawn(self.wallet.clone(), ep));
    }

    async fn go_offline(&self) {
        let d = self.driver.lock().unwrap().take();
        if let Some(d) = d {
            d.stop().await;
        }
    }
}

/// Wait for `cond`, failing after a generous bound (a guard against hangs, not a speed test).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn has_event(p: &Peer, kind: EventKind) -> bool {
    p.w()
        .history(&Default::default())
        .unwrap()
        .iter()
        .any(|h| h.kind == kind)
}

/// `x` invites `y`; `y` accepts; `x` accepts the request; both set `limit`.
async fn befriend(x: &Peer, y: &Peer, limit: u64) {
    let inv = x.w().invite(x.name, 3_600_000).unwrap();
    let text = inv.to_text();
    let scanned = offst_core::invite::Invitation::parse(&text, y.w().now_ms()).unwrap();
    y.w().accept_invitation(&scanned, y.name).unwrap();
    eventually(&format!("{} sees {}'s request", x.name, y.name), || {
        x.w()
            .friend_requests()
            .unwrap()
            .iter()
            .any(|r| r.from.id == y.id)
    })
    .await;
    x.w().accept_friend_request(y.id, x.name).unwrap();
    eventually(&format!("{} learns {} accepted", y.name, x.name), || {
        has_event(y, EventKind::FriendAccepted)
    })
    .await;
    x.w().set_limit(y.id, hours(), limit).unwrap();
    y.w().set_limit(x.id, hours(), limit).unwrap();
    eventually("limits both ways", || {
        let xy = x
            .w()
            .node()
            .balance(&y.id, &hours())
            .map(|(_, l)| (l.limit_of_first, l.limit_of_second));
        let yx = y
            .w()
            .node()
            .balance(&x.id, &hours())
            .map(|(_, l)| (l.limit_of_first, l.limit_of_second));
        xy == Some((limit, limit)) && yx == Some((limit, limit))
    })
    .await;
}

fn route(peers: &[&Peer], amount: u64) -> RoutePlan {
    RoutePlan {
        route: peers.iter().map(|p| p.id).collect(),
        fees: peers[1..peers.len() - 1]
            .iter()
            .map(|p| p.w().node().rate().fee(amount).unwrap())
            .collect(),
        dest_payment: amount,
    }
}

/// The seller issues an invoice and shows it as a payment request (with its contact); the
/// buyer scans it and pays along `path`.
async fn pay(a: &Peer, path: &[&Peer], amount: u64) -> offst_core::protocol::payment::InvoiceId {
    let seller = path.last().unwrap();
    let inv = seller
        .w()
        .create_invoice(hours(), amount, 600_000, "net test")
        .unwrap();
    let text = seller.w().payment_request(&inv).unwrap().to_text();
    let req = offst_core::invite::PaymentRequest::parse(&text, a.w().now_ms()).unwrap();
    let routes = vec![route(path, amount)];
    a.w().pay_request(&req, routes).unwrap();
    req.invoice.terms.id
}

fn paid(a: &Peer, inv: &offst_core::protocol::payment::InvoiceId) -> Option<PaymentStatus> {
    a.w().node().payment(inv).map(|(s, _)| s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_four_wallets() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let root = scratch("two-relays");
    // The two relays share their indexes: each names the other as a peer.
    let (k1, k2) = (key_of(&root.join("r1")), key_of(&root.join("r2")));
    let (p1, p2) = (free_port(), free_port());
    let mut r1 = RelayProc::start_with_peers(
        &root.join("r1"),
        &format!("127.0.0.1:{p1}"),
        vec![format!("{k2}@127.0.0.1:{p2}")],
    );
    let mut r2 = RelayProc::start_with_peers(
        &root.join("r2"),
        &format!("127.0.0.1:{p2}"),
        vec![format!("{k1}@127.0.0.1:{p1}")],
    );
    let a = Peer::new(&root, "alice", 1, r1.address());
    let b = Peer::new(&root, "bob", 2, r1.address());
    let c = Peer::new(&root, "carol", 3, r2.address());
    let d = Peer::new(&root, "dave", 4, r2.address());

    // Friendship by invitation, one of them across the relays.
    befriend(&a, &b, 100).await;
    befriend(&b, &c, 100).await;
    befriend(&c, &d, 100).await;

    // The wallets' drivers report their channels; a's relay learns c's and d's through r2,
    // and finds the route a - b - c - d, fees as b and c charge them.
    let path = [&a, &b, &c, &d];
    let ep = client_endpoint().unwrap();
    let asker = offst_core::net::client::RelayConnection::connect(
        &ep,
        r1.addr,
        r1.key,
        &Identity::from_seed([99; 32]),
    )
    .await
    .unwrap();
    let query = offst_core::routing::RouteQuery {
        from: a.id,
        to: d.id,
        currency: hours(),
        amount: 10,
        max_routes: 4,
        avoid: Vec::new(),
        first_hops: None,
    };
    let started = Instant::now();
    let found = loop {
        match asker.find_routes(query.clone()).await {
            Ok(set) => break set,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                tracing::debug!("no routes yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the index found no route in time: {e}"),
        }
    };
    asker.close().await;
    assert_eq!(found.routes.len(), 1);
    assert_eq!(found.routes[0].plan(), route(&path, 10));

    // A payment over the route the index found crosses both relays.
    let inv = d
        .w()
        .create_invoice(hours(), 10, 600_000, "routed by the index")
        .unwrap();
    let req = d.w().payment_request(&inv).unwrap();
    let plans = found.routes.iter().map(|r| r.plan()).collect();
    a.w().pay_request(&req, plans).unwrap();
    let inv = inv.terms.id;
    eventually("first payment completes", || {
        paid(&a, &inv) == Some(PaymentStatus::Completed)
    })
    .await;
    // The receipt comes straight from the seller; the collects follow hop by hop.
    eventually("the seller's balance moves", || {
        d.w().node().balance(&c.id, &hours()).unwrap().0 == 10
    })
    .await;

    // The payee is offline during the payment; it completes when the payee comes back.
    let inv = d
        .w()
        .create_invoice(hours(), 5, 600_000, "while away")
        .unwrap();
    let req = d.w().payment_request(&inv).unwrap();
    d.go_offline().await;
    a.w().pay_request(&req, vec![route(&path, 5)]).unwrap();
    // The request reaches c, which sends it (or, if d holds the token of their channel, its
    // request for the token) to d's mailbox at r2, where it waits.
    eventually("the request waits at c's side", || {
        let w = c.w();
        let frozen = w
            .node()
            .balance(&d.id, &hours())
            .map(|(_, l)| l.frozen_by_first + l.frozen_by_second)
            .unwrap_or(0);
        frozen > 0 || w.node().queued_ops() > 0
    })
    .await;
    assert_eq!(paid(&a, &inv.terms.id), Some(PaymentStatus::InFlight));
    d.go_online();
    eventually("the payment completes once d is back", || {
        paid(&a, &inv.terms.id) == Some(PaymentStatus::Completed)
    })
    .await;
    eventually("the seller's balance moves", || {
        d.w().node().balance(&c.id, &hours()).unwrap().0 == 15
    })
    .await;

    // Relays killed with SIGKILL and restarted in the middle of traffic lose nothing.
    let mut invoices = Vec::new();
    for i in 0..6 {
        invoices.push(pay(&a, &path, 1).await);
        if i == 1 {
            r2.kill_and_restart();
        }
        if i == 3 {
            r1.kill_and_restart();
        }
    }
    for inv in &invoices {
        eventually("every payment ends", || {
            matches!(
                paid(&a, inv),
                Some(PaymentStatus::Completed | PaymentStatus::Cancelled)
            )
        })
        .await;
    }
    let completed = invoices
        .iter()
        .filter(|i| paid(&a, i) == Some(PaymentStatus::Completed))
        .count() as i128;
    // Friends agree on every channel, and the money adds up.
    for (x, y) in [(&a, &b), (&b, &c), (&c, &d)] {
        eventually(&format!("{} and {} agree", x.name, y.name), || {
            let sx = x
                .w()
                .node()
                .channel(&y.id)
                .map(|ch| (ch.state().clone(), ch.counter()));
            let sy = y
                .w()
                .node()
                .channel(&x.id)
                .map(|ch| (ch.state().clone(), ch.counter()));
            sx.is_some() && sx == sy
        })
        .await;
    }
    eventually("every collect is in", || {
        d.w().node().balance(&c.id, &hours()).unwrap().0 == 15 + completed
    })
    .await;
    assert_eq!(
        completed, 6,
        "relays that restart lose no mail, so every payment completes"
    );
    for p in [a, b, c, d] {
        p.go_offline().await;
    }
}

/// `x`'s limit for `y` as `y` sees it.
fn limit_granted_by(x: &Peer, y: &Peer) -> Option<u64> {
    let w = y.w();
    let ch = w.node().channel(&x.id)?;
    let line = ch.state().lines.get(&hours())?.clone();
    Some(line.limit_of(ch.local_side().other()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_moves_to_another_relay_and_loses_no_mail() {
    let root = scratch("move");
    let r1 = RelayProc::start(&root.join("r1"), "127.0.0.1:0");
    let r2 = RelayProc::start(&root.join("r2"), "127.0.0.1:0");
    let a = Peer::new(&root, "alice", 1, r1.address());
    let b = Peer::new(&root, "bob", 2, r1.address());
    befriend(&a, &b, 100).await;

    // a is away while b moves to r2, so a does not know yet.
    a.go_offline().await;
    b.w().move_relay(r2.address()).unwrap();
    // Meanwhile a changes its limit for b: the move goes to b's old relay.
    a.w().set_limit(b.id, hours(), 50).unwrap();
    a.go_online();
    // b drains its old mailbox and sees the change; a learns b's new relay.
    eventually("b gets mail sent to its old relay", || {
        limit_granted_by(&a, &b) == Some(50)
    })
    .await;
    eventually("a learns b's new relay", || {
        a.w().contact(&b.id).unwrap().map(|c| c.relay) == Some(r2.address())
    })
    .await;
    // From now on mail for b goes to r2.
    a.w().set_limit(b.id, hours(), 60).unwrap();
    eventually("b gets mail at its new relay", || {
        limit_granted_by(&a, &b) == Some(60)
    })
    .await;
    for p in [a, b] {
        p.go_offline().await;
    }
}

/// A mediator that reports more than it can pass on (a liar, or a stale report) costs the
/// buyer a retry, not money: its route is refused at its hop, and the payer routes the amount
/// again around that hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_reporting_mediator_costs_a_retry_not_money() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let root = scratch("liar");
    let r = RelayProc::start(&root.join("r"), "127.0.0.1:0");
    let a = Peer::new(&root, "buyer", 31, r.address());
    let m1 = Peer::new(&root, "liar", 32, r.address());
    let m2 = Peer::new(&root, "honest", 33, r.address());
    let s = Peer::new(&root, "seller", 34, r.address());
    // The seller reports nothing, so the index has only the mediators' word for the last hop.
    s.w()
        .set_report_privacy(offst_core::routing::Privacy::Off)
        .unwrap();
    m2.w().set_rate(Rate { base: 5, ppm: 0 }).unwrap();
    for (x, y) in [(&a, &m1), (&a, &m2), (&m1, &s), (&m2, &s)] {
        befriend(x, y, 100).await;
    }
    // The seller lets the liar owe only 2 after all.
    s.w().set_limit(m1.id, hours(), 2).unwrap();
    eventually("the liar sees its smaller limit", || {
        m1.w()
            .friend_view(s.id, 0)
            .is_ok_and(|v| v.lines.first().is_some_and(|l| l.their_limit == 2))
    })
    .await;
    // The liar (offline for a moment) tells the index it can pass 100 on to the seller.
    m1.go_offline().await;
    let ep = client_endpoint().unwrap();
    let as_liar = offst_core::net::client::RelayConnection::connect(
        &ep,
        r.addr,
        r.key,
        &Identity::from_seed([32; 32]),
    )
    .await
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let lie = offst_core::routing::CapacityReport {
        node: m1.id,
        issued_ms: now + 60_000, // newer than anything it sent before
        expires_ms: now + 600_000,
        rate: Rate { base: 1, ppm: 0 },
        entries: vec![
            offst_core::routing::ReportEntry {
                friend: s.id,
                currency: hours(),
                send: 100,
                recv: 100,
            },
            offst_core::routing::ReportEntry {
                friend: a.id,
                currency: hours(),
                send: 100,
                recv: 100,
            },
        ],
    }
    .sign(&Identity::from_seed([32; 32]));
    as_liar.report(lie).await.unwrap();
    as_liar.close().await;
    m1.go_online();

    let inv = s
        .w()
        .create_invoice(hours(), 10, 600_000, "around the liar")
        .unwrap();
    let req = s.w().payment_request(&inv).unwrap();
    // Wait until the index has every wallet's report: the liar's route is the cheapest, and the
    // honest one is there around it.
    // The buyer's driver, out of its slot while we await with it.
    let driver = a.driver.lock().unwrap().take().unwrap();
    {
        let started = Instant::now();
        loop {
            let q = a.w().route_query(&req, 1);
            let mut around = q.clone();
            around.avoid = vec![(m1.id, s.id)];
            let cheapest = driver.find_routes(q).await.ok();
            let other = driver.find_routes(around).await.ok();
            let via = |set: &Option<offst_core::routing::RouteSet>| {
                set.as_ref().map(|s| s.routes[0].route[1])
            };
            if via(&cheapest) == Some(m1.id) && via(&other) == Some(m2.id) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the index never had both routes: {cheapest:?} {other:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut steps = Vec::new();
    let receipt =
        offst_core::net::payer::pay(&a.wallet, &driver, &req, 1, Duration::from_secs(60), |s| {
            steps.push(s)
        })
        .await
        .unwrap();
    *a.driver.lock().unwrap() = Some(driver);
    receipt.verify().unwrap();
    let sent: Vec<Vec<NodeId>> = steps
        .iter()
        .filter_map(|s| match s {
            offst_core::net::payer::PayStep::Sent(set)
            | offst_core::net::payer::PayStep::Retried(set) => Some(set.routes[0].route.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![vec![a.id, m1.id, s.id], vec![a.id, m2.id, s.id]],
        "first the liar's cheap route, then around it"
    );
    eventually("the seller is paid by the honest mediator", || {
        s.w().node().balance(&m2.id, &hours()).map(|(b, _)| b) == Some(10)
    })
    .await;
    // Nothing moved on the liar's side.
    assert_eq!(a.w().node().balance(&m1.id, &hours()).unwrap().0, 0);
    assert_eq!(s.w().node().balance(&m1.id, &hours()).unwrap().0, 0);
    for p in [a, m1, m2, s] {
        p.go_offline().await;
    }
}

/// Tight sender quotas on both relays: the wallets' drivers send their outbox in batches and
/// the relays forward in batches, so most batches are partly refused with "wait". Everything
/// refused is sent again after the wait, nothing is lost or applied twice, and every payment
/// completes with the money adding up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_partly_over_the_quota_are_sent_again_and_lose_nothing() {
    let root = scratch("quota-batches");
    let dirs = [root.join("r1"), root.join("r2")];
    let relays = offst_relay::local::start_on_loopback(&dirs, |c| {
        c.sender_burst = 4;
        c.sender_rate_per_sec = 40;
    })
    .await
    .unwrap();
    let address = |i: usize| RelayAddress {
        addr: relays[i].addr.to_string(),
        key: relays[i].key,
    };
    let a = Peer::new(&root, "alice", 1, address(0));
    let b = Peer::new(&root, "bob", 2, address(1));
    let c = Peer::new(&root, "carol", 3, address(0));
    befriend(&a, &b, 1_000).await;
    befriend(&b, &c, 1_000).await;
    let path = [&a, &b, &c];
    // Twenty payments at once: a's and b's moves, and the relays' forwarding between them,
    // go well over 4 envelopes at a time.
    let mut invoices = Vec::new();
    for _ in 0..20 {
        invoices.push(pay(&a, &path, 3).await);
    }
    for inv in &invoices {
        eventually("every payment completes", || {
            paid(&a, inv) == Some(PaymentStatus::Completed)
        })
        .await;
    }
    for (x, y) in [(&a, &b), (&b, &c)] {
        eventually(&format!("{} and {} agree", x.name, y.name), || {
            let sx = x.w().node().channel(&y.id).map(|ch| ch.state().clone());
            let sy = y.w().node().channel(&x.id).map(|ch| ch.state().clone());
            sx.is_some() && sx == sy
        })
        .await;
    }
    eventually("every collect is in", || {
        c.w().node().balance(&b.id, &hours()).unwrap().0 == 60
    })
    .await;
    let forwarded: u64 = relays.iter().map(|r| r.stats().forwarded).sum();
    assert!(forwarded > 0, "nothing crossed between the relays");
    for p in [a, b, c] {
        p.go_offline().await;
    }
    for r in relays {
        r.shutdown().await;
    }
}
