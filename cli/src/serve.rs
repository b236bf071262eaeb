//! `offst serve` (the wallet's interface for apps, on a Unix socket) and `offst apps`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use offst_core::api::server::{ApiContext, ApiLimits, serve};
use offst_core::api::{Grants, Permission, Permissions};
use offst_core::net::client::client_endpoint;
use offst_core::net::driver::Driver;
use offst_core::protocol::identity::NodeId;
use offst_core::wallet::SharedWallet;
use serde_json::json;

use crate::AppsAction;

/// The socket's default name, in the wallet's directory.
pub const SOCKET_FILE: &str = "api.sock";

fn grants(dir: &Path) -> Result<Grants, String> {
    if !dir.join("wallet.db").exists() {
        return Err(format!(
            "no wallet in {} (create one with `offst init`)",
            dir.display()
        ));
    }
    Grants::open(dir).map_err(|e| e.to_string())
}

/// Bind the socket, refusing to take it from a server that still answers on it.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, String> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is in use: is `offst serve` already running on this wallet?",
                path.display()
            ));
        }
        // Left by a server that stopped without cleaning up.
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| {
        format!(
            "can't listen on {}: {e} (a socket's path must be under 108 bytes; --socket chooses another)",
            path.display()
        )
    })?;
    // Only this user may connect: apps still need a grant, but nobody else gets to try.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

/// `offst serve`.
pub async fn run(dir: &Path, socket: Option<PathBuf>) -> Result<(), String> {
    let grants = grants(dir)?;
    let wallet = crate::open(dir)?;
    let id = wallet.id();
    let path = socket.unwrap_or_else(|| dir.join(SOCKET_FILE));
    let listener = bind(&path)?;
    let wallet = Arc::new(SharedWallet::new(wallet));
    let endpoint = client_endpoint().map_err(|e| e.to_string())?;
    let driver = Arc::new(Driver::spawn(wallet.clone(), endpoint));
    let ctx = Arc::new(ApiContext::new(
        wallet.clone(),
        driver.clone(),
        grants,
        ApiLimits::default(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, ctx.clone(), stop_rx));
    let mut stop = crate::StopSignals::listen().map_err(|e| e.to_string())?;
    println!("wallet {id} serves apps on {}", path.display());
    eprintln!("Grant an app with: offst apps add NAME KEY --allow PERMISSIONS; Ctrl-C to stop");
    let printed = crate::print_events_until_stopped(&wallet, &mut stop).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    drop(ctx);
    let _ = std::fs::remove_file(&path);
    // Calls still under way hold the driver for at most a moment longer.
    Driver::stop_shared(driver, Duration::from_secs(5)).await;
    printed
}

/// `offst apps ...`.
pub fn apps(dir: &Path, action: AppsAction, json: bool) -> Result<(), String> {
    let mut g = grants(dir)?;
    match action {
        AppsAction::Add {
            name,
            key,
            allow,
            pay_limit,
            currency,
        } => {
            let key: NodeId = key
                .trim()
                .parse()
                .map_err(|e| format!("{key:?} is not an app key: {e}"))?;
            let permissions = Permissions::parse(&allow)?;
            let limit = match (permissions.allows(Permission::Pay), pay_limit) {
                (true, Some(l)) => {
                    crate::currency(&currency)?;
                    Some((l, currency))
                }
                (true, None) => {
                    return Err(
                        "an app that may pay needs --pay-limit (the most it may pay per 24 hours)"
                            .into(),
                    );
                }
                (false, Some(_)) => {
                    return Err("--pay-limit is for apps allowed to pay (--allow ...,pay)".into());
                }
                (false, None) => None,
            };
            let grant = g
                .add(&name, key, permissions, limit, crate::now_ms())
                .map_err(|e| e.to_string())?;
            if json {
                crate::print_json(grant_json(&g, &grant));
            } else {
                println!(
                    "app {:?} ({}) may now: {}{}",
                    grant.name,
                    grant.key,
                    grant.permissions,
                    grant
                        .currency
                        .as_ref()
                        .map(|c| format!(", paying up to {} {c} per 24 hours", grant.pay_limit))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        AppsAction::List => {
            let list = g.list().map_err(|e| e.to_string())?;
            if json {
                crate::print_json(json!({
                    "apps": list.iter().map(|a| grant_json(&g, a)).collect::<Vec<_>>()
                }));
                return Ok(());
            }
            if list.is_empty() {
                println!("no apps: `offst apps add NAME KEY --allow ...` grants one");
            }
            for a in &list {
                let spent = g.spent(&a.key, crate::now_ms()).unwrap_or(0);
                println!(
                    "{:<16} {}  {}{}{}",
                    a.name,
                    a.key,
                    a.permissions,
                    a.currency
                        .as_ref()
                        .map(|c| format!("  pays up to {} {c}/24 h ({spent} spent)", a.pay_limit))
                        .unwrap_or_default(),
                    if a.revoked_ms.is_some() {
                        "  REVOKED"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        AppsAction::Revoke { app } => {
            let grant = g.revoke(&app, crate::now_ms()).map_err(|e| e.to_string())?;
            if json {
                crate::print_json(grant_json(&g, &grant));
            } else {
                println!("app {:?} ({}) is cut off", grant.name, grant.key);
            }
            Ok(())
        }
    }
}

fn grant_json(g: &Grants, a: &offst_core::api::Grant) -> serde_json::Value {
    json!({
        "name": a.name,
        "key": a.key.to_string(),
        "permissions": a.permissions.list().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "pay_limit": a.currency.as_ref().map(|_| a.pay_limit),
        "currency": a.currency,
        "spent_24h": g.spent(&a.key, crate::now_ms()).unwrap_or(0),
        "added_ms": a.added_ms,
        "revoked_ms": a.revoked_ms,
    })
}
