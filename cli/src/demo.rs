//! `offst demo`: the main job on an embedded default. Two relays on loopback that share their
//! indexes, and the six people of the seed story (A to F, in a ring, A–C on the first relay and
//! D–F on the second), each a real wallet (SQLite file, sealed key) in a temporary directory
//! with its network driver. They become friends by invitation, grant limits, and pay: a direct
//! payment, one through a mediator who charges a fee, one too big for a single route, and one
//! whose mediator is offline until later. Then every balance, and the check that they sum to 0.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::NodeId;
use offst_core::protocol::node::PaymentStatus;
use offst_core::wallet::{KeyFile, Wallet, WalletOptions};
use offst_relay::RelayHandle;
use serde_json::json;

use crate::online::Online;

/// How long any one step may take before the demo gives up, saying which.
const STEP: Duration = Duration::from_secs(60);
const LIMIT: u64 = 10;

struct Person {
    name: &'static str,
    id: NodeId,
    dir: PathBuf,
    online: Option<Online>,
}

impl Person {
    /// The signed state of the channel with `other`, and its move counter, as this one holds it.
    fn channel_with(
        &self,
        other: &Person,
    ) -> Option<(offst_core::protocol::channel::ChannelState, u64)> {
        let o = self.online.as_ref()?;
        let w = o.w();
        w.node()
            .channel(&other.id)
            .map(|c| (c.state().clone(), c.counter()))
    }

    fn on(&self) -> Result<&Online, String> {
        self.online
            .as_ref()
            .ok_or_else(|| format!("{} is offline", self.name))
    }
}

