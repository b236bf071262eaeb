//! End to end, as people would run it: a shop's wallet under `offst serve`, the point-of-sale
//! example holding only `receive`, and a buyer paying with the `offst` command through two
//! mediators over two relays. Then the point of sale tries to pay, and is refused.
//!
//! The `offst` binary and the example are built (if not up to date) by a nested `cargo build`
//! into `target/e2e`.

// serde_json's `value["key"]` gives `Null` for what is missing; it does not panic.
#![allow(clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Person, TempDir, befriend, eur, relays};
use offst_core::protocol::amount::Rate;
use offst_core::routing::RouteQuery;

/// `target/<profile>`, where this test runs from.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| unreachable!("{e}"));
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| unreachable!("no target directory above {}", exe.display()))
}

/// Where the binaries this test runs are built: a target directory of their own, because a
/// build of other packages resolves features differently, and sharing one directory would
/// make each build undo the other.
fn bin_dir() -> PathBuf {
    let profile = target_dir()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "debug".into());
    target_dir()
        .parent()
        .map_or_else(|| target_dir().join("e2e"), |t| t.join("e2e"))
        .join(profile)
}

/// Build with cargo into [`bin_dir`] (a no-op when up to date).
fn build(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build").args(args).args(["--locked", "--quiet"]);
    let dir = bin_dir();
    if let Some(root) = dir.parent() {
        cmd.arg("--target-dir").arg(root);
    }
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().unwrap_or_else(|e| unreachable!("cargo: {e}"));
    assert!(
        out.status.success(),
        "cargo build {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn offst(wallet: &Path) -> Command {
    let mut c = Command::new(bin_dir().join("offst"));
    c.arg("--wallet").arg(wallet).env_remove("OFFST_PASSPHRASE");
    c
}

fn pos(socket: &Path, key: &Path) -> Command {
    let mut c = Command::new(bin_dir().join("examples").join("pos"));
    c.arg("--socket").arg(socket).arg("--key").arg(key);
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap_or_else(|e| unreachable!("{c:?}: {e}"));
    eprintln!(
        "{c:?}\n  stdout: {}\n  stderr: {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last line of `out`, as JSON.
fn json(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| unreachable!("{e}: {text}"))
}

/// Lines of a child's stdout, read on a thread.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap_or_else(|| unreachable!("piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("  | {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line starting with `word` (within two minutes).
fn line_starting(lines: &std::sync::mpsc::Receiver<String>, word: &str) -> String {
    let start = Instant::now();
    loop {
        let left = Duration::from_secs(120).saturating_sub(start.elapsed());
        match lines.recv_timeout(left) {
            Ok(l) if l.starts_with(word) => return l,
            Ok(_) => {}
            Err(e) => unreachable!("no line starting with {word}: {e}"),
        }
    }
}

/// Stop a child the way a person's Ctrl-C (or a service manager) would.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_of_sale_holding_receive_is_paid_through_two_mediators_and_may_not_pay() {
    tokio::task::spawn_blocking(|| {
        // One invocation: two would resolve features differently and rebuild each other.
        build(&[
            "-p",
            "offst",
            "--bin",
            "offst",
            "-p",
            "offst-app",
            "--example",
            "pos",
        ]);
    })
    .await
    .unwrap_or_else(|e| unreachable!("{e}"));

    // buyer (relay 0) - m1 (relay 1) - m2 (relay 0) - shop (relay 1); mediators charge 1 + 0.1 %.
    let root = TempDir::new("pos");
    let relays = relays(&root.0, 2).await;
    let (r0, r1) = match relays.as_slice() {
        [a, b] => (a, b),
        _ => unreachable!(),
    };
    let fee = Rate {
        base: 1,
        ppm: 1_000,
    };
    let buyer = Person::create("buyer", root.0.join("buyer"), r0, Rate::default());
    let m1 = Person::create("m1", root.0.join("m1"), r1, fee);
    let m2 = Person::create("m2", root.0.join("m2"), r0, fee);
    let shop = Person::create("shop", root.0.join("shop"), r1, Rate::default());
    befriend(&buyer, &m1, 1_000).await;
    befriend(&m1, &m2, 1_000).await;
    befriend(&m2, &shop, 1_000).await;
    // The index learns the mediators' channels from their reports.
    let query = RouteQuery {
        from: buyer.id,
        to: shop.id,
        currency: eur(),
        amount: 10,
        max_routes: 1,
        avoid: Vec::new(),
        first_hops: None,
    };
    let start = Instant::now();
    while buyer.driver.find_routes(query.clone()).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no route from buyer to shop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The buyer and the shop hand their wallets over to the `offst` command.
    let buyer_dir = buyer.close().await;
    let shop_dir = shop.close().await;

    let socket = shop_dir.join("api.sock");
    let mut serve = offst(&shop_dir)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let serve_lines = lines_of(&mut serve);
    line_starting(&serve_lines, "wallet ");

    let key_file = root.0.join("pos.key");
    let out = run({
        let mut c = pos(&socket, &key_file);
        c.arg("key");
        c
    });
    assert!(out.status.success());
    let key = stdout(&out)
        .trim()
        .strip_prefix("KEY ")
        .unwrap_or_else(|| unreachable!("no key"))
        .to_string();
    // The owner grants `receive` while `offst serve` runs.
    let out = run({
        let mut c = offst(&shop_dir);
        c.args(["apps", "add", "pos", &key, "--allow", "receive"]);
        c
    });
    assert!(out.status.success());
    // The owner's mistakes get a sentence and change nothing.
    for (args, says) in [
        (
            vec!["apps", "add", "bot", &key, "--allow", "pay"],
            "needs --pay-limit",
        ),
        (
            vec!["apps", "add", "bot", "not-a-key", "--allow", "read"],
            "not an app key",
        ),
        (
            vec!["apps", "add", "bot", &key, "--allow", "spend"],
            "not a permission",
        ),
        (vec!["apps", "revoke", "nobody"], "no app \"nobody\""),
    ] {
        let out = run({
            let mut c = offst(&shop_dir);
            c.args(&args);
            c
        });
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let listed = json(&run({
        let mut c = offst(&shop_dir);
        c.args(["apps", "list", "--json"]);
        c
    }));
    assert_eq!(listed["apps"][0]["name"], "pos");
    assert_eq!(
        listed["apps"][0]["permissions"],
        serde_json::json!(["receive"])
    );
    assert_eq!(listed["apps"].as_array().map(Vec::len), Some(1));

    let mut sale = pos(&socket, &key_file)
        .args(["sell", "10", "coffee"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let sale_lines = lines_of(&mut sale);
    let request = line_starting(&sale_lines, "REQUEST ")
        .trim_start_matches("REQUEST ")
        .to_string();
    let out = tokio::task::spawn_blocking({
        let (buyer_dir, request) = (buyer_dir.clone(), request.clone());
        move || {
            run({
                let mut c = offst(&buyer_dir);
                c.args(["pay", "--yes", "--json", &request]);
                c
            })
        }
    })
    .await
    .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(out.status.success(), "the buyer could not pay");
    let paid = json(&out);
    assert_eq!(paid["status"], "completed");
    assert_eq!(paid["amount"], 10);
    // Two mediators, each charging 1 + 0.1 % (rounded up): 2 more than the price.
    assert_eq!(paid["fees"], 2);
    let line = line_starting(&sale_lines, "PAID ");
    assert!(line.ends_with(" 10 EUR \"coffee\""), "{line}");
    let status = sale.wait().unwrap_or_else(|e| unreachable!("{e}"));
    assert!(status.success(), "the point of sale did not end well");

    // The point of sale tries to pay (a refund to the buyer): it holds only `receive`.
    let out = run({
        let mut c = offst(&buyer_dir);
        c.args(["invoice", "3", "--json"]);
        c
    });
    let refund = json(&out)["request"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = run({
        let mut c = pos(&socket, &key_file);
        c.args(["refund", &refund]);
        c
    });
    assert!(
        !out.status.success(),
        "the point of sale paid without `pay`"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not pay"), "{err}");

    terminate(&mut serve);
    // The shop got the price; its history names the app for what it did and tried.
    let balance = json(&run({
        let mut c = offst(&shop_dir);
        c.args(["balance", "--json"]);
        c
    }));
    assert_eq!(balance["totals"]["EUR"], 10);
    let history = json(&run({
        let mut c = offst(&shop_dir);
        c.args(["history", "--json", "--limit", "100"]);
        c
    }));
    let rows = history["history"].as_array().cloned().unwrap_or_default();
    let has = |kind: &str, text: &str| {
        rows.iter()
            .any(|r| r["kind"] == kind && r["detail"].as_str().is_some_and(|d| d.contains(text)))
    };
    assert!(has(
        "app_action",
        "app \"pos\": create an invoice for 10 EUR"
    ));
    assert!(has("invoice_paid", ""));
    assert!(has(
        "app_refused",
        "app \"pos\": pay a payment request: refused"
    ));
    drop(relays);
}
