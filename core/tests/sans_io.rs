//! The protocol stays free of I/O, clocks and randomness: time and random bytes come in as
//! arguments. This scans its sources for anything that would break that.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "std::time",
    "SystemTime",
    "Instant::",
    "std::net",
    "std::fs",
    "std::io",
    "std::thread",
    "std::env",
    "std::process",
    "tokio",
    "quinn",
    "rusqlite",
    "rand::",
    "OsRng",
    "thread_rng",
    "getrandom",
    "println!",
    "eprintln!",
];

fn scan(dir: &Path, found: &mut Vec<String>, files: &mut usize) {
    for entry in fs::read_dir(dir).expect("protocol sources") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            scan(&path, found, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            *files += 1;
            let text = fs::read_to_string(&path).expect("readable");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for word in FORBIDDEN {
                    if code.contains(word) {
                        found.push(format!("{}:{}: {word}", path.display(), n + 1));
                    }
                }
            }
        }
    }
}

#[test]
fn protocol_has_no_io_clock_or_randomness() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol");
    let mut found = Vec::new();
    let mut files = 0;
    scan(&dir, &mut found, &mut files);
    assert!(
        files >= 8,
        "expected the protocol sources, found {files} files"
    );
    assert!(
        found.is_empty(),
        "the protocol must stay sans-I/O:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_would_catch_a_clock() {
    // Guard against a scan that silently checks nothing.
    let dir = std::env::temp_dir().join(format!("offst-sans-io-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("bad.rs"),
        "fn now() { let _ = std::time::SystemTime::now(); }\n",
    )
    .unwrap();
    let mut found = Vec::new();
    let mut files = 0;
    scan(&dir, &mut found, &mut files);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(files, 1);
    assert!(!found.is_empty());
}