fn hours() -> Currency {
    crate::currency("hours").unwrap_or_else(|e| unreachable!("{e}"))
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > STEP {
            return Err(format!("gave up waiting: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

fn open_wallet(dir: &Path, rate: Rate) -> Result<Wallet, String> {
    let key = dir.join("wallet.key");
    if !key.exists() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        KeyFile::generate(&key).map_err(|e| e.to_string())?;
        let options = WalletOptions {
            rate,
            ..WalletOptions::default()
        };
        return Wallet::create(dir, &KeyFile::new(&key), options).map_err(|e| e.to_string());
    }
    Wallet::open(dir, &KeyFile::new(&key), WalletOptions::default()).map_err(|e| e.to_string())
}

async fn start_relays(root: &Path) -> Result<(RelayHandle, RelayHandle), String> {
    let dirs = [root.join("relay-1"), root.join("relay-2")];
    let mut relays = offst_relay::local::start_on_loopback(&dirs, |_| {}).await?;
    let two = relays.pop().ok_or("relay set-up")?;
    let one = relays.pop().ok_or("relay set-up")?;
    Ok((one, two))
}

/// `x` invites `y`; `y` accepts; `x` accepts the friend request; each lets the other owe
/// [`LIMIT`].
async fn befriend(x: &Person, y: &Person) -> Result<(), String> {
    let inv = x
        .on()?
        .w()
        .invite(x.name, 3_600_000)
        .map_err(|e| e.to_string())?;
    let text = inv.to_text();
    let inv =
        offst_core::invite::Invitation::parse(&text, crate::now_ms()).map_err(|e| e.to_string())?;
    y.on()?
        .w()
        .accept_invitation(&inv, y.name)
        .map_err(|e| e.to_string())?;
    until(
        &format!("{} sees {}'s friend request", x.name, y.name),
        || {
            x.on().is_ok_and(|o| {
                o.w()
                    .friend_requests()
                    .is_ok_and(|r| r.iter().any(|r| r.from.id == y.id))
            })
        },
    )
    .await?;
    x.on()?
        .w()
        .accept_friend_request(y.id, x.name)
        .map_err(|e| e.to_string())?;
    x.on()?
        .w()
        .set_limit(y.id, hours(), LIMIT)
        .map_err(|e| e.to_string())?;
    until(&format!("{} learns {} accepted", y.name, x.name), || {
        y.on().is_ok_and(|o| o.w().node().channel(&x.id).is_some())
    })
    .await?;
    y.on()?
        .w()
        .set_limit(x.id, hours(), LIMIT)
        .map_err(|e| e.to_string())?;
    for (a, b) in [(x, y), (y, x)] {
        until(
            &format!("{} sees the limit {} granted", b.name, a.name),
            || {
                b.on().is_ok_and(|o| {
                    let w = o.w();
                    w.node().channel(&a.id).is_some_and(|ch| {
                        ch.state()
                            .lines
                            .get(&hours())
                            .is_some_and(|l| l.limit_of(ch.local_side().other()) == LIMIT)
                    })
                })
            },
        )
        .await?;
    }
    Ok(())
}

struct Paid {
    what: String,
    routes: usize,
    fees: u64,
    ms: u128,
}

/// `buyer` pays `amount` to `seller` with routes from the buyer's relay's index (routing the
/// missing part again if a route is refused on the way). With `mediator_back`, that person
/// (offline now) comes back once the payment is under way.
async fn purchase(
    people: &mut [Person],
    buyer: usize,
    seller: usize,
    amount: u64,
    what: &str,
    mediator_back: Option<usize>,
) -> Result<Paid, String> {
    let mut back = mediator_back;
    for attempt in 1..=3 {
        match purchase_once(people, buyer, seller, amount, what, back.take()).await {
            Ok(p) => return Ok(p),
            Err(e) if attempt < 3 && e.contains("nothing moved") => {
                eprintln!("  ... {e}; the index was behind: a new invoice, again");
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(format!("{what}: three attempts failed"))
}

async fn purchase_once(
    people: &mut [Person],
    buyer: usize,
    seller: usize,
    amount: u64,
    what: &str,
    mediator_back: Option<usize>,
) -> Result<Paid, String> {
    use offst_core::net::payer::{PayStep, pay};
    let start = Instant::now();
    let back = mediator_back
        .and_then(|m| people.get(m))
        .map(|p| (p.dir.clone(), p.name));
    let (b, s) = (
        people.get(buyer).ok_or("no buyer")?,
        people.get(seller).ok_or("no seller")?,
    );
    let inv = s
        .on()?
        .w()
        .create_invoice(hours(), amount, 600_000, what)
        .map_err(|e| e.to_string())?;
    let text = s
        .on()?
        .w()
        .payment_request(&inv)
        .map_err(|e| e.to_string())?
        .to_text();
    let req = offst_core::invite::PaymentRequest::parse(&text, crate::now_ms())
        .map_err(|e| e.to_string())?;
    let bo = b.on()?;
    // The relays' indexes hear of new channels within seconds; wait for them the first time.
    let query = bo.w().route_query(&req, 4);
    until_routes(bo, query, what).await?;
    let (mut routes, mut fees) = (0usize, 0u64);
    let paying = pay(&bo.wallet, &bo.driver, &req, 4, STEP, |step| match step {
        PayStep::Sent(set) => {
            routes += set.routes.len();
            fees += set.total_fee;
        }
        PayStep::Retried(set) => {
            eprintln!(
                "  ... a route was refused on the way; the rest goes over {} other route(s)",
                set.routes.len()
            );
            routes += set.routes.len();
            fees += set.total_fee;
        }
        PayStep::Waiting(_) => {}
    });
    let comeback = async {
        let (dir, name) = back?;
        // The payment now waits at the offline mediator's relay; then they come back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = bo.w().node().payment(&inv.terms.id).map(|(s, _)| s);
        eprintln!(
            "  ... {name} is offline; the payment is {:?}, waiting at the relay; {name} comes back",
            status.unwrap_or(PaymentStatus::InFlight)
        );
        Some(open_wallet(&dir, Rate::default()).and_then(Online::start))
    };
    let (result, back) = tokio::join!(paying, comeback);
    if let (Some(m), Some(online)) = (mediator_back, back) {
        let online = online?;
        if let Some(p) = people.get_mut(m) {
            p.online = Some(online);
        }
    }
    result.map_err(|e| format!("{what}: {e}"))?;
    Ok(Paid {
        what: what.to_string(),
        routes,
        fees,
        ms: start.elapsed().as_millis(),
    })
}

async fn until_routes(
    o: &Online,
    query: offst_core::routing::RouteQuery,
    what: &str,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match o.driver.find_routes(query.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() < STEP => {
                tracing::debug!("no routes yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("{what}: no routes: {e}")),
        }
    }
}

pub async fn run(json: bool) -> Result<(), String> {
    let root = std::env::temp_dir().join(format!("offst-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = demo(&root, json).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn demo(root: &Path, json: bool) -> Result<(), String> {
    let say = |s: &str| {
        if !json {
            println!("{s}");
        }
    };
    let (r1, r2) = start_relays(root).await?;
    say(&format!(
        "two relays on loopback: {} at {} and {} at {}, sharing their indexes",
        r1.key.short(),
        r1.addr,
        r2.key.short(),
        r2.addr
    ));
    let names = ["A", "B", "C", "D", "E", "F"];
    let mut people = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let dir = root.join(name);
        // Everyone charges 1 hour for passing a payment on.
        let mut w = open_wallet(&dir, Rate { base: 1, ppm: 0 })?;
        let relay = if i < 3 { &r1 } else { &r2 };
        w.set_relay(offst_core::net::wire::RelayAddress {
            addr: relay.addr.to_string(),
            key: relay.key,
        })
        .map_err(|e| e.to_string())?;
        let id = w.id();
        people.push(Person {
            name,
            id,
            dir,
            online: Some(Online::start(w)?),
        });
    }
    say("six people, A-C on the first relay and D-F on the second, each with a wallet file");
    for i in 0..6 {
        let (Some(x), Some(y)) = (people.get(i), people.get((i + 1) % 6)) else {
            continue;
        };
        befriend(x, y).await?;
        say(&format!(
            "  {} and {} are friends by invitation, each trusting the other for {LIMIT} hours",
            x.name, y.name
        ));
    }
    let mut paid = Vec::new();
    say("payments (routes from the index, fees of 1 hour per mediator):");
    let show = |p: &Paid| {
        format!(
            "  {}: done over {} route(s), fees {}, {} ms",
            p.what, p.routes, p.fees, p.ms
        )
    };
    let p = purchase(
        &mut people,
        1,
        0,
        3,
        "B buys 3 hours from A (friends)",
        None,
    )
    .await?;
    say(&show(&p));
    paid.push(p);
    let p = purchase(
        &mut people,
        3,
        5,
        6,
        "D buys 6 hours from F through E",
        None,
    )
    .await?;
    say(&show(&p));
    paid.push(p);
    // D goes offline; C buys from E, and the payment must pass D.
    if let Some(d) = people.get_mut(3)
        && let Some(o) = d.online.take()
    {
        o.stop().await;
    }
    let p = purchase(
        &mut people,
        2,
        4,
        2,
        "C buys 2 hours from E through D, who is offline at first",
        Some(3),
    )
    .await?;
    say(&show(&p));
    paid.push(p);
    let p = purchase(
        &mut people,
        0,
        3,
        15,
        "A pays D 15 hours, more than one route carries",
        None,
    )
    .await?;
    say(&show(&p));
    paid.push(p);

    // Everyone settles, then the table.
    for x in &people {
        x.on()?.sync(STEP).await?;
    }
    for i in 0..6 {
        let (Some(x), Some(y)) = (people.get(i), people.get((i + 1) % 6)) else {
            continue;
        };
        until(&format!("{} and {} agree", x.name, y.name), || {
            let a = x.channel_with(y);
            a.is_some() && a == y.channel_with(x)
        })
        .await?;
    }
    let mut rows = Vec::new();
    for x in &people {
        let w = x.on()?.w();
        let mut with = Vec::new();
        let mut total: i128 = 0;
        for y in &people {
            if let Some((b, _)) = w.node().balance(&y.id, &hours()) {
                total += b;
                with.push((y.name, b));
            }
        }
        rows.push((x.name, total, with));
    }
    let sum: i128 = rows.iter().map(|r| r.1).sum();
    if json {
        println!(
            "{}",
            json!({
                "people": rows.iter().map(|(n, t, with)| json!({
                    "name": n,
                    "balance": *t as i64,
                    "with": with.iter().map(|(f, b)| json!({"friend": f, "balance": *b as i64})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "sum": sum as i64,
                "payments_completed": paid.len(),
                "payments": paid.iter().map(|p| json!({
                    "what": p.what, "routes": p.routes, "fees": p.fees, "ms": p.ms as u64,
                })).collect::<Vec<_>>(),
                "currency": "hours",
            })
        );
    } else {
        println!();
        println!(
            "{:<6} {:>8}   with each friend (hours)",
            "person", "balance"
        );
        for (n, t, with) in &rows {
            let detail: Vec<String> = with.iter().map(|(f, b)| format!("{f} {b:+}")).collect();
            println!("{n:<6} {t:>+8}   {}", detail.join(", "));
        }
        println!("{:<6} {sum:>+8}   (balances sum to zero)", "sum");
    }
    for p in people {
        if let Some(o) = p.online {
            o.stop().await;
        }
    }
    r1.shutdown().await;
    r2.shutdown().await;
    if sum != 0 {
        return Err(format!("balances sum to {sum}, not 0"));
    }
    Ok(())
}
