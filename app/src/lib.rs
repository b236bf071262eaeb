//! Offst app client: a program that uses someone's wallet through `offst serve`, holding its
//! own key and only what the wallet's owner granted it (`offst apps add NAME KEY --allow ...`).
//!
//! ```no_run
//! # async fn sell() -> Result<(), offst_app::AppError> {
//! let key = offst_app::AppKey::load_or_create("pos.key".as_ref())?;
//! println!("grant me with: offst apps add pos {} --allow receive", key.id());
//! let mut wallet = offst_app::AppClient::connect("wallet/api.sock".as_ref(), key).await?;
//! let invoice = wallet.create_invoice("EUR", 10, "coffee", 15).await?;
//! println!("pay: {}", invoice.request);
//! let paid = wallet.wait_until_settled(invoice.invoice, std::time::Duration::from_secs(900)).await?;
//! # Ok(()) }
//! ```
//!
//! Every request is signed with the app's key over the connection's challenge, so it cannot
//! be forged or replayed; see `docs/apps.md`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offst_core::api::wire::{
    API_VERSION, ApiError, Call, FriendBalance, Hello, HistoryItem, InvoiceState, MAX_API_FRAME,
    Reply, Request, Response,
};
use offst_core::net::frame::{read_frame, write_frame};
use offst_core::protocol::identity::{Identity, NodeId};
use offst_core::protocol::payment::InvoiceId;
use tokio::net::UnixStream;

