//! Helpers shared by the relay's integration tests.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

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

/// A free UDP port on loopback below the range the system picks port-0 sockets from, so that
/// no socket bound to port 0 (another test's relay or client, running beside this one) can take
/// it while it is not bound: for a relay that must come up on a port chosen before it starts,
/// or again on the same port after a stop. A port from `127.0.0.1:0`, released and bound
/// later, failed CI that way once (2026-12-06).
pub fn port_outside_the_ephemeral_range() -> std::net::SocketAddr {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    // Above the relay's default port (7360, which the process tests use) and the well-known
    // ones; a start that differs between runs and processes.
    let (first, last) = (10_000u16, low.saturating_sub(1).max(10_001));
    let span = u32::from(last - first);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    for i in 0..span {
        let port = first + ((seed.wrapping_add(i)) % span) as u16;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free UDP port between {first} and {last}");
}
