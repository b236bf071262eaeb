//! Load generator for the relay. Starts `offst-relay` (the binary next to this one) on a fresh
//! data directory and measures, with real QUIC on loopback:
//!
//! - `--envelopes N`: envelopes per second stored durably and delivered: S senders, each with K
//!   envelopes in flight, to S receivers that acknowledge what they get;
//! - `--connections C`: C wallets connected at once (each its own key and TLS handshake), and
//!   the relay's memory (resident set) with them all open;
//! - `--mailboxes M`: before the throughput run, one envelope left waiting in each of M other
//!   mailboxes (nobody collects them), as on a relay that many users use.
//!
//! Prints one JSON object. Figures go in `docs/benchmarks.md`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use offst_core::net::client::{RelayConnection, client_endpoint};
use offst_core::protocol::identity::{Identity, NodeId};
use serde_json::{Map, Value};

#[derive(Parser, Debug)]
#[command(about = "Measure a relay: envelopes/s stored and delivered, and concurrent connections")]
struct Args {
    /// Envelopes to send in the throughput run (0: skip it).
    #[arg(long, default_value_t = 200_000)]
    envelopes: u64,
    /// Sending (and as many receiving) wallets.
    #[arg(long, default_value_t = 8)]
    senders: u64,
    /// Envelopes each sender keeps in flight.
    #[arg(long, default_value_t = 256)]
    inflight: u64,
    /// Envelope size in bytes (a sealed small protocol message is 600 to 2,200 bytes).
    #[arg(long, default_value_t = 600)]
    size: usize,
    /// Connections to hold open at once (0: skip the run).
    #[arg(long, default_value_t = 0)]
    connections: u64,
    /// Handshakes in flight while opening connections.
    #[arg(long, default_value_t = 32)]
    parallel_handshakes: usize,
    /// Mailboxes given one waiting envelope each before the throughput run (0: none).
    #[arg(long, default_value_t = 0)]
    mailboxes: u64,
}

struct Relay {
    child: Child,
    key: NodeId,
    addr: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(dir: &std::path::Path) -> Result<Relay, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let relay = exe.with_file_name("offst-relay");
    let mut child = Command::new(&relay)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--sender-rate-per-sec",
            "1000000",
            "--sender-burst",
            "1000000",
            "--max-mailbox-messages",
            "10000000",
            "--max-mailbox-bytes",
            "100000000000",
            "--max-connections",
            "100000",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: {e} (build it: cargo build --release -p offst-relay)",
                relay.display()
            )
        })?;
    let mut line = String::new();
    let out = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let parts: Vec<&str> = line.split_whitespace().collect();
    let key = parts
        .get(1)
        .and_then(|k| k.parse().ok())
        .ok_or("bad relay line")?;
    let addr = parts
        .get(2)
        .and_then(|a| a.parse().ok())
        .ok_or("bad relay line")?;
    Ok(Relay { child, key, addr })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn identity(n: u64) -> Identity {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed[8] = 0x5a;
    Identity::from_seed(seed)
}

/// One envelope into each of `n` mailboxes nobody collects, 256 at a time.
async fn fill_mailboxes(
    n: u64,
    relay: &Relay,
    report: &mut Map<String, Value>,
) -> Result<(), String> {
    let ep = client_endpoint().map_err(|e| e.to_string())?;
    let conn = Arc::new(
        RelayConnection::connect(&ep, relay.addr, relay.key, &identity(500_000))
            .await
            .map_err(|e| e.to_string())?,
    );
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut handles = Vec::new();
    for i in 0..n {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let conn = conn.clone();
        // Any 32 bytes name a mailbox: the relay does not check recipients' keys.
        let mut id = [0x77u8; 32];
        id[..8].copy_from_slice(&i.to_le_bytes());
        let to = NodeId::from_bytes(id);
        handles.push(tokio::spawn(async move {
            let r = conn.send(to, vec![1u8; 64]).await;
            drop(permit);
            r.is_ok()
        }));
        if (i + 1).is_multiple_of(20_000) {
            eprintln!("{} mailboxes filled ({:.0?})", i + 1, start.elapsed());
        }
    }
    let mut stored = 0u64;
    for h in handles {
        if h.await.unwrap_or(false) {
            stored += 1;
        }
    }
    report.insert("mailboxes_filled".into(), stored.into());
    report.insert(
        "mailboxes_fill_ms".into(),
        (start.elapsed().as_millis() as u64).into(),
    );
    Ok(())
}

