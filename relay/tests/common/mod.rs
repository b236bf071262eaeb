//! Helpers shared by the relay's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use offst_core::protocol::identity::NodeId;

/// A fresh, empty directory for one test, removed with everything in it when dropped (also
/// when the test fails), so test runs do not fill the disk.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty directory for test `name`.
pub fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("offst-relay-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Start the `offst-relay` binary in `cwd` with `args`; returns it with the key and address it
/// printed on its first line.
pub fn spawn(cwd: &Path, args: &[&str]) -> (Child, NodeId, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offst-relay"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        parts.first(),
        Some(&"relay"),
        "unexpected first line: {line:?}"
    );
    (child, parts[1].parse().unwrap(), parts[2].parse().unwrap())
}
