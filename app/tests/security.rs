//! The app interface's refusals: each is a typed error, leaves the wallet as it was, and is in
//! the wallet's history under the app's name. Two wallets, friends, on a loopback relay; the
//! interface served in-process on a real Unix socket.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Person, TempDir, balance, befriend, relays, request};
use offst_app::wire::{ApiError, Call, InvoiceState, Permission, Reply};
use offst_app::{AppClient, AppError, AppKey};
use offst_core::api::Permissions;
use offst_core::api::grants::Grants;
use offst_core::api::server::{ApiContext, ApiLimits, serve};
use offst_core::net::payer;
use offst_core::protocol::amount::Rate;
use offst_core::wallet::{EventKind, HistoryQuery};

/// Serve `p`'s wallet to apps on `dir/api.sock`.
fn start_serving(p: &Person, limits: ApiLimits) -> (PathBuf, tokio::sync::watch::Sender<bool>) {
    let socket = p.dir.join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap_or_else(|e| unreachable!("{e}"));
    let grants = Grants::open(&p.dir).unwrap_or_else(|e| unreachable!("{e}"));
    let ctx = Arc::new(ApiContext::new(
        p.wallet.clone(),
        p.driver.clone(),
        grants,
        limits,
    ));
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(listener, ctx, rx));
    (socket, tx)
}

/// The owner's side: `offst apps add` does this (on its own connection to `apps.db`).
fn grant(p: &Person, name: &str, key: &AppKey, allow: &[Permission], pay_limit: Option<u64>) {
    let mut g = Grants::open(&p.dir).unwrap_or_else(|e| unreachable!("{e}"));
    g.add(
        name,
        key.id(),
        Permissions::of(allow),
        pay_limit.map(|l| (l, "EUR".to_string())),
        common::now_ms(),
    )
    .unwrap_or_else(|e| unreachable!("{e}"));
}

fn new_key() -> AppKey {
    AppKey::generate().unwrap_or_else(|e| unreachable!("{e}"))
}

async fn connect(socket: &std::path::Path, key: AppKey) -> AppClient {
    AppClient::connect(socket, key)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"))
}

/// A request signed by `signer` that claims to come from `claimed`.
fn forge(
    signer: &AppKey,
    claimed: offst_core::protocol::identity::NodeId,
    challenge: &[u8; 32],
    seq: u64,
    call: Call,
) -> offst_app::wire::Request {
    let mut r = offst_app::wire::Request::sign(signer.identity(), challenge, seq, call);
    r.app = claimed;
    r
}

/// History rows of `kind` whose detail mentions `needle`.
fn recorded(p: &Person, kind: EventKind, needle: &str) -> usize {
    p.w()
        .history(&HistoryQuery {
            limit: 10_000,
            ..HistoryQuery::default()
        })
        .unwrap_or_default()
        .iter()
        .filter(|h| h.kind == kind && h.detail.contains(needle))
        .count()
}

fn refusal(r: Result<Reply, AppError>) -> ApiError {
    match r {
        Err(AppError::Refused(e)) => e,
        other => unreachable!("expected a refusal, got {other:?}"),
    }
}

