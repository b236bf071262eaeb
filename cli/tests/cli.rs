//! The `offst` command line as a user runs it: real processes for two relays and three
//! wallets. Init, invite, accept, limit, invoice, pay across both relays through a mediator,
//! receipt verify and history; then hostile input, each refused with a clear error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A fresh, empty directory removed with everything in it when dropped (also when the test
/// fails), so test runs do not fill the disk.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("offst-cli-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn offst(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_offst"))
        .args(args)
        .env_remove("OFFST_WALLET")
        .env_remove("OFFST_PASSPHRASE")
        .output()
        .unwrap()
}

/// Run, expect success, return stdout.
fn ok(args: &[&str]) -> String {
    let out = offst(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "offst {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run, expect failure, return stderr.
fn fails(args: &[&str]) -> String {
    let out = offst(args);
    assert!(
        !out.status.success(),
        "offst {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = ok(args);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
}

struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Bg {
    /// Stop with SIGINT and wait: a clean stop, with a successful exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "Ctrl-C ended `offst` with {status}");
    }
}

/// Start `offst args...` in the background; wait for its first line of output.
fn background(args: &[&str]) -> (Bg, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offst"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Bg(child), line)
}

/// A free UDP port on loopback below the range the system picks port-0 sockets from, so no
/// other test's port-0 socket can take it before the relay started with it binds it (a port
/// from `127.0.0.1:0`, released and bound later, can be; the relay's tests failed CI that way).
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (first, last) = (10_000u16, low.saturating_sub(1).max(10_001));
    let span = u32::from(last - first);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    (0..span)
        .map(|i| first + (seed.wrapping_add(i) % span) as u16)
        .find(|&port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
        .expect("a free UDP port below the ephemeral range")
}

fn relay_key(dir: &Path) -> String {
    ok(&["relay", "--data-dir", dir.to_str().unwrap(), "--print-key"])
        .trim()
        .to_string()
}

#[test]
fn a_payment_across_two_relays_from_the_command_line() {
    let root = scratch("e2e");
    let (d1, d2) = (root.join("relay-1"), root.join("relay-2"));
    let (k1, k2) = (relay_key(&d1), relay_key(&d2));
    let (p1, p2) = (free_port(), free_port());
    let (r1, r1_line) = background(&[
        "relay",
        "--listen",
        &format!("127.0.0.1:{p1}"),
        "--data-dir",
        d1.to_str().unwrap(),
        "--index-peer",
        &format!("{k2}@127.0.0.1:{p2}"),
    ]);
    assert!(r1_line.starts_with(&format!("relay {k1}")), "{r1_line}");
    let (r2, _) = background(&[
        "relay",
        "--listen",
        &format!("127.0.0.1:{p2}"),
        "--data-dir",
        d2.to_str().unwrap(),
        "--index-peer",
        &format!("{k1}@127.0.0.1:{p1}"),
    ]);
    let relay1 = format!("{k1}@127.0.0.1:{p1}");
    let relay2 = format!("{k2}@127.0.0.1:{p2}");
    let w = |n: &str| root.join(n).to_string_lossy().into_owned();
    let (alice, bob, carol) = (w("alice"), w("bob"), w("carol"));

    // init: alice and bob on relay 1, carol on relay 2; bob charges 1 + 1 % to mediate.
    ok(&["--wallet", &alice, "init", "--relay", &relay1]);
    ok(&[
        "--wallet",
        &bob,
        "init",
        "--relay",
        &relay1,
        "--fee-base",
        "1",
        "--fee-ppm",
        "10000",
    ]);
    ok(&["--wallet", &carol, "init", "--relay", &relay2]);

    // invite / accept / limit: alice - bob - carol, each trusting the other for 100.
    for (inviter, invitee, inviter_name, invitee_name) in [
        (&bob, &alice, "bob", "alice"),
        (&carol, &bob, "carol", "bob"),
    ] {
        let inv = json(&[
            "--wallet",
            inviter,
            "--json",
            "invite",
            "--name",
            inviter_name,
        ]);
        let text = inv["invitation"].as_str().unwrap();
        ok(&["--wallet", invitee, "accept", text, "--name", invitee_name]);
        let reqs = json(&["--wallet", inviter, "--json", "requests"]);
        assert_eq!(reqs["requests"][0]["name"], invitee_name, "{reqs}");
        ok(&[
            "--wallet",
            inviter,
            "accept",
            invitee_name,
            "--name",
            inviter_name,
            "--limit",
            "100",
        ]);
        ok(&["--wallet", invitee, "limit", inviter_name, "100"]);
    }
    // Everyone catches up: the limits reach the other side. Friends who are never online at
    // the same time take a few rounds (each move may need the other's answer first).
    let settled = |friends: &serde_json::Value| {
        friends["friends"].as_array().is_some_and(|fs| {
            fs.len() == 2
                && fs.iter().all(|f| {
                    f["lines"][0]["our_limit"] == 100 && f["lines"][0]["their_limit"] == 100
                })
        })
    };
    for _ in 0..10 {
        for x in [&alice, &bob, &carol] {
            ok(&["--wallet", x, "sync"]);
        }
        if settled(&json(&["--wallet", &bob, "--json", "friends"])) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let friends = json(&["--wallet", &bob, "--json", "friends"]);
    assert_eq!(friends["friends"].as_array().unwrap().len(), 2, "{friends}");
    for f in friends["friends"].as_array().unwrap() {
        assert_eq!(f["lines"][0]["our_limit"], 100, "{friends}");
        assert_eq!(f["lines"][0]["their_limit"], 100, "{friends}");
    }

    // invoice at carol; bob and carol stay online; alice pays across both relays.
    let inv = json(&[
        "--wallet", &carol, "--json", "invoice", "10", "--memo", "cli test",
    ]);
    let request = inv["request"].as_str().unwrap().to_string();
    let (bob_run, line) = background(&["--wallet", &bob, "run"]);
    assert!(line.starts_with("online as"), "{line}");
    let (carol_run, _) = background(&["--wallet", &carol, "run"]);
    let paid = json(&["--wallet", &alice, "--json", "pay", &request, "--yes"]);
    assert_eq!(paid["status"], "completed", "{paid}");
    assert_eq!(paid["fees"], 1, "{paid}"); // 1 + 1 % of 10, rounded down
    let receipt = paid["receipt"].as_str().unwrap().to_string();

    // receipt verify: anyone can check it offline.
    let checked = json(&["--json", "receipt", "verify", &receipt]);
    assert_eq!(checked["valid"], true);
    assert_eq!(checked["amount"], 10);
    bob_run.stop();
    carol_run.stop();
    // Ctrl-C right after the ready line is a clean stop too (it once met the default action,
    // because the handler was installed only once the wallet waited for events).
    for _ in 0..3 {
        let (quick, line) = background(&["--wallet", &bob, "run"]);
        assert!(line.starts_with("online as"), "{line}");
        quick.stop();
    }

    // payment: the buyer finds its receipt again later, the seller its invoice paid.
    let invoice = paid["invoice"].as_str().unwrap().to_string();
    let p = json(&["--wallet", &alice, "--json", "payment", &invoice]);
    assert_eq!(
        (&p["role"], &p["status"], &p["receipt"]),
        (
            &"buyer".into(),
            &"completed".into(),
            &receipt.clone().into()
        ),
        "{p}"
    );
    let p = json(&["--wallet", &carol, "--json", "payment", &invoice]);
    assert_eq!(
        (&p["role"], &p["status"]),
        (&"seller".into(), &"paid".into()),
        "{p}"
    );
    assert!(p["receipt"].is_null(), "{p}");
    let text = ok(&["--wallet", &alice, "payment", &invoice]);
    assert!(
        text.contains("completed") && text.contains(&receipt),
        "{text}"
    );
    let e = fails(&["--wallet", &bob, "payment", &invoice]);
    assert!(e.contains("no payment"), "{e}");
    let e = fails(&["--wallet", &bob, "payment", "nonsense"]);
    assert!(e.contains("not an invoice id"), "{e}");

    // history and balance.
    let h = json(&["--wallet", &carol, "--json", "history"]);
    let kinds: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"invoice_paid"), "{kinds:?}");
    let b = json(&["--wallet", &alice, "--json", "balance"]);
    assert_eq!(b["totals"]["EUR"], -11, "{b}");
    let b = json(&["--wallet", &carol, "--json", "balance"]);
    assert_eq!(b["totals"]["EUR"], 10, "{b}");
    let b = json(&["--wallet", &bob, "--json", "balance"]);
    assert_eq!(b["totals"]["EUR"], 1, "{b}");

    // Hostile input, each a clear error and a non-zero exit.
    let e = fails(&["--wallet", &alice, "accept", "OFFSTI1ABCDEFGH"]);
    assert!(e.contains("damaged") || e.contains("checksum"), "{e}");
    let e = fails(&["--wallet", &alice, "accept", &request]);
    assert!(e.contains("payment request, not an invitation"), "{e}");
    let e = fails(&["--wallet", &alice, "limit", "nobody", "5"]);
    assert!(e.contains("no friend \"nobody\""), "{e}");
    let expired = json(&[
        "--wallet",
        &carol,
        "--json",
        "invoice",
        "5",
        "--minutes",
        "0",
    ]);
    let e = fails(&[
        "--wallet",
        &alice,
        "pay",
        expired["request"].as_str().unwrap(),
        "--yes",
    ]);
    assert!(e.contains("expired"), "{e}");
    let big = json(&["--wallet", &carol, "--json", "invoice", "1000"]);
    let e = fails(&[
        "--wallet",
        &alice,
        "pay",
        big["request"].as_str().unwrap(),
        "--yes",
    ]);
    assert!(e.contains("no routes carry 1000"), "{e}");
    let e = fails(&["--json", "receipt", "verify", &receipt.replace('A', "B")]);
    assert!(!e.is_empty());
    let e = fails(&["balance"]);
    assert!(e.contains("--wallet DIR or set OFFST_WALLET"), "{e}");
    let e = fails(&["--wallet", &alice, "init"]);
    assert!(e.contains("already"), "{e}");
    // Nothing changed for alice after all that.
    let b = json(&["--wallet", &alice, "--json", "balance"]);
    assert_eq!(b["totals"]["EUR"], -11, "{b}");

    // Reporting privacy.
    assert_eq!(
        json(&["--wallet", &alice, "--json", "report"])["report"],
        "exact"
    );
    assert_eq!(
        json(&["--wallet", &alice, "--json", "report", "buckets"])["report"],
        "buckets"
    );
    let e = fails(&["--wallet", &alice, "report", "loud"]);
    assert!(e.contains("exact, buckets or off"), "{e}");

    // backup / restore: the restored wallet holds the same balance.
    let file = root.join("alice.backup");
    ok(&["--wallet", &alice, "backup", file.to_str().unwrap()]);
    let again = w("alice-restored");
    std::fs::create_dir_all(&again).unwrap();
    std::fs::copy(
        Path::new(&alice).join("wallet.key"),
        Path::new(&again).join("wallet.key"),
    )
    .unwrap();
    ok(&["--wallet", &again, "restore", file.to_str().unwrap()]);
    let b = json(&["--wallet", &again, "--json", "balance"]);
    assert_eq!(b["totals"]["EUR"], -11, "{b}");
    let e = fails(&["--wallet", &again, "restore", file.to_str().unwrap()]);
    assert!(!e.is_empty());
    drop(r1);
    drop(r2);
}
