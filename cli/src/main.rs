//! `offst`: the command-line wallet. Every command works on the wallet in `--wallet DIR` (or
//! `OFFST_WALLET`) through the same `Wallet` API the apps use; commands that talk to friends
//! take the wallet online for as long as they need. `offst demo` runs a whole network in one
//! process; `offst relay` runs a relay.

mod demo;
mod online;
mod serve;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use offst_core::invite::{Invitation, PaymentRequest};
use offst_core::net::payer::{PayError, PayStep};
use offst_core::net::wire::RelayAddress;
use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::NodeId;
use offst_core::wallet::{
    HistoryQuery, KeyFile, KeyStore, PassphraseKeys, Wallet, WalletError, WalletOptions,
};
pub(crate) use offst_relay::cli::StopSignals;
use serde_json::json;

use online::Online;

/// Offst: pay friends, and friends of friends, on credit they extend each other.
///
/// The wallet lives in --wallet DIR (or $OFFST_WALLET). Its identity is sealed with a key from
/// $OFFST_PASSPHRASE if set, otherwise from the key file DIR/wallet.key made by `offst init`.
#[derive(Parser, Debug)]
#[command(name = "offst", version)]
struct Args {
    /// The wallet directory.
    #[arg(long, global = true, env = "OFFST_WALLET", value_name = "DIR")]
    wallet: Option<PathBuf>,
    /// Print results as one JSON object (read commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a wallet.
    Init {
        /// The relay this wallet uses, KEY@HOST:PORT (its operator gives it out).
        #[arg(long, value_name = "KEY@HOST:PORT")]
        relay: Option<String>,
        /// What you charge for passing payments on: a fixed part.
        #[arg(long, default_value_t = 0)]
        fee_base: u64,
        /// ... and a part in millionths of the amount.
        #[arg(long, default_value_t = 0)]
        fee_ppm: u32,
    },
    /// Run a relay (takes `offst-relay`'s flags; --help for them).
    #[command(disable_help_flag = true)]
    Relay {
        /// The relay's flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print an invitation (text and QR code) for a friend to accept.
    Invite {
        /// Your name, as the friend will see it.
        #[arg(long, default_value = "")]
        name: String,
        /// Hours until it expires.
        #[arg(long, default_value_t = 72)]
        hours: u64,
    },
    /// Accept an invitation (OFFSTI1...), or a friend request by the friend's key or name.
    Accept {
        /// The invitation text, or who asked.
        what: String,
        /// Your name, as they will see it.
        #[arg(long, default_value = "")]
        name: String,
        /// Let them owe you this much right away.
        #[arg(long)]
        limit: Option<u64>,
        /// The currency of --limit.
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// Friend requests waiting for you (also fetches new ones).
    Requests,
    /// Your friends, balances and limits.
    Friends,
    /// Let a friend owe you up to AMOUNT.
    Limit {
        /// Name or key of the friend.
        friend: String,
        /// The most they may owe you.
        amount: u64,
        /// The currency.
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// Ask for a payment: prints a payment request (text and QR code).
    Invoice {
        /// What you want to receive.
        amount: u64,
        /// What it is for.
        #[arg(long, default_value = "")]
        memo: String,
        /// The currency.
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Minutes until it expires (nobody can pay it after; nothing stays frozen).
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Pay a payment request: shows routes and fees, asks, then follows it to the receipt.
    Pay {
        /// The payment request (OFFSTP1...).
        request: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Split over at most this many routes.
        #[arg(long, default_value_t = 8)]
        max_routes: u8,
        /// Give up waiting after this many seconds (the payment itself goes on).
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// One payment or invoice of yours, by the invoice's id: where it stands, its receipt (a
    /// payment you made that completed) and its history. Finished ones a week past their
    /// expiry come from the wallet's archive.
    Payment {
        /// The invoice's id (as `invoice` and `pay` print it).
        invoice: String,
    },
    /// Receipts.
    Receipt {
        #[command(subcommand)]
        action: ReceiptAction,
    },
    /// What happened, newest first.
    History {
        /// How many entries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Your balance per currency and with each friend.
    Balance,
    /// How much your wallet tells its relay's index (exact, buckets or off).
    ///
    /// The index routes payments with what wallets report about their channels: exact
    /// figures, buckets (rounded down to powers of two) or nothing (then you are not offered
    /// as a mediator). Without a value, shows the setting.
    Report {
        /// exact, buckets or off.
        privacy: Option<String>,
    },
    /// Send what is queued and fetch what waits at the relay, then exit.
    Sync {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Stay online (to pass payments on and be paid) until Ctrl-C, printing what happens.
    Run,
    /// Write an encrypted backup of the wallet to FILE.
    ///
    /// It is sealed with the wallet's key: keep wallet.key (or the passphrase) apart from it.
    Backup {
        /// Where.
        file: PathBuf,
    },
    /// Restore a backup into the (new) wallet directory.
    ///
    /// Needs the backed-up wallet's key: the same $OFFST_PASSPHRASE, or its wallet.key copied
    /// into DIR first.
    Restore {
        /// The backup.
        file: PathBuf,
    },
    /// Serve other programs ("apps") on a local socket, and stay online like `run`.
    ///
    /// Apps hold their own keys and may do only what `offst apps add` granted them; every
    /// action they take, or try, is in `offst history` under their name.
    Serve {
        /// The socket (default: api.sock in the wallet's directory).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Grant apps access to this wallet, list them, revoke them (works while `serve` runs).
    Apps {
        #[command(subcommand)]
        action: AppsAction,
    },
    /// Run two relays and six wallets here: friends, four payments, the balances.
    Demo,
}

#[derive(Subcommand, Debug)]
enum AppsAction {
    /// Grant the app with key KEY (it prints its key) the permissions in --allow.
    Add {
        /// The app's name, as history shows it.
        name: String,
        /// The app's public key.
        key: String,
        /// Comma-separated: read (balances, history), receive (invoices), pay (within
        /// --pay-limit), manage (friends, limits, relay).
        #[arg(long)]
        allow: String,
        /// With `pay`: the most the app may pay per 24 hours, fees included.
        #[arg(long)]
        pay_limit: Option<u64>,
        /// The currency of --pay-limit.
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// The apps granted, with what they may do and what they spent today.
    List,
    /// Cut an app off at once (by name or key).
    Revoke {
        /// Its name or key.
        app: String,
    },
}

#[derive(Subcommand, Debug)]
enum ReceiptAction {
    /// Check a receipt offline.
    Verify {
        /// The receipt (OFFSTR1...).
        receipt: String,
    },
}

fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `offst relay ...` hands everything after `relay` to the relay's own command line.
    if raw.get(1).and_then(|a| a.to_str()) == Some("relay") {
        let mut args = vec![std::ffi::OsString::from("offst relay")];
        args.extend(raw.into_iter().skip(2));
        return offst_relay::cli::main(args);
    }
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: can't start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keys(dir: &Path) -> Box<dyn KeyStore> {
    match std::env::var("OFFST_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Box::new(PassphraseKeys::new(p)),
        _ => Box::new(KeyFile::new(dir.join("wallet.key"))),
    }
}

fn wallet_dir(args: &Args) -> Result<PathBuf, String> {
    args.wallet
        .clone()
        .ok_or_else(|| "no wallet: pass --wallet DIR or set OFFST_WALLET".to_string())
}

fn open(dir: &Path) -> Result<Wallet, String> {
    Wallet::open(dir, keys(dir).as_ref(), WalletOptions::default()).map_err(|e| match e {
        WalletError::InUse { .. } => format!(
            "{e} (is `offst run` running on it? stop it first, or use another terminal's \
             read commands later)"
        ),
        WalletError::NotFound { .. } => format!("{e} (create one with `offst init`)"),
        e => e.to_string(),
    })
}

fn currency(name: &str) -> Result<Currency, String> {
    Currency::new(name).map_err(|e| e.to_string())
}

/// Parse `KEY@HOST:PORT`.
fn relay_address(text: &str) -> Result<RelayAddress, String> {
    text.parse()
}

/// A friend by name, by key, or by the start of a key (at least 4 characters).
fn friend_of(w: &Wallet, who: &str) -> Result<NodeId, String> {
    let friends: Vec<NodeId> = w.node().friends().copied().collect();
    let named: Vec<NodeId> = friends
        .iter()
        .filter(|f| w.friend_view(**f, 0).is_ok_and(|v| v.name == who))
        .copied()
        .collect();
    if let [one] = named.as_slice() {
        return Ok(*one);
    }
    if named.len() > 1 {
        return Err(format!("several friends are called {who:?}; use their key"));
    }
    let prefixed: Vec<NodeId> = friends
        .iter()
        .filter(|f| who.len() >= 4 && f.to_string().starts_with(&who.to_ascii_lowercase()))
        .copied()
        .collect();
    match prefixed.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!(
            "no friend {who:?}; `offst friends` lists them by name and key"
        )),
        _ => Err(format!(
            "{who:?} starts several friends' keys; give more of it"
        )),
    }
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn run(args: Args) -> Result<(), String> {
    match &args.command {
        Command::Demo => return demo::run(args.json).await,
        Command::Relay { .. } => return Err("`offst relay` takes the relay's flags".into()),
        Command::Receipt {
            action: ReceiptAction::Verify { receipt },
        } => return verify_receipt(receipt, args.json),
        _ => {}
    }
    let dir = wallet_dir(&args)?;
    match args.command {
        Command::Init {
            relay,
            fee_base,
            fee_ppm,
        } => init(
            &dir,
            relay,
            Rate {
                base: fee_base,
                ppm: fee_ppm,
            },
            args.json,
        ),
        Command::Invite { name, hours } => {
            let w = open(&dir)?;
            let inv = w
                .invite(&name, hours.saturating_mul(3_600_000))
                .map_err(|e| e.to_string())?;
            if args.json {
                print_json(json!({"invitation": inv.to_text(), "uri": inv.to_uri()}));
            } else {
                println!("{}", inv.qr_terminal().map_err(|e| e.to_string())?);
                println!("{}", inv.to_text());
                eprintln!("Your friend runs: offst accept <the text above> (valid {hours} h)");
            }
            Ok(())
        }
        Command::Accept {
            what,
            name,
            limit,
            currency: c,
        } => accept(&dir, &what, &name, limit, &currency(&c)?).await,
        Command::Requests => requests(&dir, args.json).await,
        Command::Friends => friends(&dir, args.json),
        Command::Limit {
            friend,
            amount,
            currency: c,
        } => {
            let c = currency(&c)?;
            let online = Online::start(open(&dir)?)?;
            let friend = friend_of(&online.w(), &friend)?;
            online
                .w()
                .set_limit(friend, c, amount)
                .map_err(|e| e.to_string())?;
            let synced = online.sync(Duration::from_secs(30)).await;
            online.stop().await;
            synced?;
            if !args.json {
                println!("limit set: {friend} may owe you up to {amount} {c}");
            }
            Ok(())
        }
        Command::Invoice {
            amount,
            memo,
            currency: c,
            minutes,
        } => {
            let mut w = open(&dir)?;
            let inv = w
                .create_invoice(currency(&c)?, amount, minutes.saturating_mul(60_000), &memo)
                .map_err(|e| e.to_string())?;
            let req = w.payment_request(&inv).map_err(|e| e.to_string())?;
            if args.json {
                print_json(json!({
                    "invoice": inv.terms.id.to_string(),
                    "request": req.to_text(),
                    "amount": amount,
                    "currency": c,
                    "expires_at_ms": inv.terms.expires_at_ms,
                }));
            } else {
                println!("{}", req.qr_terminal().map_err(|e| e.to_string())?);
                println!("{}", req.to_text());
                eprintln!(
                    "Valid {minutes} min. Stay online to be paid: offst run (or offst sync later)"
                );
            }
            Ok(())
        }
        Command::Pay {
            request,
            yes,
            max_routes,
            timeout,
        } => pay(&dir, &request, yes, max_routes, timeout, args.json).await,
        Command::History { limit } => history(&dir, limit, args.json),
        Command::Payment { invoice } => payment(&dir, &invoice, args.json),
        Command::Balance => balance(&dir, args.json),
        Command::Sync { timeout } => {
            let online = Online::start(open(&dir)?)?;
            let r = online.sync(Duration::from_secs(timeout)).await;
            online.stop().await;
            r?;
            if !args.json {
                println!("in sync with the relay");
            }
            Ok(())
        }
        Command::Run => run_online(&dir).await,
        Command::Serve { socket } => serve::run(&dir, socket).await,
        Command::Apps { action } => serve::apps(&dir, action, args.json),
        Command::Report { privacy } => {
            use offst_core::routing::Privacy;
            let mut w = open(&dir)?;
            if let Some(p) = privacy {
                let p = match p.as_str() {
                    "exact" => Privacy::Exact,
                    "buckets" => Privacy::Buckets,
                    "off" => Privacy::Off,
                    other => {
                        return Err(format!("{other:?}: say exact, buckets or off"));
                    }
                };
                w.set_report_privacy(p).map_err(|e| e.to_string())?;
            }
            let now = w.report_privacy().map_err(|e| e.to_string())?;
            let name = match now {
                Privacy::Exact => "exact",
                Privacy::Buckets => "buckets",
                Privacy::Off => "off",
            };
            if args.json {
                print_json(json!({ "report": name }));
            } else {
                println!("capacity reports: {name}");
            }
            Ok(())
        }
        Command::Backup { file } => {
            let mut w = open(&dir)?;
            let info = w
                .backup(&file, keys(&dir).as_ref())
                .map_err(|e| e.to_string())?;
            if args.json {
                print_json(
                    json!({"file": file.display().to_string(), "wallet": info.wallet.to_string()}),
                );
            } else {
                println!("backup of {} written to {}", info.wallet, file.display());
            }
            Ok(())
        }
        Command::Restore { file } => {
            let keys = keys(&dir);
            let w = Wallet::restore(
                &file,
                &dir,
                keys.as_ref(),
                keys.as_ref(),
                None,
                WalletOptions::default(),
            )
            .map_err(|e| e.to_string())?;
            println!(
                "restored {} into {}; run `offst sync` to catch up with friends",
                w.id(),
                dir.display()
            );
            Ok(())
        }
        Command::Demo | Command::Relay { .. } | Command::Receipt { .. } => Ok(()),
    }
}

fn init(dir: &Path, relay: Option<String>, rate: Rate, json: bool) -> Result<(), String> {
    let relay = relay.as_deref().map(relay_address).transpose()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key_file = dir.join("wallet.key");
    let uses_file = std::env::var("OFFST_PASSPHRASE").map_or(true, |p| p.is_empty());
    if uses_file && !key_file.exists() {
        KeyFile::generate(&key_file).map_err(|e| e.to_string())?;
    }
    let options = WalletOptions {
        rate,
        ..WalletOptions::default()
    };
    let mut w = Wallet::create(dir, keys(dir).as_ref(), options).map_err(|e| e.to_string())?;
    if let Some(r) = &relay {
        w.set_relay(r.clone()).map_err(|e| e.to_string())?;
    }
    if json {
        print_json(json!({"wallet": w.id().to_string(), "dir": dir.display().to_string()}));
    } else {
        println!("wallet {} created in {}", w.id(), dir.display());
        if relay.is_none() {
            eprintln!("No relay yet: friends can't reach you until `offst init` has --relay.");
        }
    }
    Ok(())
}

async fn accept(
    dir: &Path,
    what: &str,
    name: &str,
    limit: Option<u64>,
    c: &Currency,
) -> Result<(), String> {
    let online = Online::start(open(dir)?)?;
    let result = async {
        let friend = if what.trim().to_ascii_uppercase().starts_with("OFFST")
            || what.trim().starts_with("offst:")
        {
            let inv = Invitation::parse(what, now_ms()).map_err(|e| e.to_string())?;
            online
                .w()
                .accept_invitation(&inv, name)
                .map_err(|e| e.to_string())?;
            println!(
                "friend request sent to {} ({})",
                inv.terms.name, inv.terms.inviter
            );
            inv.terms.inviter
        } else {
            // A friend request: fetch the news first.
            online.sync(Duration::from_secs(30)).await?;
            let requests = online.w().friend_requests().map_err(|e| e.to_string())?;
            let from = requests
                .iter()
                .find(|r| {
                    r.from.name == what
                        || (what.len() >= 4
                            && r.from
                                .id
                                .to_string()
                                .starts_with(&what.to_ascii_lowercase()))
                })
                .map(|r| r.from.id)
                .ok_or_else(|| {
                    format!("no friend request from {what:?}; `offst requests` lists them")
                })?;
            online
                .w()
                .accept_friend_request(from, name)
                .map_err(|e| e.to_string())?;
            println!("you and {from} are friends");
            from
        };
        if let Some(limit) = limit {
            online
                .w()
                .set_limit(friend, *c, limit)
                .map_err(|e| e.to_string())?;
            println!("{friend} may owe you up to {limit} {c}");
        }
        online.sync(Duration::from_secs(30)).await
    }
    .await;
    online.stop().await;
    result
}

async fn requests(dir: &Path, json: bool) -> Result<(), String> {
    let online = Online::start(open(dir)?)?;
    let synced = online.sync(Duration::from_secs(30)).await;
    let list = online.w().friend_requests().map_err(|e| e.to_string());
    online.stop().await;
    if let Err(e) = synced {
        eprintln!("warning: {e}; showing what arrived so far");
    }
    let list = list?;
    if json {
        print_json(json!({"requests": list.iter().map(|r| json!({
            "from": r.from.id.to_string(),
            "name": r.from.name,
            "received_ms": r.received_ms,
        })).collect::<Vec<_>>()}));
    } else if list.is_empty() {
        println!("no friend requests");
    } else {
        for r in &list {
            println!("{}  {}", r.from.id, r.from.name);
        }
        eprintln!("Accept one with: offst accept <key or name> --limit N");
    }
    Ok(())
}

fn friends(dir: &Path, json: bool) -> Result<(), String> {
    let w = open(dir)?;
    let mut rows = Vec::new();
    for f in w.node().friends().copied().collect::<Vec<_>>() {
        let v = w.friend_view(f, 0).map_err(|e| e.to_string())?;
        rows.push(v);
    }
    if json {
        print_json(json!({"friends": rows.iter().map(|v| json!({
            "id": v.id.to_string(),
            "name": v.name,
            "lines": v.lines.iter().map(|l| json!({
                "currency": l.currency.as_str(),
                "balance": l.balance as i64,
                "our_limit": l.our_limit,
                "their_limit": l.their_limit,
                "frozen_by_us": l.frozen_by_us,
                "frozen_by_them": l.frozen_by_them,
                "pending_limit": l.pending_limit,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()}));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no friends yet: `offst invite` makes an invitation");
    }
    for v in &rows {
        println!("{} {}", v.name, v.id);
        for l in &v.lines {
            println!(
                "  {}: balance {:+} (they may owe you {}{}, you may owe them {})",
                l.currency,
                l.balance,
                l.our_limit,
                l.pending_limit
                    .map(|p| format!(" ({p} once sent)"))
                    .unwrap_or_default(),
                l.their_limit
            );
        }
    }
    Ok(())
}

fn balance(dir: &Path, json: bool) -> Result<(), String> {
    let w = open(dir)?;
    let mut totals: std::collections::BTreeMap<String, i128> = Default::default();
    let mut per_friend = Vec::new();
    for f in w.node().friends().copied().collect::<Vec<_>>() {
        let v = w.friend_view(f, 0).map_err(|e| e.to_string())?;
        for l in &v.lines {
            *totals.entry(l.currency.as_str().to_string()).or_default() += l.balance;
            per_friend.push((v.name.clone(), v.id, l.currency, l.balance));
        }
    }
    if json {
        print_json(json!({
            "totals": totals.iter().map(|(c, b)| (c.clone(), json!(*b as i64))).collect::<serde_json::Map<_, _>>(),
            "friends": per_friend.iter().map(|(n, id, c, b)| json!({
                "name": n, "id": id.to_string(), "currency": c.as_str(), "balance": *b as i64,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if totals.is_empty() {
        println!("balance 0 (no credit lines yet)");
    }
    for (c, b) in &totals {
        println!("{c}: {b:+}");
    }
    for (n, _, c, b) in &per_friend {
        println!("  with {n}: {b:+} {c}");
    }
    Ok(())
}

fn history(dir: &Path, limit: usize, json: bool) -> Result<(), String> {
    let w = open(dir)?;
    let rows = w
        .history(&HistoryQuery {
            limit: limit.max(1),
            ..HistoryQuery::default()
        })
        .map_err(|e| e.to_string())?;
    if json {
        print_json(json!({"history": rows.iter().map(|h| json!({
            "seq": h.seq,
            "at_ms": h.at_ms,
            "kind": h.kind.as_str(),
            "friend": h.friend.map(|f| f.to_string()),
            "invoice": h.invoice.map(|i| i.to_string()),
            "currency": h.currency.as_ref().map(|c| c.as_str().to_string()),
            "amount": h.amount,
            "detail": h.detail,
        })).collect::<Vec<_>>()}));
        return Ok(());
    }
    if rows.is_empty() {
        println!("nothing yet");
    }
    for h in &rows {
        let amount = match (&h.amount, &h.currency) {
            (Some(a), Some(c)) => format!(" {a:+} {c}"),
            _ => String::new(),
        };
        println!("{:>5} {:<18}{amount} {}", h.seq, h.kind.as_str(), h.detail);
    }
    Ok(())
}

fn payment(dir: &Path, invoice: &str, json: bool) -> Result<(), String> {
    let id: offst_core::protocol::payment::InvoiceId = invoice
        .trim()
        .parse()
        .map_err(|e| format!("not an invoice id ({e}); `offst history` shows them"))?;
    let mut w = open(dir)?;
    let v = w.payment_view(id).map_err(|e| match e {
        WalletError::Refused(offst_core::protocol::node::NodeError::UnknownPayment(_)) => {
            format!("this wallet made no payment and issued no invoice {id}")
        }
        e => e.to_string(),
    })?;
    let role = match v.role {
        offst_core::wallet::PaymentRole::Buyer => "buyer",
        offst_core::wallet::PaymentRole::Seller => "seller",
    };
    let receipt = v.receipt.as_ref().map(offst_core::invite::receipt_to_text);
    if json {
        print_json(json!({
            "invoice": id.to_string(),
            "role": role,
            "status": v.status,
            "receipt": receipt,
            "history": v.history.iter().map(|h| json!({
                "seq": h.seq,
                "at_ms": h.at_ms,
                "kind": h.kind.as_str(),
                "detail": h.detail,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("{id}: {}, you are the {role}", v.status.replace('_', " "));
    if let Some(text) = receipt {
        println!("receipt:\n{text}");
    }
    for h in &v.history {
        println!("{:>5} {:<18} {}", h.seq, h.kind.as_str(), h.detail);
    }
    Ok(())
}

fn verify_receipt(text: &str, json: bool) -> Result<(), String> {
    let r = offst_core::invite::parse_receipt(text).map_err(|e| e.to_string())?;
    if json {
        print_json(json!({
            "valid": true,
            "seller": r.seller.to_string(),
            "invoice": r.invoice_id().to_string(),
            "amount": r.amount(),
        }));
    } else {
        println!(
            "valid receipt: {} was paid {} for invoice {}",
            r.seller,
            r.amount(),
            r.invoice_id()
        );
    }
    Ok(())
}

fn confirm(question: &str) -> Result<bool, String> {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

async fn pay(
    dir: &Path,
    text: &str,
    yes: bool,
    max_routes: u8,
    timeout: u64,
    json: bool,
) -> Result<(), String> {
    let req = PaymentRequest::parse(text, now_ms()).map_err(|e| e.to_string())?;
    let online = Online::start(open(dir)?)?;
    let result = async {
        online.connected(Duration::from_secs(30)).await?;
        let terms = req.invoice.terms.clone();
        let query = online.w().route_query(&req, max_routes);
        let set = offst_core::net::payer::routes(&online.driver, query)
            .await
            .map_err(|e| format!("can't pay {} {}: {e}", terms.amount, terms.currency))?;
        if !json {
            println!(
                "pay {} {} to {} ({}) over {} route(s), fees {} in all:",
                terms.amount,
                terms.currency,
                terms.seller,
                if terms.memo.is_empty() {
                    "no memo"
                } else {
                    &terms.memo
                },
                set.routes.len(),
                set.total_fee
            );
            for r in &set.routes {
                println!(
                    "  {} via {} mediator(s), fees {}",
                    r.dest_payment,
                    r.route.len() - 2,
                    r.total_fee
                );
            }
        }
        if !yes && !confirm("pay?")? {
            return Err("not paid".into());
        }
        let receipt = offst_core::net::payer::pay(
            &online.wallet,
            &online.driver,
            &req,
            max_routes,
            Duration::from_secs(timeout),
            |step| {
                if json {
                    return;
                }
                match step {
                    PayStep::Sent(_) => eprintln!("sent; waiting for the seller's answer"),
                    PayStep::Retried(set) => eprintln!(
                        "a route was refused on the way; the rest goes over {} other route(s)",
                        set.routes.len()
                    ),
                    PayStep::Waiting(t) => eprintln!(
                        "waiting for the seller and the mediators ({} s)",
                        t.as_secs()
                    ),
                }
            },
        )
        .await
        .map_err(|e| match e {
            PayError::Cancelled | PayError::GaveUp { .. } => {
                format!("{e}; ask the seller for a new invoice to try again")
            }
            e => e.to_string(),
        })?;
        let text = offst_core::invite::receipt_to_text(&receipt);
        // The receipt comes straight from the seller; wait a little for the credit to move
        // (the collects come back hop by hop) so that the balance shown next is current.
        let settled =
            offst_core::net::payer::settled(&online.wallet, &terms.id, Duration::from_secs(10))
                .await;
        if json {
            print_json(json!({
                "status": "completed",
                "settled": settled,
                "invoice": terms.id.to_string(),
                "amount": terms.amount,
                "fees": set.total_fee,
                "routes": set.routes.len(),
                "receipt": text,
            }));
        } else {
            println!("paid. receipt:\n{text}");
            if !settled {
                println!(
                    "the credit moves when the first friend on the way collects (next time both of you are online)"
                );
            }
        }
        Ok(())
    }
    .await;
    // Hand the last messages (the commit, acknowledgements) to the relay before going.
    let _ = online.sync(Duration::from_secs(10)).await;
    online.stop().await;
    result
}

async fn run_online(dir: &Path) -> Result<(), String> {
    let online = Online::start(open(dir)?)?;
    online.connected(Duration::from_secs(30)).await?;
    let mut stop = StopSignals::listen().map_err(|e| e.to_string())?;
    println!("online as {}; Ctrl-C (or SIGTERM) to stop", online.w().id());
    let _ = std::io::stdout().flush();
    let printed = print_events_until_stopped(&online.wallet, &mut stop).await;
    online.stop().await;
    printed
}

/// Print the wallet's events as they come, until Ctrl-C or SIGTERM.
async fn print_events_until_stopped(
    wallet: &offst_core::wallet::SharedWallet,
    stop: &mut StopSignals,
) -> Result<(), String> {
    let w = || wallet.lock();
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        loop {
            let next = w().next_event().map_err(|e| e.to_string())?;
            let Some(e) = next else { break };
            println!("{} {}", e.kind.as_str(), e.detail);
            let _ = std::io::stdout().flush();
            w().event_handled(e.seq).map_err(|e| e.to_string())?;
        }
    }
}