struct World {
    _root: TempDir,
    _relays: Vec<offst_relay::RelayHandle>,
    /// Serves apps.
    a: Person,
    /// A's friend, who sells and buys.
    b: Person,
    socket: PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn world(name: &str, limits: ApiLimits) -> World {
    let root = TempDir::new(name);
    let relays = relays(&root.0, 1).await;
    let relay = relays.first().unwrap_or_else(|| unreachable!());
    let a = Person::create("A", root.0.join("a"), relay, Rate::default());
    let b = Person::create("B", root.0.join("b"), relay, Rate::default());
    befriend(&a, &b, 1_000).await;
    let (socket, stop) = start_serving(&a, limits);
    World {
        _root: root,
        _relays: relays,
        a,
        b,
        socket,
        _stop: stop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_typed_recorded_and_changes_nothing() {
    let w = world("refusals", ApiLimits::default()).await;

    // An app with only `receive` may create invoices, and may not pay.
    let pos_key = new_key();
    let pos_id = pos_key.id();
    grant(&w.a, "pos", &pos_key, &[Permission::Receive], None);
    let mut pos = connect(&w.socket, pos_key).await;
    let invoice = pos
        .create_invoice("EUR", 7, "tea", 10)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(
        recorded(
            &w.a,
            EventKind::AppAction,
            "app \"pos\": create an invoice for 7 EUR"
        ),
        1
    );
    let req = request(&w.b, 5, "refund").to_text();
    let e = refusal(
        pos.call(Call::Pay {
            request: req.clone(),
        })
        .await,
    );
    assert!(
        matches!(&e, ApiError::NotAllowed { permission: Permission::Pay, name, .. } if name == "pos"),
        "{e:?}"
    );
    assert_eq!(
        recorded(
            &w.a,
            EventKind::AppRefused,
            "app \"pos\": pay a payment request: refused"
        ),
        1
    );
    // Reading needs `read`.
    let e = refusal(pos.call(Call::Balances).await);
    assert!(
        matches!(
            e,
            ApiError::NotAllowed {
                permission: Permission::Read,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(balance(&w.a, &w.b), 0, "nothing moved");

    // A forged request: claims pos's key, signed by another.
    let mallory = new_key();
    let forged = forge(
        &mallory,
        pos_id,
        &pos.challenge(),
        100,
        Call::CreateInvoice {
            currency: "EUR".into(),
            amount: 1,
            memo: "forged".into(),
            minutes: 5,
        },
    );
    let answer = pos
        .send_raw(&forged)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(answer.result, Err(ApiError::Forged));
    assert_eq!(
        recorded(&w.a, EventKind::AppRefused, "someone claiming to be pos"),
        1
    );
    // A flood of forged requests on a connection of its own: every one refused, the first
    // recorded at once and the rest as one row when the connection ends.
    let mut flood = connect(&w.socket, new_key()).await;
    for seq in 1..=30 {
        let f = forge(&mallory, pos_id, &flood.challenge(), seq, Call::Balances);
        let answer = flood
            .send_raw(&f)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(answer.result, Err(ApiError::Forged));
    }
    assert_eq!(
        recorded(&w.a, EventKind::AppRefused, "someone claiming to be pos"),
        2
    );
    drop(flood);
    common::until("the flood's summary is recorded", || {
        recorded(&w.a, EventKind::AppRefused, "29 more requests refused") == 1
    })
    .await;

    // A replayed request: the same signed bytes again on the same connection...
    let genuine = pos.sign_next(Call::InvoiceStatus {
        invoice: invoice.invoice,
        wait_ms: 0,
    });
    let first = pos
        .send_raw(&genuine)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(first.result.is_ok(), "{first:?}");
    let again = pos
        .send_raw(&genuine)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(
        matches!(again.result, Err(ApiError::Replayed { .. })),
        "{again:?}"
    );
    // ... and on another connection (another challenge).
    let other_key = new_key();
    let mut other = connect(&w.socket, other_key).await;
    let elsewhere = other
        .send_raw(&genuine)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(elsewhere.result, Err(ApiError::Forged));
    assert!(recorded(&w.a, EventKind::AppRefused, "refused: request number") >= 1);

    // An unknown key.
    let e = refusal(other.call(Call::Balances).await);
    assert!(matches!(e, ApiError::UnknownApp { .. }), "{e:?}");
    assert!(recorded(&w.a, EventKind::AppRefused, "unknown app") >= 1);

    // Revoked while it waits for its invoice, and on its next request.
    let waiting_key = AppKey::from_seed(pos.challenge());
    grant(&w.a, "till", &waiting_key, &[Permission::Receive], None);
    let mut till = connect(&w.socket, waiting_key).await;
    let open = till
        .create_invoice("EUR", 3, "cake", 10)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    let socket = w.socket.clone();
    let dir = w.a.dir.clone();
    let waiter = tokio::spawn(async move {
        let r = till
            .invoice_status(open.invoice, Duration::from_secs(60))
            .await;
        (r, till)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    Grants::open(&dir)
        .and_then(|mut g| g.revoke("till", common::now_ms()))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let (r, mut till) = waiter.await.unwrap_or_else(|e| unreachable!("{e}"));
    assert!(
        matches!(&r, Err(AppError::Refused(ApiError::Revoked { name })) if name == "till"),
        "{r:?}"
    );
    let e = refusal(
        till.call(Call::CreateInvoice {
            currency: "EUR".into(),
            amount: 1,
            memo: String::new(),
            minutes: 5,
        })
        .await,
    );
    assert!(matches!(e, ApiError::Revoked { .. }), "{e:?}");
    assert!(recorded(&w.a, EventKind::AppRefused, "app \"till\"") >= 2);
    // A new connection with the revoked key is refused too.
    let mut again = connect(&socket, AppKey::from_seed(pos.challenge())).await;
    let e = refusal(again.call(Call::History { limit: 1 }).await);
    assert!(matches!(e, ApiError::Revoked { .. }), "{e:?}");

    // `pos` may still see its own invoice, and nobody else's.
    let st = pos
        .invoice_status(invoice.invoice, Duration::ZERO)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(st.state, InvoiceState::Open);
    let theirs = request(&w.a, 2, "not pos's").invoice.terms.id;
    let e = refusal(
        pos.call(Call::InvoiceStatus {
            invoice: theirs,
            wait_ms: 0,
        })
        .await,
    );
    assert!(matches!(e, ApiError::NotYours { .. }), "{e:?}");
    assert_eq!(balance(&w.a, &w.b), 0, "nothing moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_pays_within_its_limit_and_no_further() {
    let w = world("limit", ApiLimits::default()).await;
    let key = new_key();
    let bot_id = key.id();
    grant(
        &w.a,
        "bot",
        &key,
        &[Permission::Pay, Permission::Read],
        Some(50),
    );
    let mut bot = connect(&w.socket, key).await;
    let first = request(&w.b, 30, "first").to_text();
    let (amount, receipt) = bot
        .pay(&first)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(amount, 30);
    assert!(offst_core::invite::parse_receipt(&receipt).is_ok_and(|r| r.verify().is_ok()));
    common::until("B sees the payment", || balance(&w.b, &w.a) == 30).await;

    // 30 more would be 60 in 24 hours: over the limit of 50.
    let second = request(&w.b, 30, "second").to_text();
    let e = refusal(bot.call(Call::Pay { request: second }).await);
    assert!(
        matches!(
            e,
            ApiError::OverLimit {
                limit: 50,
                spent: 30,
                asked: 30,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        recorded(&w.a, EventKind::AppRefused, "over its limit of 50 EUR"),
        1
    );
    // Another currency is refused as such.
    let usd = {
        let mut s = w.b.w();
        let inv = s
            .create_invoice(
                offst_core::protocol::amount::Currency::new("USD")
                    .unwrap_or_else(|e| unreachable!("{e}")),
                1,
                600_000,
                "usd",
            )
            .unwrap_or_else(|e| unreachable!("{e}"));
        s.payment_request(&inv)
            .unwrap_or_else(|e| unreachable!("{e}"))
            .to_text()
    };
    let e = refusal(bot.call(Call::Pay { request: usd }).await);
    assert!(matches!(e, ApiError::WrongCurrency { .. }), "{e:?}");
    // 20 still fits.
    let third = request(&w.b, 20, "third").to_text();
    bot.pay(&third)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    common::until("B sees both payments", || balance(&w.b, &w.a) == 50).await;
    let spent = Grants::open(&w.a.dir)
        .and_then(|g| g.spent(&bot_id, common::now_ms()))
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(spent, 50);
    assert_eq!(
        recorded(
            &w.a,
            EventKind::AppAction,
            "app \"bot\": pay a payment request"
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_app_stalls_neither_the_wallet_nor_other_apps() {
    let w = world("flood", ApiLimits::default()).await;
    let flood_key = new_key();
    let flood_seed = flood_key.identity().seed();
    grant(&w.a, "flood", &flood_key, &[Permission::Read], None);
    let pos_key = new_key();
    grant(&w.a, "pos", &pos_key, &[Permission::Receive], None);

    // Four connections of the flooding app each send 1,000 requests without waiting.
    const PER_CONNECTION: usize = 1_000;
    let mut floods = Vec::new();
    for _ in 0..4 {
        let socket = w.socket.clone();
        floods.push(tokio::spawn(async move {
            let mut c = connect(&socket, AppKey::from_seed(flood_seed)).await;
            // In windows of 100 requests sent without waiting: a client that never reads
            // would only stall its own connection (the wallet stops reading it).
            let (mut served, mut limited) = (0usize, 0usize);
            for _ in 0..PER_CONNECTION / 100 {
                let window: Vec<_> = (0..100)
                    .map(|_| c.sign_next(Call::History { limit: 50 }))
                    .collect();
                for r in &window {
                    c.send_only(r).await.unwrap_or_else(|e| unreachable!("{e}"));
                }
                for _ in 0..window.len() {
                    match c.read_response().await.map(|r| r.result) {
                        Ok(Ok(_)) => served += 1,
                        Ok(Err(ApiError::RateLimited { .. })) => limited += 1,
                        other => unreachable!("{other:?}"),
                    }
                }
            }
            (served, limited)
        }));
    }
    // And one connection that sends and never reads what comes back.
    let mut stuck = connect(&w.socket, AppKey::from_seed(flood_seed)).await;
    let stuck = tokio::spawn(async move {
        for _ in 0..2_000 {
            let r = stuck.sign_next(Call::History { limit: 500 });
            if stuck.send_only(&r).await.is_err() {
                break;
            }
        }
        stuck
    });
    // Meanwhile another app sells, and B pays through the wallet's network.
    let mut pos = connect(&w.socket, pos_key).await;
    let invoice = pos
        .create_invoice("EUR", 12, "during the flood", 10)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    let req = offst_core::invite::PaymentRequest::parse(&invoice.request, common::now_ms())
        .unwrap_or_else(|e| unreachable!("{e}"));
    payer::pay(
        &w.b.wallet,
        &w.b.driver,
        &req,
        4,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .unwrap_or_else(|e| unreachable!("B could not pay during the flood: {e}"));
    let outcome = pos
        .wait_until_settled(invoice.invoice, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(outcome.state, InvoiceState::Paid);
    let (mut served, mut limited) = (0, 0);
    for f in floods {
        let (s, l) = f.await.unwrap_or_else(|e| unreachable!("{e}"));
        served += s;
        limited += l;
    }
    assert_eq!(
        served + limited,
        4 * PER_CONNECTION,
        "every request answered"
    );
    stuck.abort();
    assert!(limited > 0, "the flood was limited ({served} served)");
    // The flood's refusals are recorded once per burst, not once each.
    let rows = recorded(&w.a, EventKind::AppRefused, "app \"flood\"");
    assert!(
        rows >= 1 && rows < limited,
        "{rows} rows for {limited} refusals"
    );
}