pub use offst_core::api::wire;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The wallet refused (the message says why and what to do).
    #[error("{0}")]
    Refused(#[from] ApiError),
    /// The socket could not be reached or broke.
    #[error("wallet socket {path}: {reason} (is `offst serve` running?)")]
    Io {
        /// The socket.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The wallet answered something this client does not understand.
    #[error("the wallet answered something unexpected: {0}")]
    Protocol(String),
    /// The app's key file is unreadable or damaged.
    #[error("app key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// An app's own key (ed25519), kept in a file only its user can read.
pub struct AppKey {
    identity: Identity,
}

impl AppKey {
    /// A key from its 32-byte secret.
    pub fn from_seed(seed: [u8; 32]) -> AppKey {
        AppKey {
            identity: Identity::from_seed(seed),
        }
    }

    /// A new random key (not saved).
    pub fn generate() -> Result<AppKey, AppError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| AppError::Key {
            path: String::new(),
            reason: format!("no random bytes: {e}"),
        })?;
        Ok(AppKey::from_seed(seed))
    }

    /// The key in `path`, or a new one written there (mode 0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<AppKey, AppError> {
        let err = |reason: String| AppError::Key {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = data_encoding::HEXLOWER
                    .decode(text.trim().as_bytes())
                    .map_err(|_| err("not a key file (64 hex digits expected)".into()))?;
                let seed = <[u8; 32]>::try_from(bytes)
                    .map_err(|_| err("not a key file (64 hex digits expected)".into()))?;
                Ok(AppKey::from_seed(seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = AppKey::generate()?;
                let text = data_encoding::HEXLOWER.encode(&key.identity.seed());
                write_private(path, &text).map_err(|e| err(e.to_string()))?;
                Ok(key)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// The public key, which the owner grants (`offst apps add NAME KEY`).
    pub fn id(&self) -> NodeId {
        self.identity.id()
    }

    /// The identity, for signing requests by hand (tests, tools).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// An invoice the app created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedInvoice {
    /// Its id.
    pub invoice: InvoiceId,
    /// The payment request's text (`OFFSTP1...`) to show the buyer.
    pub request: String,
    /// The same as an `offst:` link (for a QR code or a web page).
    pub uri: String,
    /// When it expires (ms since the Unix epoch).
    pub expires_at_ms: u64,
}

/// How an invoice ended, or stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceOutcome {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Open, paid or cancelled.
    pub state: InvoiceState,
    /// What it asks.
    pub amount: u64,
    /// Its currency.
    pub currency: String,
    /// Its memo.
    pub memo: String,
}

/// A connection to a wallet's `offst serve`.
pub struct AppClient {
    stream: UnixStream,
    path: PathBuf,
    key: AppKey,
    hello: Hello,
    seq: u64,
}

impl AppClient {
    /// Connect to the wallet at `socket` as the app with `key`.
    pub async fn connect(socket: &Path, key: AppKey) -> Result<AppClient, AppError> {
        let io = |e: &dyn std::fmt::Display| AppError::Io {
            path: socket.display().to_string(),
            reason: e.to_string(),
        };
        let mut stream = UnixStream::connect(socket).await.map_err(|e| io(&e))?;
        let frame = read_frame(&mut stream, MAX_API_FRAME)
            .await
            .map_err(|e| io(&e))?
            .ok_or_else(|| io(&"closed before greeting"))?;
        let hello: Hello = postcard::from_bytes(&frame)
            .map_err(|e| AppError::Protocol(format!("not a wallet's greeting: {e}")))?;
        if hello.version != API_VERSION {
            return Err(ApiError::Version {
                app: API_VERSION,
                wallet: hello.version,
            }
            .into());
        }
        Ok(AppClient {
            stream,
            path: socket.to_path_buf(),
            key,
            hello,
            seq: 0,
        })
    }

    /// The wallet's id.
    pub fn wallet(&self) -> NodeId {
        self.hello.wallet
    }

    /// This connection's challenge (for signing requests by hand).
    pub fn challenge(&self) -> [u8; 32] {
        self.hello.challenge
    }

    fn io(&self, e: impl std::fmt::Display) -> AppError {
        AppError::Io {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// Send `request` as it is (tests of forged or replayed requests; tools) and read one
    /// answer.
    pub async fn send_raw(&mut self, request: &Request) -> Result<Response, AppError> {
        self.send_only(request).await?;
        self.read_response().await
    }

    /// Send `request` without waiting for its answer (several may be under way).
    pub async fn send_only(&mut self, request: &Request) -> Result<(), AppError> {
        let bytes =
            postcard::to_allocvec(request).map_err(|e| AppError::Protocol(e.to_string()))?;
        write_frame(&mut self.stream, &bytes)
            .await
            .map_err(|e| self.io(e))
    }

    /// Read the next answer.
    pub async fn read_response(&mut self) -> Result<Response, AppError> {
        let frame = read_frame(&mut self.stream, MAX_API_FRAME)
            .await
            .map_err(|e| self.io(e))?
            .ok_or_else(|| self.io("the wallet closed the connection"))?;
        postcard::from_bytes(&frame).map_err(|e| AppError::Protocol(e.to_string()))
    }

    /// The next request of this connection, signed.
    pub fn sign_next(&mut self, call: Call) -> Request {
        self.seq += 1;
        Request::sign(&self.key.identity, &self.hello.challenge, self.seq, call)
    }

    /// Make one call and wait for its answer.
    pub async fn call(&mut self, call: Call) -> Result<Reply, AppError> {
        let request = self.sign_next(call);
        let response = self.send_raw(&request).await?;
        if response.seq != request.seq {
            return Err(AppError::Protocol(format!(
                "answer to request {} while waiting for {}",
                response.seq, request.seq
            )));
        }
        Ok(response.result?)
    }

    /// Balances per currency and per friend (`read`).
    pub async fn balances(&mut self) -> Result<(Vec<(String, i64)>, Vec<FriendBalance>), AppError> {
        match self.call(Call::Balances).await? {
            Reply::Balances { totals, friends } => Ok((totals, friends)),
            other => Err(unexpected(&other)),
        }
    }

    /// The newest `limit` history rows (`read`).
    pub async fn history(&mut self, limit: u32) -> Result<Vec<HistoryItem>, AppError> {
        match self.call(Call::History { limit }).await? {
            Reply::History(rows) => Ok(rows),
            other => Err(unexpected(&other)),
        }
    }

    /// Issue an invoice (`receive`).
    pub async fn create_invoice(
        &mut self,
        currency: &str,
        amount: u64,
        memo: &str,
        minutes: u32,
    ) -> Result<CreatedInvoice, AppError> {
        let call = Call::CreateInvoice {
            currency: currency.into(),
            amount,
            memo: memo.into(),
            minutes,
        };
        match self.call(call).await? {
            Reply::Invoice {
                invoice,
                request,
                uri,
                expires_at_ms,
            } => Ok(CreatedInvoice {
                invoice,
                request,
                uri,
                expires_at_ms,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// How an invoice of this app stands, waiting up to `wait` (at most a minute) for it to
    /// be paid or to expire (`receive`).
    pub async fn invoice_status(
        &mut self,
        invoice: InvoiceId,
        wait: Duration,
    ) -> Result<InvoiceOutcome, AppError> {
        let wait_ms = u32::try_from(wait.as_millis().min(60_000)).unwrap_or(60_000);
        match self.call(Call::InvoiceStatus { invoice, wait_ms }).await? {
            Reply::InvoiceStatus {
                invoice,
                state,
                amount,
                currency,
                memo,
            } => Ok(InvoiceOutcome {
                invoice,
                state,
                amount,
                currency,
                memo,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Wait until the invoice is paid or expired, or `limit` passed (then it is still open).
    pub async fn wait_until_settled(
        &mut self,
        invoice: InvoiceId,
        limit: Duration,
    ) -> Result<InvoiceOutcome, AppError> {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            let outcome = self.invoice_status(invoice, left).await?;
            if outcome.state != InvoiceState::Open || left.is_zero() {
                return Ok(outcome);
            }
        }
    }

    /// Pay a payment request and wait for the receipt (`pay`, within the app's limit): the
    /// amount paid and the receipt's text.
    pub async fn pay(&mut self, request: &str) -> Result<(u64, String), AppError> {
        match self
            .call(Call::Pay {
                request: request.into(),
            })
            .await?
        {
            Reply::Paid {
                amount, receipt, ..
            } => Ok((amount, receipt)),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(reply: &Reply) -> AppError {
    AppError::Protocol(format!("unexpected answer {reply:?}"))
}
