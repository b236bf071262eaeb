//! The relay over real QUIC on loopback: store and forward, order, acknowledgements, every
//! abuse bound, and hostile clients, while the relay keeps serving everyone else.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use offst_core::net::client::{ClientError, RelayConnection, client_endpoint};
use offst_core::net::frame::{read_frame, write_frame};
use offst_core::net::tls;
use offst_core::net::wire::{self, FromRelay, MAX_FRAME_SIZE, Refusal};
use offst_core::protocol::identity::{Identity, NodeId};
use offst_relay::{Config, RelayHandle};
use tokio::time::timeout;

mod common;
use common::scratch;

const T: Duration = Duration::from_secs(10);

/// A running relay and its data directory, removed after the relay when dropped.
struct TestRelay {
    handle: RelayHandle,
    _dir: common::Scratch,
}

impl std::ops::Deref for TestRelay {
    type Target = RelayHandle;
    fn deref(&self) -> &RelayHandle {
        &self.handle
    }
}

impl TestRelay {
    async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

async fn relay(name: &str, tweak: impl FnOnce(&mut Config)) -> TestRelay {
    let dir = scratch(name);
    let mut c = config_in(&dir);
    tweak(&mut c);
    TestRelay {
        handle: offst_relay::start(c).await.unwrap(),
        _dir: dir,
    }
}

/// A relay's settings: any free port on loopback, its data in `dir`.
fn config_in(dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

fn who(seed: u8) -> Identity {
    Identity::from_seed([seed; 32])
}

async fn connect(r: &RelayHandle, seed: u8) -> RelayConnection {
    let ep = client_endpoint().unwrap();
    timeout(T, RelayConnection::connect(&ep, r.addr, r.key, &who(seed)))
        .await
        .unwrap()
        .unwrap()
}

async fn next(c: &mut RelayConnection) -> offst_core::net::client::Delivery {
    timeout(T, c.recv())
        .await
        .expect("mail in time")
        .expect("connection open")
}

/// Connects as `seed` and checks that nothing is delivered: the mailbox is empty.
async fn assert_mailbox_empty(r: &RelayHandle, seed: u8) {
    let mut c = connect(r, seed).await;
    assert!(
        timeout(Duration::from_millis(300), c.recv()).await.is_err(),
        "mailbox should be empty"
    );
}

#[tokio::test]
async fn mail_waits_for_an_offline_wallet_and_is_deleted_once_acknowledged() {
    let r = relay("offline", |_| {}).await;
    let a = connect(&r, 1).await;
    let b_id = who(2).id();
    for i in 0..5u8 {
        a.send(b_id, vec![i; 100]).await.unwrap();
    }
    // b connects later and gets everything, in order.
    let mut b = connect(&r, 2).await;
    for i in 0..5u8 {
        let d = next(&mut b).await;
        assert_eq!(d.envelope, vec![i; 100]);
        if i == 2 {
            b.ack(d.seq).await.unwrap();
        }
    }
    b.close().await;
    // What was not acknowledged comes again; what was, does not.
    let mut b = connect(&r, 2).await;
    assert_eq!(next(&mut b).await.envelope, vec![3u8; 100]);
    let last = next(&mut b).await;
    assert_eq!(last.envelope, vec![4u8; 100]);
    b.ack(last.seq).await.unwrap();
    b.close().await;
    assert_mailbox_empty(&r, 2).await;
    r.shutdown().await;
}

#[tokio::test]
async fn mail_is_pushed_to_a_connected_wallet_in_order_per_sender() {
    let r = relay("push", |_| {}).await;
    let mut b = connect(&r, 2).await;
    let a = connect(&r, 1).await;
    let c = connect(&r, 3).await;
    let b_id = who(2).id();
    let (sa, sc) = tokio::join!(
        async {
            for i in 0..300u32 {
                a.send(b_id, [b"a".as_slice(), &i.to_be_bytes()].concat())
                    .await
                    .unwrap();
            }
        },
        async {
            for i in 0..300u32 {
                c.send(b_id, [b"c".as_slice(), &i.to_be_bytes()].concat())
                    .await
                    .unwrap();
            }
        }
    );
    let ((), ()) = (sa, sc);
    let (mut na, mut nc) = (0u32, 0u32);
    for _ in 0..600 {
        let d = next(&mut b).await;
        let n = u32::from_be_bytes(d.envelope[1..5].try_into().unwrap());
        match d.envelope[0] {
            b'a' => {
                assert_eq!(n, na);
                na += 1;
            }
            _ => {
                assert_eq!(n, nc);
                nc += 1;
            }
        }
        b.ack(d.seq).await.unwrap();
    }
    assert_eq!((na, nc), (300, 300));
    r.shutdown().await;
}

#[tokio::test]
async fn a_wrong_relay_key_is_refused_by_name() {
    let r = relay("wrongkey", |_| {}).await;
    let ep = client_endpoint().unwrap();
    let impostor_pin = who(99).id();
    let err = match timeout(
        T,
        RelayConnection::connect(&ep, r.addr, impostor_pin, &who(1)),
    )
    .await
    .unwrap()
    {
        Err(e) => e,
        Ok(_) => panic!("connected to a relay with another key"),
    };
    let text = err.to_string();
    assert!(matches!(err, ClientError::Connect { .. }), "{text}");
    assert!(text.contains("wrong relay key"), "{text}");
    assert!(text.contains(&r.key.to_string()), "{text}");
    // The relay still serves wallets that pin it.
    let a = connect(&r, 1).await;
    a.send(who(2).id(), vec![1]).await.unwrap();
    r.shutdown().await;
}

/// A raw stream to the relay, to misbehave with.
async fn raw(
    r: &RelayHandle,
    seed: u8,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let ep = client_endpoint().unwrap();
    let cfg = tls::client_config(&who(seed), r.key).unwrap();
    let conn = ep
        .connect_with(cfg, r.addr, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    write_frame(
        &mut send,
        &wire::encode(&offst_core::net::wire::ToRelay::Hello),
    )
    .await
    .unwrap();
    (conn, send, recv)
}

async fn expect_error_and_close(
    conn: &quinn::Connection,
    recv: &mut quinn::RecvStream,
    needle: &str,
) {
    let frame = timeout(T, read_frame(recv, MAX_FRAME_SIZE))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match wire::decode::<FromRelay>(&frame).unwrap() {
        FromRelay::Error { reason } => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let closed = timeout(T, conn.closed()).await.unwrap();
    assert!(closed.to_string().contains("2"), "{closed}");
}

#[tokio::test]
async fn oversized_and_malformed_frames_close_only_that_connection() {
    let r = relay("hostile-frames", |_| {}).await;
    let mut good = connect(&r, 2).await;
    // Oversized: announce 100 MiB.
    let (conn, mut send, mut recv) = raw(&r, 7).await;
    send.write_all(&(100u32 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    expect_error_and_close(&conn, &mut recv, "over the").await;
    // Malformed: a frame that is not a message.
    let (conn, mut send, mut recv) = raw(&r, 8).await;
    write_frame(&mut send, &[0xff, 0xff, 0xff, 0x13, 0x37])
        .await
        .unwrap();
    expect_error_and_close(&conn, &mut recv, "malformed").await;
    // Everyone else is served.
    let a = connect(&r, 1).await;
    a.send(who(2).id(), b"still here".to_vec()).await.unwrap();
    assert_eq!(next(&mut good).await.envelope, b"still here");
    r.shutdown().await;
}

#[tokio::test]
async fn an_envelope_over_the_size_bound_is_refused() {
    let r = relay("toolarge", |_| {}).await;
    let a = connect(&r, 1).await;
    let max = offst_core::net::wire::MAX_ENVELOPE_SIZE;
    let err = a.send(who(2).id(), vec![0; max + 1]).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused(Refusal::TooLarge { size, max: m })
                if size == max as u64 + 1 && m == max as u64
        ),
        "{err}"
    );
    // The largest envelope a wallet seals is taken.
    a.send(who(2).id(), vec![0; max]).await.unwrap();
    r.shutdown().await;
}

#[tokio::test]
async fn a_flood_from_one_sender_is_throttled_and_others_go_on() {
    let r = relay("flood", |c| {
        c.sender_burst = 50;
        c.sender_rate_per_sec = 10;
    })
    .await;
    let flooder = connect(&r, 1).await;
    let to = who(2).id();
    let mut refused = 0;
    let mut retry = 0;
    for _ in 0..200 {
        match flooder.send(to, vec![1; 10]).await {
            Ok(()) => {}
            Err(ClientError::Refused(Refusal::SenderQuota { retry_after_ms })) => {
                refused += 1;
                retry = retry_after_ms;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 140, "only {refused} refused");
    assert!(retry > 0);
    // Another sender is not affected.
    let other = connect(&r, 3).await;
    for _ in 0..20 {
        other.send(to, vec![2; 10]).await.unwrap();
    }
    r.shutdown().await;
}

#[tokio::test]
async fn a_full_mailbox_refuses_until_mail_is_picked_up() {
    let r = relay("full", |c| c.max_mailbox_messages = 10).await;
    let a = connect(&r, 1).await;
    let to = who(2).id();
    for _ in 0..10 {
        a.send(to, vec![1; 10]).await.unwrap();
    }
    let err = a.send(to, vec![1; 10]).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused(Refusal::MailboxFull { messages: 10, .. })
        ),
        "{err}"
    );
    let mut b = connect(&r, 2).await;
    let mut last = 0;
    for _ in 0..10 {
        last = next(&mut b).await.seq;
    }
    b.ack(last).await.unwrap();
    // Deletion is asynchronous to the ack; it lands within a batch.
    let mut ok = false;
    for _ in 0..100 {
        if a.send(to, vec![1; 10]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the mailbox never had room again");
    r.shutdown().await;
}

#[tokio::test]
async fn accepted_mail_survives_a_restart_on_the_same_directory() {
    let dir = scratch("restart");
    let cfg = config_in(&dir);
    let r = offst_relay::start(cfg.clone()).await.unwrap();
    let key: NodeId = r.key;
    let a = connect(&r, 1).await;
    a.send(who(2).id(), b"kept".to_vec()).await.unwrap();
    r.shutdown().await;
    let r = offst_relay::start(cfg).await.unwrap();
    assert_eq!(r.key, key, "the relay keeps its key across restarts");
    let mut b = connect(&r, 2).await;
    assert_eq!(next(&mut b).await.envelope, b"kept");
    r.shutdown().await;
}

#[tokio::test]
async fn a_connected_wallet_gets_mail_before_the_commit_and_a_failed_commit_loses_nothing() {
    // Mail written at once (`hold_ms = 0`): an acknowledgement before the commit would answer
    // it otherwise (the test below).
    let r = relay("before-commit", |c| c.hold_ms = 0).await;
    let mut b = connect(&r, 2).await;
    let a = connect(&r, 1).await;
    let b_id = who(2).id();
    // Once b got this, its delivery is under way. (Not acknowledged yet: the deletion could
    // be the batch the writer holds below, ahead of the envelope it should hand out.)
    a.send(b_id, b"first".to_vec()).await.unwrap();
    let first = next(&mut b).await;
    assert_eq!(first.envelope, b"first");

    // With the relay's commit held, b already has the envelope and a has no answer yet.
    r.hold_commits(true);
    let send = a.send(b_id, b"lost".to_vec());
    tokio::pin!(send);
    let early = tokio::select! {
        d = next(&mut b) => d,
        answer = &mut send => panic!("answered before the commit: {answer:?}"),
    };
    assert_eq!(early.envelope, b"lost");
    b.ack(early.seq).await.unwrap();

    // The commit fails: a hears that the relay did not take it.
    r.fail_next_commits(1);
    r.hold_commits(false);
    let answer = timeout(T, send).await.unwrap();
    assert!(
        matches!(answer, Err(ClientError::Refused(Refusal::Unavailable))),
        "{answer:?}"
    );
    // a sends it again, and one more: both reach b under new numbers, so b's acknowledgement
    // of the lost copy deletes neither (b itself refuses the copy by its envelope id).
    a.send(b_id, b"lost".to_vec()).await.unwrap();
    a.send(b_id, b"next".to_vec()).await.unwrap();
    let again = next(&mut b).await;
    assert_eq!(again.envelope, b"lost");
    assert!(again.seq > early.seq, "{} after {}", again.seq, early.seq);
    let last = next(&mut b).await;
    assert_eq!(last.envelope, b"next");
    assert!(last.seq > again.seq);
    b.ack(last.seq).await.unwrap();
    b.close().await;
    // Everything acknowledged is gone, on disk too.
    assert_mailbox_empty(&r, 2).await;
    r.shutdown().await;
}

#[tokio::test]
async fn mail_its_recipient_acknowledges_while_held_is_answered_and_never_written() {
    let r = relay("held-acked", |_| {}).await;
    r.set_hold(Duration::from_secs(3600));
    let mut b = connect(&r, 2).await;
    let a = connect(&r, 1).await;
    let b_id = who(2).id();
    // Held: b gets it, a waits for b.
    let send = a.send(b_id, b"held".to_vec());
    tokio::pin!(send);
    let got = tokio::select! {
        d = next(&mut b) => d,
        answer = &mut send => panic!("answered before b acknowledged: {answer:?}"),
    };
    assert_eq!(got.envelope, b"held");
    b.ack(got.seq).await.unwrap();
    timeout(T, send).await.unwrap().unwrap();
    assert_eq!(r.stats().never_written, 1, "it was never written");
    b.close().await;
    assert_mailbox_empty(&r, 2).await;
    r.shutdown().await;
}

#[tokio::test]
async fn held_mail_that_is_not_acknowledged_is_written_when_due_and_kept() {
    let dir = scratch("held-due");
    let cfg = Config {
        hold_ms: 50,
        ..config_in(&dir)
    };
    let r = offst_relay::start(cfg.clone()).await.unwrap();
    let mut b = connect(&r, 2).await;
    let a = connect(&r, 1).await;
    // b reads it and never acknowledges: it is written when due, and then a is answered.
    a.send(who(2).id(), b"kept".to_vec()).await.unwrap();
    assert_eq!(next(&mut b).await.envelope, b"kept");
    b.close().await;
    r.shutdown().await;
    let r = offst_relay::start(cfg).await.unwrap();
    let mut b = connect(&r, 2).await;
    assert_eq!(next(&mut b).await.envelope, b"kept");
    r.shutdown().await;
}

#[tokio::test]
async fn mail_for_another_relay_is_forwarded_when_it_comes_up() {
    use offst_core::net::wire::RelayAddress;
    // r2 is down at first: it is started once (for its key) and stopped, and comes up again
    // on the same address later. That address is outside the range the system hands out for
    // port 0: a port from that range, free while r2 is down, could be taken meanwhile by any
    // other socket of the tests running beside this one (this failed CI once, 2026-12-06).
    let dir2 = scratch("fed-r2");
    let cfg2 = Config {
        listen: common::port_outside_the_ephemeral_range(),
        data_dir: dir2.to_path_buf(),
        ..Config::default()
    };
    let r2 = offst_relay::start(cfg2.clone()).await.unwrap();
    let (addr2, key2) = (r2.addr, r2.key);
    r2.shutdown().await;
    let r1 = relay("fed-r1", |_| {}).await;
    let a = connect(&r1, 1).await;
    let b_id = who(2).id();
    let there = RelayAddress {
        addr: addr2.to_string(),
        key: key2,
    };
    for i in 0..20u8 {
        a.forward(b_id, there.clone(), vec![i; 50]).await.unwrap();
    }
    // r2 comes up on the same address; r1's forwarder retries and delivers, in order.
    let r2 = offst_relay::start(Config {
        listen: addr2,
        ..cfg2
    })
    .await
    .unwrap();
    let mut b = connect(&r2, 2).await;
    for i in 0..20u8 {
        let d = timeout(Duration::from_secs(30), b.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.envelope, vec![i; 50]);
        b.ack(d.seq).await.unwrap();
    }
    // r1 counts an envelope as forwarded when r2's answer reaches it, which can be after b
    // has read it from r2: wait until r1's queue is empty (until 2026-12-04 this asserted at
    // once and failed about once in many runs on a loaded machine, seeing 1 of 20).
    let start = std::time::Instant::now();
    while r1.waiting_to_forward().await.unwrap() > 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "still queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r1.stats().forwarded, 20);
    // Forwarding to oneself is a plain send.
    let mut a2 = connect(&r1, 3).await;
    let here = RelayAddress {
        addr: r1.addr.to_string(),
        key: r1.key,
    };
    a.forward(who(3).id(), here, b"local".to_vec())
        .await
        .unwrap();
    assert_eq!(next(&mut a2).await.envelope, b"local");
    r1.shutdown().await;
    r2.shutdown().await;
}

#[tokio::test]
async fn envelopes_for_another_relay_go_on_at_once_in_order_and_leave_nothing_queued() {
    use offst_core::net::wire::RelayAddress;
    // Both relays up: envelopes are sent on as they arrive (cut-through), while the first
    // relay's commit is under way; once the second relay holds them they leave the queue.
    let dir1 = scratch("ct-r1");
    let cfg1 = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir1.to_path_buf(),
        ..Config::default()
    };
    let r1 = offst_relay::start(cfg1.clone()).await.unwrap();
    let r2 = relay("ct-r2", |_| {}).await;
    let a = connect(&r1, 1).await;
    let mut b = connect(&r2, 2).await;
    let there = RelayAddress {
        addr: r2.addr.to_string(),
        key: r2.key,
    };
    let items: Vec<_> = (0..200u16)
        .map(|i| (who(2).id(), Some(there.clone()), i.to_be_bytes().repeat(20)))
        .collect();
    for answer in a.send_all(items).await {
        answer.unwrap();
    }
    for i in 0..200u16 {
        let d = next(&mut b).await;
        assert_eq!(d.envelope, i.to_be_bytes().repeat(20), "in order");
        b.ack(d.seq).await.unwrap();
    }
    let start = std::time::Instant::now();
    while r1.waiting_to_forward().await.unwrap() > 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "still queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r1.stats().forwarded, 200);
    // Nothing is left to send twice after a restart.
    r1.shutdown().await;
    let r1 = offst_relay::start(cfg1).await.unwrap();
    assert_eq!(r1.waiting_to_forward().await.unwrap(), 0);
    r1.shutdown().await;
    r2.shutdown().await;
}

/// A test CA and a certificate it signed for `localhost`, as PEM files in `dir`; returns the
/// CA's certificate (the root a client must trust).
fn test_ca(dir: &std::path::Path) -> rustls::pki_types::CertificateDer<'static> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Offst test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    std::fs::write(dir.join("chain.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    ca.der().clone()
}

async fn discover_err(addr: &str, roots: &[rustls::pki_types::CertificateDer<'static>]) -> String {
    let ep = client_endpoint().unwrap();
    let roots = tls::web_roots(roots).unwrap();
    match offst_core::net::client::discover(&ep, addr, roots, &who(7)).await {
        Err(e @ ClientError::Discover { .. }) => e.to_string(),
        Err(e) => panic!("not a discovery error: {e}"),
        Ok(r) => panic!("discovered {r:?}"),
    }
}

#[tokio::test]
async fn a_relay_with_a_ca_certificate_is_found_by_name_then_pinned() {
    let dir = scratch("ca-cert");
    let ca = test_ca(&dir);
    let r = relay("ca-cert-relay", |c| {
        c.tls_certificate = Some(dir.join("chain.pem"));
        c.tls_private_key = Some(dir.join("key.pem"));
    })
    .await;
    let by_name = format!("localhost:{}", r.addr.port());
    // Trusting the CA, a client that knows only the name learns the relay's key, proven on
    // the connection itself.
    let ep = client_endpoint().unwrap();
    let found = offst_core::net::client::discover(
        &ep,
        &by_name,
        tls::web_roots(std::slice::from_ref(&ca)).unwrap(),
        &who(7),
    )
    .await
    .unwrap();
    assert_eq!(found.key, r.key);
    assert_eq!(found.addr, by_name);
    // From then on it pins that key, by name, like any wallet; the same relay serves both.
    let pinned = RelayConnection::connect_to(&ep, &found, &who(7))
        .await
        .unwrap();
    pinned.send(who(8).id(), vec![1, 2, 3]).await.unwrap();
    let mut b = connect(&r, 8).await;
    assert_eq!(next(&mut b).await.envelope, vec![1, 2, 3]);

    // Not trusting the CA (Mozilla's roots only): refused, saying why.
    let text = discover_err(&by_name, &[]).await;
    assert!(text.contains("UnknownIssuer"), "{text}");
    // The certificate is for "localhost", not for the address.
    let text = discover_err(&r.addr.to_string(), std::slice::from_ref(&ca)).await;
    assert!(text.contains("not valid for name"), "{text}");

    // A proof made on another connection (what a man in the middle would forward) does not
    // verify against this connection's binding.
    let config = tls::web_client_config(&who(7), tls::web_roots(&[ca]).unwrap()).unwrap();
    let mut proofs = Vec::new();
    for _ in 0..2 {
        let conn = ep
            .connect_with(config.clone(), r.addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let binding = tls::identity_binding(&conn).unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_frame(&mut send, &wire::encode(&wire::ToRelay::Identify))
            .await
            .unwrap();
        loop {
            let frame = read_frame(&mut recv, MAX_FRAME_SIZE)
                .await
                .unwrap()
                .unwrap();
            if let FromRelay::Identity { key, proof } = wire::decode(&frame).unwrap() {
                assert_eq!(key, r.key);
                proofs.push((binding, proof));
                break;
            }
        }
    }
    let [(b1, p1), (b2, p2)] = [proofs[0], proofs[1]];
    assert_ne!(b1, b2);
    tls::check_identity(r.key, &b1, &p1).unwrap();
    tls::check_identity(r.key, &b2, &p2).unwrap();
    assert!(tls::check_identity(r.key, &b1, &p2).is_err());
    assert!(tls::check_identity(who(9).id(), &b1, &p1).is_err());
    r.shutdown().await;
}

#[tokio::test]
async fn a_relay_without_a_ca_certificate_cannot_be_found_by_name() {
    let r = relay("no-ca", |_| {}).await;
    let text = discover_err(&format!("localhost:{}", r.addr.port()), &[]).await;
    assert!(text.contains("invalid peer certificate"), "{text}");
    r.shutdown().await;
}

#[tokio::test]
async fn unusable_ca_certificate_settings_stop_the_relay_with_the_file_named() {
    let dir = scratch("ca-bad");
    test_ca(&dir);
    let start = |chain: Option<&str>, key: Option<&str>| {
        let c = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("data"),
            tls_certificate: chain.map(|f| dir.join(f)),
            tls_private_key: key.map(|f| dir.join(f)),
            ..Config::default()
        };
        async move {
            match offst_relay::start(c).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("started"),
            }
        }
    };
    let text = start(Some("chain.pem"), None).await;
    assert!(text.contains("go together"), "{text}");
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let text = start(Some("empty.pem"), Some("key.pem")).await;
    assert!(
        text.contains("empty.pem") && text.contains("no certificate"),
        "{text}"
    );
    let text = start(Some("chain.pem"), Some("chain.pem")).await;
    assert!(
        text.contains("chain.pem") && text.contains("private key"),
        "{text}"
    );
    // A key that is not the certificate's.
    rcgen_other_key(&dir.join("other.pem"));
    let text = start(Some("chain.pem"), Some("other.pem")).await;
    assert!(text.contains("does not fit"), "{text}");
}

fn rcgen_other_key(path: &std::path::Path) {
    std::fs::write(path, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
}

mod index {
    use super::*;
    use offst_core::protocol::amount::{Currency, Rate};
    use offst_core::routing::{CapacityReport, ReportEntry, RouteError, RouteQuery, SignedReport};

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    /// `who(seed)`'s report: for each (friend seed, send, recv).
    fn report(seed: u8, rate: Rate, friends: &[(u8, u64, u64)], issued_ms: u64) -> SignedReport {
        CapacityReport {
            node: who(seed).id(),
            issued_ms,
            expires_ms: issued_ms + 600_000,
            rate,
            entries: friends
                .iter()
                .map(|(f, send, recv)| ReportEntry {
                    friend: who(*f).id(),
                    currency: eur(),
                    send: *send,
                    recv: *recv,
                })
                .collect(),
        }
        .sign(&who(seed))
    }

    fn query(from: u8, to: u8, amount: u64) -> RouteQuery {
        RouteQuery {
            from: who(from).id(),
            to: who(to).id(),
            currency: eur(),
            amount,
            max_routes: 4,
            avoid: Vec::new(),
            first_hops: None,
        }
    }

    /// Ask until the answer is a route set (federation takes a moment), or time runs out.
    async fn routes_eventually(
        c: &RelayConnection,
        q: RouteQuery,
    ) -> offst_core::routing::RouteSet {
        let start = std::time::Instant::now();
        loop {
            match c.find_routes(q.clone()).await {
                Ok(set) => return set,
                Err(ClientError::Route(_)) if start.elapsed() < T => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no routes in time: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn reports_federate_and_routes_cross_relays() {
        // Two relays, each the other's index peer: start one, learn its key, start the other.
        let one_dir = scratch("index-one");
        let one_key = offst_relay::server::load_or_create_identity(&one_dir)
            .unwrap()
            .id();
        // A port no port-0 socket of another test can take before `one` binds it.
        let port = common::port_outside_the_ephemeral_range().port();
        let two = relay("index-two", |c| {
            c.index_peers = vec![format!("{one_key}@127.0.0.1:{port}")];
        })
        .await;
        let one = relay("index-one-unused", |c| {
            c.data_dir = one_dir.to_path_buf();
            c.listen = format!("127.0.0.1:{port}").parse().unwrap();
            c.index_peers = vec![format!("{}@{}", two.key, two.addr)];
        })
        .await;
        let rate = Rate {
            base: 2,
            ppm: 10_000,
        };
        let now = now_ms();
        // a (on relay one) — m — s (both on relay two).
        let a = connect(&one, 1).await;
        a.report(report(1, Rate::default(), &[(2, 500, 500)], now))
            .await
            .unwrap();
        let m = connect(&two, 2).await;
        m.report(report(2, rate, &[(1, 500, 500), (3, 300, 300)], now))
            .await
            .unwrap();
        let s = connect(&two, 3).await;
        s.report(report(3, Rate::default(), &[(2, 300, 300)], now))
            .await
            .unwrap();
        // Relay one learns m's and s's reports from relay two, and the other way round.
        let set = routes_eventually(&a, query(1, 3, 100)).await;
        assert_eq!(set.routes.len(), 1);
        assert_eq!(
            set.routes[0].route,
            vec![who(1).id(), who(2).id(), who(3).id()]
        );
        assert_eq!(set.routes[0].fees, vec![3]); // 2 + 1 % of 100
        let back = routes_eventually(&s, query(3, 1, 100)).await;
        assert_eq!(back.routes[0].route.len(), 3);
        // More than the hop m -> s carries: no route, with the most that fits.
        assert_eq!(set.routes[0].capacity, 300);
        match a.find_routes(query(1, 3, 301)).await {
            Err(ClientError::Route(RouteError::NoRoute { reachable, .. })) => {
                assert_eq!(reachable, 300)
            }
            other => panic!("expected no route, got {other:?}"),
        }
        // A newer report replaces the older one everywhere: m can now pass on only 50.
        m.report(report(2, rate, &[(1, 500, 500), (3, 50, 300)], now + 1))
            .await
            .unwrap();
        let start = std::time::Instant::now();
        loop {
            match a.find_routes(query(1, 3, 100)).await {
                Err(ClientError::Route(RouteError::NoRoute { .. })) => break,
                Ok(_) if start.elapsed() < T => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("the newer report did not reach relay one: {other:?}"),
            }
        }
        assert_eq!(one.index_stats().unwrap().reporting, 3);
        assert_eq!(two.index_stats().unwrap().reporting, 3);
        one.shutdown().await;
        two.shutdown().await;
    }

    #[tokio::test]
    async fn bad_reports_strangers_and_a_relay_without_index_are_refused_by_name() {
        let r = relay("index-hostile", |_| {}).await;
        let a = connect(&r, 1).await;
        let now = now_ms();
        // Someone else's report.
        let err = a
            .report(report(2, Rate::default(), &[(1, 5, 5)], now))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("only its own"), "{err}");
        // A forged one.
        let mut forged = report(1, Rate::default(), &[(2, 5, 5)], now);
        forged.report.entries[0].send = 1_000_000;
        let err = a.report(forged).await.unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
        // An expired one.
        let err = a
            .report(report(1, Rate::default(), &[(2, 5, 5)], now - 700_000))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
        // Other wallets' reports from a wallet, not a peer relay.
        let err = a
            .reports(vec![report(1, Rate::default(), &[(2, 5, 5)], now)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Refused(Refusal::NotAPeer)),
            "{err}"
        );
        // Unknown wallets and bad queries.
        let err = a.find_routes(query(1, 9, 10)).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Route(RouteError::UnknownNode(_))),
            "{err}"
        );
        let err = a.find_routes(query(1, 1, 10)).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Route(RouteError::BadQuery(_))),
            "{err}"
        );
        // The relay still serves mail and reports.
        a.report(report(1, Rate::default(), &[(2, 5, 5)], now))
            .await
            .unwrap();
        a.send(who(2).id(), vec![7]).await.unwrap();
        r.shutdown().await;

        let off = relay("index-off", |c| c.index = false).await;
        let a = connect(&off, 1).await;
        let err = a.find_routes(query(1, 2, 10)).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Refused(Refusal::IndexOff)),
            "{err}"
        );
        assert!(off.index_stats().is_none());
        off.shutdown().await;
    }
}