async fn throughput(
    args: &Args,
    relay: &Relay,
    report: &mut Map<String, Value>,
) -> Result<(), String> {
    if args.mailboxes > 0 {
        fill_mailboxes(args.mailboxes, relay, report).await?;
    }
    let ep = client_endpoint().map_err(|e| e.to_string())?;
    let per = args.envelopes / args.senders.max(1);
    let total = per * args.senders;
    let mut receivers = Vec::new();
    for s in 0..args.senders {
        let who = identity(1_000_000 + s);
        let mut conn = RelayConnection::connect(&ep, relay.addr, relay.key, &who)
            .await
            .map_err(|e| e.to_string())?;
        receivers.push(tokio::spawn(async move {
            let mut got = 0u64;
            while got < per {
                let Some(d) = conn.recv().await else { break };
                got += 1;
                if got.is_multiple_of(64) || got == per {
                    let _ = conn.ack(d.seq).await;
                }
            }
            (got, Instant::now())
        }));
    }
    let mut senders = Vec::new();
    for s in 0..args.senders {
        let conn = RelayConnection::connect(&ep, relay.addr, relay.key, &identity(s))
            .await
            .map_err(|e| e.to_string())?;
        senders.push(Arc::new(conn));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, conn) in senders.iter().enumerate() {
        let to = identity(1_000_000 + s as u64).id();
        let sem = Arc::new(tokio::sync::Semaphore::new(args.inflight as usize));
        let conn = conn.clone();
        let size = args.size.max(8);
        tasks.push(tokio::spawn(async move {
            let mut handles = Vec::new();
            for i in 0..per {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    break;
                };
                let conn = conn.clone();
                let mut body = vec![0u8; size];
                if let Some(head) = body.get_mut(..8) {
                    head.copy_from_slice(&i.to_be_bytes());
                }
                handles.push(tokio::spawn(async move {
                    let r = conn.send(to, body).await;
                    drop(permit);
                    r.is_ok()
                }));
            }
            let mut ok = 0u64;
            for h in handles {
                if h.await.unwrap_or(false) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.map_err(|e| e.to_string())?;
    }
    let stored_in = start.elapsed();
    let mut delivered = 0;
    let mut last = start;
    for r in receivers {
        let (got, at) = r.await.map_err(|e| e.to_string())?;
        delivered += got;
        last = last.max(at);
    }
    let all = last.duration_since(start);
    report.insert("envelopes".into(), total.into());
    report.insert("accepted".into(), accepted.into());
    report.insert("delivered".into(), delivered.into());
    report.insert("envelope_bytes".into(), (args.size as u64).into());
    report.insert("senders".into(), args.senders.into());
    report.insert("inflight_per_sender".into(), args.inflight.into());
    report.insert(
        "stored_per_sec".into(),
        ((accepted as f64 / stored_in.as_secs_f64()) as u64).into(),
    );
    report.insert(
        "stored_and_delivered_per_sec".into(),
        ((delivered as f64 / all.as_secs_f64()) as u64).into(),
    );
    report.insert("throughput_ms".into(), (all.as_millis() as u64).into());
    Ok(())
}

async fn connections(
    args: &Args,
    relay: &Relay,
    report: &mut Map<String, Value>,
) -> Result<(), String> {
    let before = rss_kib(relay.child.id());
    let ep = client_endpoint().map_err(|e| e.to_string())?;
    let sem = Arc::new(tokio::sync::Semaphore::new(args.parallel_handshakes));
    let start = Instant::now();
    let mut handles = Vec::new();
    for n in 0..args.connections {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let ep = ep.clone();
        let (addr, key) = (relay.addr, relay.key);
        handles.push(tokio::spawn(async move {
            let who = identity(10_000_000 + n);
            let r = RelayConnection::connect(&ep, addr, key, &who).await;
            drop(permit);
            r
        }));
        if (n + 1).is_multiple_of(1000) {
            eprintln!("{} connections opening ({:.0?})", n + 1, start.elapsed());
        }
    }
    let mut open = Vec::new();
    let mut failed = 0u64;
    for h in handles {
        match h.await {
            Ok(Ok(c)) => open.push(c),
            _ => failed += 1,
        }
    }
    let opened_in = start.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // They all still answer: one envelope from each of a sample.
    let sample = open.len().min(200);
    let target = identity(10_000_000).id();
    let mut answered = 0;
    for c in open.iter().rev().take(sample) {
        if c.send(target, vec![1; 100]).await.is_ok() {
            answered += 1;
        }
    }
    let after = rss_kib(relay.child.id());
    report.insert("connections".into(), args.connections.into());
    report.insert("connections_open".into(), (open.len() as u64).into());
    report.insert("connections_failed".into(), failed.into());
    report.insert(
        "sample_answered".into(),
        format!("{answered}/{sample}").into(),
    );
    report.insert("open_ms".into(), (opened_in.as_millis() as u64).into());
    report.insert("relay_rss_mib_before".into(), (before / 1024).into());
    report.insert(
        "relay_rss_mib_with_connections".into(),
        (after / 1024).into(),
    );
    report.insert(
        "relay_kib_per_connection".into(),
        (after.saturating_sub(before) / (open.len().max(1) as u64)).into(),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("offst-relay-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = Map::new();
    let result = async {
        let relay = start_relay(&dir)?;
        if args.envelopes > 0 {
            throughput(&args, &relay, &mut report).await?;
        }
        if args.connections > 0 {
            connections(&args, &relay, &mut report).await?;
        }
        Ok::<(), String>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => {
            println!("{}", Value::Object(report));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relay-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
