//! Durable wallet benchmarks (real SQLite files in the system's temp directory):
//! - durable steps per second: payments through a chain of three wallets a - b - c, every
//!   input one committed transaction, with `synchronous=FULL` and with `NORMAL`;
//! - opening a wallet that holds 100,000 history rows (goal: 50 ms or less).
//!
//! `cargo bench -p offst-tests`; figures and method in `docs/benchmarks.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use offst_core::wallet::{Durability, Wallet, WalletOptions};
use offst_tests::{MEDIATOR_RATE, befriend, hours, open_or_create, plan, pump, test_keys};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("offst-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn trio(dir: &std::path::Path, durability: Durability) -> Vec<Wallet> {
    let options = WalletOptions {
        durability,
        ..WalletOptions::default()
    };
    let mut ws: Vec<Wallet> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| open_or_create(&dir.join(n), i as u8 + 1, options.clone()).unwrap())
        .collect();
    ws[1].set_rate(MEDIATOR_RATE).unwrap();
    befriend(&mut ws, 0, 1, u64::MAX >> 3).unwrap();
    befriend(&mut ws, 1, 2, u64::MAX >> 3).unwrap();
    pump(&mut ws, 10_000).unwrap();
    ws
}

/// One payment a -> b -> c, pumped to completion. Returns the durable steps it took (the
/// invoice, the payment, and one per delivered message).
fn one_payment(ws: &mut [Wallet]) -> u64 {
    let inv = ws[2]
        .create_invoice(hours(), 1, 3_600_000, "bench")
        .unwrap();
    let route = plan(ws, &[0, 1, 2], 1);
    ws[0].pay(&inv, vec![route]).unwrap();
    2 + pump(ws, 10_000).unwrap() as u64
}

fn durable_steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable steps");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (label, durability) in [("FULL", Durability::Full), ("NORMAL", Durability::Normal)] {
        let dir = scratch(label);
        let mut ws = trio(&dir, durability);
        let steps = one_payment(&mut ws);
        g.throughput(Throughput::Elements(steps));
        g.bench_function(
            format!("payment a-b-c, synchronous={label} ({steps} steps)"),
            |b| b.iter(|| one_payment(&mut ws)),
        );
        drop(ws);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

fn open_big_wallet(c: &mut Criterion) {
    let dir = scratch("open");
    let w = Wallet::create(&dir, &test_keys(9), WalletOptions::default()).unwrap();
    drop(w);
    // Fill history directly: 100,000 rows the way the wallet writes them (going through
    // 100,000 durable steps would only make the setup slow, not the open).
    let started = Instant::now();
    {
        let mut conn = rusqlite::Connection::open(dir.join("wallet.db")).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut put = tx
                .prepare(
                    "INSERT INTO history (at_ms, kind, friend, invoice, currency, amount, detail)
                     VALUES (?1, 'payment_completed', ?2, ?3, 'hours', ?4, 'paid 5 hours to someone')",
                )
                .unwrap();
            for i in 0..100_000i64 {
                let mut friend = [0u8; 32];
                friend[..8].copy_from_slice(&(i % 50).to_le_bytes());
                let mut invoice = [0u8; 32];
                invoice[..8].copy_from_slice(&i.to_le_bytes());
                put.execute(rusqlite::params![
                    1_700_000_000_000 + i,
                    friend.to_vec(),
                    invoice.to_vec(),
                    -5
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    eprintln!("filled 100,000 history rows in {:?}", started.elapsed());
    let mut g = c.benchmark_group("open");
    g.sample_size(30);
    g.bench_function("open a wallet holding 100,000 history rows", |b| {
        b.iter(|| Wallet::open(&dir, &test_keys(9), WalletOptions::default()).unwrap())
    });
    g.finish();
    let w = Wallet::open(&dir, &test_keys(9), WalletOptions::default()).unwrap();
    assert_eq!(w.history_len().unwrap(), 100_000);
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, durable_steps, open_big_wallet);
criterion_main!(benches);
