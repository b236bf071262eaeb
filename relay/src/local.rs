//! Relays on loopback that share their indexes: for `offst demo`, the load generator and tests.

use std::path::PathBuf;

use crate::{Config, RelayHandle};

/// Start one relay per directory in `dirs`, each on a free loopback port and each an index
/// peer of every other; `adjust` may change each one's configuration first.
pub async fn start_on_loopback(
    dirs: &[PathBuf],
    adjust: impl Fn(&mut Config),
) -> Result<Vec<RelayHandle>, String> {
    let mut peers = Vec::new();
    for d in dirs {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        let key = crate::server::load_or_create_identity(d)
            .map_err(|e| e.to_string())?
            .id();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        peers.push((key, port));
    }
    let mut relays = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let port = peers.get(i).map(|p| p.1).ok_or("relay set-up")?;
        let mut config = Config {
            listen: ([127, 0, 0, 1], port).into(),
            data_dir: dir.clone(),
            index_peers: peers
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (key, port))| format!("{key}@127.0.0.1:{port}"))
                .collect(),
            ..Config::default()
        };
        adjust(&mut config);
        relays.push(crate::start(config).await.map_err(|e| e.to_string())?);
    }
    Ok(relays)
}
