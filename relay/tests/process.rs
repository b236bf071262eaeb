//! The `offst-relay` binary as a real process: the embedded default, flags and TOML, graceful
//! SIGTERM, and a SIGKILL in the middle of traffic that loses no accepted envelope.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use offst_core::net::client::{ClientError, RelayConnection, client_endpoint};
use offst_core::protocol::identity::Identity;
use tokio::time::timeout;

mod common;
use common::{scratch, spawn};

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..500 {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    panic!("the relay did not exit");
}

#[test]
fn runs_with_its_embedded_default_and_stops_on_sigterm() {
    let cwd = scratch("default");
    let (mut child, key, addr) = spawn(&cwd, &[]);
    assert_eq!(addr, "127.0.0.1:7360".parse().unwrap());
    assert!(cwd.join("offst-relay-data").join("relay.key").exists());
    assert!(cwd.join("offst-relay-data").join("mail.db").exists());
    signal(&child, "-TERM");
    assert!(wait(&mut child).success(), "SIGTERM is a clean stop");
    // Same directory, same key.
    let out = Command::new(env!("CARGO_BIN_EXE_offst-relay"))
        .arg("--print-key")
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), key.to_string());
}

/// Ctrl-C (SIGINT) right after the ready line is a clean stop too. The relay used to listen
/// for it only once it was waiting, so a SIGINT in between met the default action and killed
/// it without closing its database (the same race SIGTERM had).
#[test]
fn sigint_right_after_the_ready_line_is_a_clean_stop() {
    for round in 0..5 {
        let cwd = scratch(&format!("sigint-{round}"));
        let (mut child, _, _) = spawn(&cwd, &["--listen", "127.0.0.1:0"]);
        signal(&child, "-INT");
        let status = wait(&mut child);
        assert!(
            status.success(),
            "round {round}: SIGINT ended the relay with {status}"
        );
    }
}

