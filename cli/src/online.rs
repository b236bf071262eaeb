//! A wallet taken online for as long as a command needs: its network driver, and waits with
//! progress and a time limit.

use std::sync::Arc;
use std::time::Duration;

use offst_core::net::client::client_endpoint;
use offst_core::net::driver::{Driver, WaitError};
use offst_core::wallet::{SharedWallet, Wallet};

/// A wallet with its driver running.
pub struct Online {
    pub wallet: Arc<SharedWallet>,
    pub driver: Driver,
}

impl Online {
    /// Start the driver for `wallet`.
    pub fn start(wallet: Wallet) -> Result<Online, String> {
        let wallet = Arc::new(SharedWallet::new(wallet));
        let endpoint = client_endpoint().map_err(|e| e.to_string())?;
        let driver = Driver::spawn(wallet.clone(), endpoint);
        Ok(Online { wallet, driver })
    }

    /// The wallet, locked.
    pub fn w(&self) -> offst_core::sync::Guard<'_, Wallet> {
        self.wallet.lock()
    }

    /// Wait until connected, saying so on stderr while it takes long.
    pub async fn connected(&self, limit: Duration) -> Result<(), String> {
        self.driver
            .connected(limit, say_retrying)
            .await
            .map_err(message)
    }

    /// Wait until everything queued was handed to the relay and the mailbox was read to the
    /// end (at least once since going online).
    pub async fn sync(&self, limit: Duration) -> Result<(), String> {
        self.driver
            .synced(&self.wallet, limit, say_retrying)
            .await
            .map_err(message)
    }

    /// Stop the driver (every step is durable; nothing is half done).
    pub async fn stop(self) {
        self.driver.stop().await;
    }
}

fn say_retrying(why: &str) {
    eprintln!("connecting to the relay: {why}; retrying");
}

fn message(e: WaitError) -> String {
    match e {
        WaitError::NoRelay => "this wallet has no relay; make it with `offst init --relay \
             KEY@HOST:PORT` (a relay's key and address)"
            .into(),
        e => e.to_string(),
    }
}
