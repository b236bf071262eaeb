//! The `offst-relay` command line (also `offst relay`): run a relay. Without arguments it
//! listens on 127.0.0.1:7360 and keeps its key and mail in `./offst-relay-data`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::Config;
use clap::Parser;
use tracing::{error, info, warn};

/// An Offst relay: holds wallets' mail until they pick it up.
///
/// Settings come from the embedded default, then the TOML file given with --config, then the
/// flags. On start it prints one line: `relay <key> <address>`; wallets pin that key.
/// SIGTERM or Ctrl-C stops it after committing every accepted envelope.
#[derive(Parser, Debug)]
#[command(name = "offst-relay", version)]
struct Args {
    /// TOML file with settings (keys as the flags below, with underscores).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (UDP). Default 127.0.0.1:7360.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for the relay's key and mail. Default ./offst-relay-data.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Largest envelope accepted, in bytes. Default 532480 (520 KiB).
    #[arg(long, value_name = "BYTES")]
    max_envelope_bytes: Option<u64>,
    /// Most messages waiting in one mailbox. Default 10000.
    #[arg(long, value_name = "N")]
    max_mailbox_messages: Option<u64>,
    /// Most bytes waiting in one mailbox. Default 67108864 (64 MiB).
    #[arg(long, value_name = "BYTES")]
    max_mailbox_bytes: Option<u64>,
    /// Delete mail older than this many seconds (0: never). Default 2592000 (30 days).
    #[arg(long, value_name = "SECS")]
    max_mail_age_secs: Option<u64>,
    /// Envelopes one sender may send per second, sustained. Default 200.
    #[arg(long, value_name = "N")]
    sender_rate_per_sec: Option<u32>,
    /// Envelopes one sender may send in a burst. Default 2000.
    #[arg(long, value_name = "N")]
    sender_burst: Option<u32>,
    /// Most connections at once. Default 20000.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most deliveries to one wallet not yet acknowledged. Default 256.
    #[arg(long, value_name = "N")]
    delivery_window: Option<u64>,
    /// Milliseconds mail for a connected wallet (or for another relay) is held unwritten; 0
    /// writes every envelope before answering its sender. Default 20, at most 1000.
    #[arg(long, value_name = "MS")]
    hold_ms: Option<u64>,
    /// CA-signed certificate chain (PEM, leaf first) for clients that know the relay only by
    /// its DNS name. Clients that pin the relay key are unaffected. Needs --tls-private-key.
    #[arg(long, value_name = "FILE")]
    tls_certificate: Option<PathBuf>,
    /// Private key (PEM) of --tls-certificate.
    #[arg(long, value_name = "FILE")]
    tls_private_key: Option<PathBuf>,
    /// Run no index (no capacity reports, no route queries).
    #[arg(long)]
    no_index: bool,
    /// An index peer, KEY@HOST:PORT (repeat for several); added to the file's list.
    #[arg(long = "index-peer", value_name = "KEY@HOST:PORT")]
    index_peers: Vec<String>,
    /// Print the relay's key (creating it if needed) and exit.
    #[arg(long)]
    print_key: bool,
}

fn settings(args: &Args) -> Result<Config, crate::config::ConfigError> {
    let mut c = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    macro_rules! over {
        ($($f:ident),*) => { $( if let Some(v) = args.$f.clone() { c.$f = v; } )* };
    }
    over!(
        listen,
        data_dir,
        max_envelope_bytes,
        max_mailbox_messages,
        max_mailbox_bytes,
        max_mail_age_secs,
        sender_rate_per_sec,
        sender_burst,
        max_connections,
        delivery_window,
        hold_ms
    );
    if args.tls_certificate.is_some() {
        c.tls_certificate = args.tls_certificate.clone();
    }
    if args.tls_private_key.is_some() {
        c.tls_private_key = args.tls_private_key.clone();
    }
    if args.no_index {
        c.index = false;
    }
    c.index_peers.extend(args.index_peers.iter().cloned());
    c.validate()?;
    Ok(c)
}

/// Run the relay command line with `args` (the first is the program name).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let config = match settings(&args) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.print_key {
        return match crate::server::load_or_create_identity(&config.data_dir) {
            Ok(id) => {
                println!("{}", id.id());
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("can't start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let relay = match crate::start(config).await {
            Ok(r) => r,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // Listen for SIGTERM and SIGINT before saying we are up.
        let stop = StopSignals::listen();
        println!("relay {} {}", relay.key, relay.addr);
        match stop {
            Ok(mut stop) => stop.recv().await,
            Err(e) => {
                warn!("can't listen for SIGTERM ({e}); stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        info!("stopping: {:?}", relay.stats());
        relay.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Ctrl-C and SIGTERM, listened for from the moment this is made. Make it before printing a
/// ready line, so that a stop right after the line is not met by the default action (which
/// ends the process without a clean shutdown), and keep it, so that a signal that comes while
/// the process is busy is not missed. Used by `offst-relay` and by `offst run` and `offst serve`.
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Start listening (needs a Tokio runtime).
    pub fn listen() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Wait for a stop signal (cancel-safe: one that came meanwhile is kept).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
