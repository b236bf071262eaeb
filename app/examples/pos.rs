//! A point of sale on top of a wallet's `offst serve`: it creates an invoice for each sale,
//! shows its QR code in the terminal, and prints a receipt line once the buyer paid.
//!
//! ```text
//! cargo run -p offst-app --example pos -- key                  # its key, to grant
//! offst apps add pos KEY --allow receive                       # the wallet's owner
//! cargo run -p offst-app --example pos -- sell 10 coffee 4 cake
//! cargo run -p offst-app --example pos -- refund OFFSTP1...    # needs `pay`
//! ```
//!
//! Output lines meant for other programs start with a word in capitals: `KEY`, `REQUEST`,
//! `PAID`, `EXPIRED`, `REFUNDED`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use offst_app::wire::InvoiceState;
use offst_app::{AppClient, AppKey};
use offst_core::invite::PaymentRequest;

#[derive(Parser, Debug)]
#[command(about = "A point of sale that is paid through an Offst wallet")]
struct Args {
    /// The wallet's app socket (`offst serve` prints it).
    #[arg(long, env = "OFFST_SOCKET", default_value = "api.sock")]
    socket: PathBuf,
    /// This point of sale's own key (made on first use).
    #[arg(long, env = "POS_KEY", default_value = "pos.key")]
    key: PathBuf,
    /// The currency of the prices.
    #[arg(long, default_value = "EUR")]
    currency: String,
    /// Minutes a buyer has to pay.
    #[arg(long, default_value_t = 15)]
    minutes: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print this point of sale's key (the wallet's owner grants it `receive`).
    Key,
    /// Sell: PRICE WHAT [PRICE WHAT ...], one sale after the other.
    Sell {
        /// Prices and what they are for, in pairs.
        #[arg(required = true, num_args = 2..)]
        items: Vec<String>,
    },
    /// Pay a customer back with their payment request (needs `pay`).
    Refund {
        /// The customer's payment request.
        request: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let key = AppKey::load_or_create(&args.key).map_err(|e| e.to_string())?;
    if let Command::Key = args.command {
        println!("KEY {}", key.id());
        eprintln!(
            "The wallet's owner grants it with: offst apps add pos {} --allow receive",
            key.id()
        );
        return Ok(());
    }
    let mut wallet = AppClient::connect(&args.socket, key)
        .await
        .map_err(|e| e.to_string())?;
    match args.command {
        Command::Key => Ok(()),
        Command::Sell { items } => {
            if items.len() % 2 != 0 {
                return Err("give items as PRICE WHAT pairs".into());
            }
            for pair in items.chunks(2) {
                let [price, what] = pair else { continue };
                let price: u64 = price
                    .parse()
                    .map_err(|_| format!("{price:?} is not a price (a whole number)"))?;
                sell(&mut wallet, &args.currency, price, what, args.minutes).await?;
            }
            Ok(())
        }
        Command::Refund { request } => {
            let (amount, receipt) = wallet.pay(&request).await.map_err(|e| e.to_string())?;
            println!("REFUNDED {amount} {receipt}");
            Ok(())
        }
    }
}

async fn sell(
    wallet: &mut AppClient,
    currency: &str,
    price: u64,
    what: &str,
    minutes: u32,
) -> Result<(), String> {
    let invoice = wallet
        .create_invoice(currency, price, what, minutes)
        .await
        .map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let qr = PaymentRequest::parse(&invoice.request, now)
        .and_then(|r| r.qr_terminal())
        .map_err(|e| e.to_string())?;
    eprintln!("{qr}");
    eprintln!("{what}: {price} {currency}. Scan, or pay with: offst pay <the request below>");
    println!("REQUEST {}", invoice.request);
    let outcome = wallet
        .wait_until_settled(
            invoice.invoice,
            Duration::from_secs(u64::from(minutes) * 60 + 5),
        )
        .await
        .map_err(|e| e.to_string())?;
    match outcome.state {
        InvoiceState::Paid => {
            println!(
                "PAID {} {} {} {:?}",
                outcome.invoice, outcome.amount, outcome.currency, outcome.memo
            );
            Ok(())
        }
        InvoiceState::Cancelled | InvoiceState::Open => {
            println!("EXPIRED {}", outcome.invoice);
            Err(format!("{what} was not paid in {minutes} minutes"))
        }
    }
}
