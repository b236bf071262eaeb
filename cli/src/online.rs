//! A wallet taken online for as long as a command needs: its network driver, and waits with
//! progress and a time limit.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use offst_core::net::client::client_endpoint;
use offst_core::net::driver::{Driver, DriverStatus};
use offst_core::wallet::Wallet;

/// A wallet with its driver running.
pub struct Online {
    pub wallet: Arc<Mutex<Wallet>>,
    pub driver: Driver,
}

impl Online {
    /// Start the driver for `wallet`.
    pub fn start(wallet: Wallet) -> Result<Online, String> {
        let wallet = Arc::new(Mutex::new(wallet));
        let endpoint = client_endpoint().map_err(|e| e.to_string())?;
        let driver = Driver::spawn(wallet.clone(), endpoint);
        Ok(Online { wallet, driver })
    }

    /// The wallet, locked.
    pub fn w(&self) -> MutexGuard<'_, Wallet> {
        self.wallet.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until connected, saying so on stderr while it takes long.
    pub async fn connected(&self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        if self.w().relay().map_err(|e| e.to_string())?.is_none() {
            return Err(
                "this wallet has no relay; make it with `offst init --relay \
                 KEY@HOST:PORT` (a relay's key and address)"
                    .into(),
            );
        }
        let mut status = self.driver.watch_status();
        let mut said = String::new();
        loop {
            let now = status.borrow_and_update().clone();
            match now {
                DriverStatus::Connected => return Ok(()),
                DriverStatus::Connecting { last_error, .. } if last_error != said => {
                    eprintln!("connecting to the relay: {last_error}; retrying");
                    said = last_error;
                }
                _ => {}
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "could not reach the relay within {} s{}",
                    limit.as_secs(),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(" ({said})")
                    }
                ));
            }
            let _ = tokio::time::timeout(left, status.changed()).await;
        }
    }

    /// Wait until everything queued was handed to the relay and the mailbox was read to the
    /// end (at least once since going online).
    pub async fn sync(&self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        self.connected(limit).await?;
        let drained = self.driver.watch_drained();
        loop {
            let outbox = self.w().outbox_len().map_err(|e| e.to_string())?;
            let caught_up = *drained.borrow() > 0;
            if outbox == 0 && caught_up {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "not in sync with the relay within {} s ({outbox} messages still to send)",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop the driver (every step is durable; nothing is half done).
    pub async fn stop(self) {
        self.driver.stop().await;
    }
}
