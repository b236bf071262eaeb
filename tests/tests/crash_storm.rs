//! The crash storm, run as the real binary: at least 50 SIGKILLs of a process running three
//! wallets, then every check must come out clean. Also: a second process opening a wallet
//! directory that a running process holds gets "in use".

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;
use std::time::Duration;

use offst_core::wallet::{Wallet, WalletError, WalletOptions};
use offst_tests::test_keys;

#[test]
fn fifty_kills_lose_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_crash-storm"))
        .args(["--kills", "50", "--seed", "5", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let r: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{r}");
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };
    assert!(n("kills") >= 50, "{r}");
    assert!(n("payments") > 0 && n("completed") > 0, "{r}");
    assert_eq!(n("completed") + n("cancelled"), n("payments"), "{r}");
    for k in [
        "lost_credit",
        "disagreeing_pairs",
        "duplicate_history",
        "lost_events",
    ] {
        assert_eq!(n(k), 0, "{k}: {r}");
    }
    assert_eq!(r["stuck"], false);
}

#[test]
fn a_second_process_gets_in_use() {
    let dir = std::env::temp_dir().join(format!("offst-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-storm"))
        .arg("--child")
        .arg("--dir")
        .arg(&dir)
        .spawn()
        .unwrap();
    let mut verdict = None;
    for _ in 0..500 {
        match Wallet::open(&dir.join("a"), &test_keys(1), WalletOptions::default()) {
            Err(WalletError::InUse { .. }) => {
                verdict = Some(());
                break;
            }
            // Not created yet, or we got there first: try again.
            Err(WalletError::NotFound { .. }) | Ok(_) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(verdict.is_some(), "never saw the running process's lock");
    // Once the process is gone, the wallet opens (or, if the kill came mid-creation, creation
    // finishes).
    offst_tests::open_or_create(&dir.join("a"), 1, WalletOptions::default()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