#[test]
fn a_config_file_is_read_and_a_bad_one_is_named() {
    let cwd = scratch("config");
    std::fs::write(
        cwd.join("relay.toml"),
        "listen = \"127.0.0.1:0\"\ndata_dir = \"mail-here\"\nmax_connections = 5\n",
    )
    .unwrap();
    let (mut child, _, addr) = spawn(&cwd, &["--config", "relay.toml"]);
    assert_ne!(addr.port(), 7360);
    assert!(cwd.join("mail-here").join("relay.key").exists());
    signal(&child, "-TERM");
    assert!(wait(&mut child).success());

    std::fs::write(cwd.join("bad.toml"), "max_conections = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_offst-relay"))
        .args(["--config", "bad.toml"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_conections"), "{err}");
    // A flag out of range.
    let out = Command::new(env!("CARGO_BIN_EXE_offst-relay"))
        .args(["--max-connections", "0", "--listen", "127.0.0.1:0"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_connections"));
    // A hold past its bound, from a flag and from the file; within it, the relay runs.
    std::fs::write(cwd.join("hold.toml"), "hold_ms = 1001\n").unwrap();
    for args in [&["--hold-ms", "5000"][..], &["--config", "hold.toml"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_offst-relay"))
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("hold_ms must be 0 to 1000"), "{err}");
    }
    // Bounds below the protocol's largest envelope would stall the channels a relay carries.
    for (args, named) in [
        (
            &["--max-envelope-bytes", "65536"][..],
            "max_envelope_bytes must be 532480",
        ),
        (
            &["--max-mailbox-bytes", "100000"][..],
            "max_mailbox_bytes must be at least 532480",
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_offst-relay"))
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--data-dir", "bounds"])
            .current_dir(&cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A relay that starts anyway is stopped, and the test fails instead of waiting.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the relay started with {args:?}");
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{err}");
    }
    let (mut child, _, _) = spawn(&cwd, &["--listen", "127.0.0.1:0", "--hold-ms", "0"]);
    signal(&child, "-TERM");
    assert!(wait(&mut child).success());
    // A malformed index peer, from the file and from a flag.
    std::fs::write(cwd.join("peers.toml"), "index_peers = [\"nokey\"]\n").unwrap();
    for args in [
        &["--config", "peers.toml"][..],
        &["--index-peer", "abc@127.0.0.1:7360"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_offst-relay"))
            .args(args)
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("index peer"), "{err}");
    }
}

#[tokio::test]
async fn sigkill_mid_traffic_loses_no_accepted_envelope() {
    let cwd = scratch("sigkill");
    let (mut child, key, addr) = spawn(
        &cwd,
        &[
            "--listen",
            "127.0.0.1:0",
            "--sender-burst",
            "100000",
            "--sender-rate-per-sec",
            "100000",
        ],
    );
    let port = addr.port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let sender = Identity::from_seed([1; 32]);
    let to = Identity::from_seed([2; 32]).id();
    let ep = client_endpoint().unwrap();
    let conn = RelayConnection::connect(&ep, addr, key, &sender)
        .await
        .unwrap();
    let conn = std::sync::Arc::new(conn);
    // The recipient is connected during the kill: it gets mail before the relay committed it
    // and acknowledges what it got, so a number the relay gave out and lost must never
    // delete a later envelope (docs/proposals/relay-delivery-before-commit.md).
    let mut b = RelayConnection::connect(&ep, addr, key, &Identity::from_seed([2; 32]))
        .await
        .unwrap();
    let receiving = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(d)) = timeout(Duration::from_secs(2), b.recv()).await {
            got.push(u32::from_be_bytes(d.envelope[..4].try_into().unwrap()));
            if b.ack(d.seq).await.is_err() {
                break;
            }
        }
        got
    });
    // Send until the relay dies under us; remember what it accepted.
    let sending = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0u32..1_000_000 {
                // A killed relay says nothing: its silence (not QUIC's 60 s idle timeout) ends
                // the loop.
                match timeout(
                    Duration::from_secs(2),
                    conn.send(to, i.to_be_bytes().to_vec()),
                )
                .await
                {
                    Ok(Ok(())) => accepted.push(i),
                    Ok(Err(ClientError::Closed(_))) | Err(_) => break,
                    Ok(Err(e)) => panic!("{e}"),
                }
            }
            accepted
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let accepted = timeout(Duration::from_secs(20), sending)
        .await
        .unwrap()
        .unwrap();
    assert!(
        accepted.len() > 10,
        "only {} accepted before the kill",
        accepted.len()
    );
    let before = timeout(Duration::from_secs(20), receiving)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !before.is_empty(),
        "the recipient got nothing before the kill"
    );
    // What the recipient got before the kill came in order.
    assert!(before.windows(2).all(|w| w[0] < w[1]), "{before:?}");
    // Restart on the same directory and port; the recipient drains its mailbox.
    let (mut child, key2, _) = spawn(&cwd, &["--listen", &listen]);
    assert_eq!(key2, key);
    let mut b = RelayConnection::connect(&ep, addr, key, &Identity::from_seed([2; 32]))
        .await
        .unwrap();
    let seen = |got: &[u32], i: &u32| before.binary_search(i).is_ok() || got.contains(i);
    let mut got = Vec::new();
    while !accepted.iter().all(|i| seen(&got, i)) {
        let d = timeout(Duration::from_secs(10), b.recv())
            .await
            .expect("every accepted envelope, before or after the kill")
            .expect("open");
        got.push(u32::from_be_bytes(d.envelope[..4].try_into().unwrap()));
        b.ack(d.seq).await.unwrap();
    }
    // Every accepted envelope arrived, before the kill or after it, and what came after the
    // restart came in order (a few sent just before the kill may have been stored without
    // their acceptance arriving, and some got before the kill come again when their deletion
    // was lost: the recipient refuses such copies by envelope id).
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    signal(&child, "-TERM");
    assert!(wait(&mut child).success());
}

/// A relay killed and restarted tells its old clients at once that their connections are gone
/// (a stateless reset, with keys derived from the relay's identity), instead of leaving them to
/// wait for the idle timeout.
#[tokio::test]
async fn a_restarted_relay_resets_old_connections() {
    let cwd = scratch("reset");
    let (mut child, key, addr) = spawn(&cwd, &["--listen", "127.0.0.1:0"]);
    let ep = client_endpoint().unwrap();
    let mut conn = RelayConnection::connect(&ep, addr, key, &Identity::from_seed([1; 32]))
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut again, _, _) = spawn(&cwd, &["--listen", &addr.to_string()]);
    // The client's next keep-alive reaches the new process, which answers with a reset.
    let ended = timeout(Duration::from_secs(60), conn.recv()).await.unwrap();
    assert!(ended.is_none());
    let reason = conn.close_reason().unwrap_or_default();
    assert!(
        reason.contains("reset"),
        "the connection ended by {reason:?}, not by a reset"
    );
    signal(&again, "-TERM");
    assert!(wait(&mut again).success());
}
