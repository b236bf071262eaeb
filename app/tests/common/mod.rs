//! Wallets on loopback relays for the app tests: real SQLite files, real QUIC.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use offst_core::invite::{Invitation, PaymentRequest};
use offst_core::net::client::client_endpoint;
use offst_core::net::driver::Driver;
use offst_core::net::wire::RelayAddress;
use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::NodeId;
use offst_core::wallet::{KeyFile, SharedWallet, Wallet, WalletOptions};
use offst_relay::RelayHandle;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        // Short: a Unix socket's path must stay under 108 bytes.
        let dir = std::env::temp_dir().join(format!("oa-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn eur() -> Currency {
    Currency::new("EUR").unwrap_or_else(|e| unreachable!("{e}"))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `n` relays on loopback, sharing their indexes.
pub async fn relays(root: &Path, n: usize) -> Vec<RelayHandle> {
    let dirs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("relay-{i}"))).collect();
    offst_relay::local::start_on_loopback(&dirs, |_| {})
        .await
        .unwrap_or_else(|e| unreachable!("relays: {e}"))
}

pub fn address(relay: &RelayHandle) -> RelayAddress {
    RelayAddress {
        addr: relay.addr.to_string(),
        key: relay.key,
    }
}

/// A wallet with its driver, as `offst` makes it (key in `wallet.key`).
pub struct Person {
    pub name: &'static str,
    pub id: NodeId,
    pub dir: PathBuf,
    pub wallet: Arc<SharedWallet>,
    pub driver: Arc<Driver>,
}

impl Person {
    /// Create a wallet in `dir` on `relay`, charging `rate` to pass payments on, and go online.
    pub fn create(name: &'static str, dir: PathBuf, relay: &RelayHandle, rate: Rate) -> Person {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
        let key = dir.join("wallet.key");
        KeyFile::generate(&key).unwrap_or_else(|e| unreachable!("{e}"));
        let options = WalletOptions {
            rate,
            ..WalletOptions::default()
        };
        let mut w = Wallet::create(&dir, &KeyFile::new(&key), options)
            .unwrap_or_else(|e| unreachable!("{e}"));
        w.set_relay(address(relay))
            .unwrap_or_else(|e| unreachable!("{e}"));
        Person::online(name, dir, w)
    }

    fn online(name: &'static str, dir: PathBuf, w: Wallet) -> Person {
        let id = w.id();
        let wallet = Arc::new(SharedWallet::new(w));
        let endpoint = client_endpoint().unwrap_or_else(|e| unreachable!("{e}"));
        let driver = Arc::new(Driver::spawn(wallet.clone(), endpoint));
        Person {
            name,
            id,
            dir,
            wallet,
            driver,
        }
    }

    pub fn w(&self) -> offst_core::sync::Guard<'_, Wallet> {
        self.wallet.lock()
    }

    /// Hand everything queued to the relay, stop the driver and close the wallet (so that
    /// another process may open it).
    pub async fn close(self) -> PathBuf {
        let _ = self
            .driver
            .synced(&self.wallet, Duration::from_secs(30), |_| {})
            .await;
        assert!(
            Driver::stop_shared(self.driver, Duration::from_secs(30)).await,
            "the driver is still in use"
        );
        drop(self.wallet);
        self.dir
    }
}

/// Wait until `cond` holds (at most a minute).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `x` invites `y`, `y` accepts, `x` accepts back; each lets the other owe `limit` EUR.
pub async fn befriend(x: &Person, y: &Person, limit: u64) {
    let text = x
        .w()
        .invite(x.name, 3_600_000)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .to_text();
    let inv = Invitation::parse(&text, now_ms()).unwrap_or_else(|e| unreachable!("{e}"));
    y.w()
        .accept_invitation(&inv, y.name)
        .unwrap_or_else(|e| unreachable!("{e}"));
    until("the friend request arrives", || {
        x.w()
            .friend_requests()
            .is_ok_and(|r| r.iter().any(|r| r.from.id == y.id))
    })
    .await;
    x.w()
        .accept_friend_request(y.id, x.name)
        .unwrap_or_else(|e| unreachable!("{e}"));
    x.w()
        .set_limit(y.id, eur(), limit)
        .unwrap_or_else(|e| unreachable!("{e}"));
    until("the acceptance arrives", || {
        y.w().node().channel(&x.id).is_some()
    })
    .await;
    y.w()
        .set_limit(x.id, eur(), limit)
        .unwrap_or_else(|e| unreachable!("{e}"));
    for (a, b) in [(x, y), (y, x)] {
        until("the limit arrives", || {
            b.w().node().channel(&a.id).is_some_and(|ch| {
                ch.state()
                    .lines
                    .get(&eur())
                    .is_some_and(|l| l.limit_of(ch.local_side().other()) == limit)
            })
        })
        .await;
    }
}

/// A payment request from `seller` for `amount` EUR.
pub fn request(seller: &Person, amount: u64, memo: &str) -> PaymentRequest {
    let mut w = seller.w();
    let inv = w
        .create_invoice(eur(), amount, 600_000, memo)
        .unwrap_or_else(|e| unreachable!("{e}"));
    w.payment_request(&inv)
        .unwrap_or_else(|e| unreachable!("{e}"))
}

/// What `a` and `b` owe each other, from `a`'s side (positive: `b` owes `a`).
pub fn balance(a: &Person, b: &Person) -> i128 {
    a.w()
        .node()
        .channel(&b.id)
        .and_then(|ch| {
            ch.state()
                .lines
                .get(&eur())
                .map(|l| l.balance_of(ch.local_side()))
        })
        .unwrap_or(0)
}
