//! Protocol benchmarks (single thread, no I/O, no storage):
//! - signing a move (state hash + ed25519 signature), as the sender does;
//! - verifying and applying a move, as the receiver does;
//! - whole payments through a 4-hop chain (buyer, 3 mediators, seller) on an in-process
//!   network that encodes and decodes every message;
//! - a relay frame carrying a 1 KiB envelope, encoded and decoded.
//!
//! `cargo bench -p offst-core`; figures and method in `docs/benchmarks.md`.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::channel::{Channel, Op};
use offst_core::protocol::identity::{Identity, NodeId};
use offst_core::sim::local::LocalNet;

fn pair() -> (Identity, Identity) {
    let a = Identity::from_seed([1; 32]);
    let b = Identity::from_seed([2; 32]);
    // Move 1 is sent by the smaller id.
    if a.id() < b.id() { (a, b) } else { (b, a) }
}

/// The floor under every figure below: raw ed25519 and BLAKE3 on this machine.
fn crypto(c: &mut Criterion) {
    let (first, _) = pair();
    let value = vec![7u8; 200];
    let sig = first.sign("bench", &value);
    let id = first.id();
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ed25519 sign (200-byte value)", |b| {
        b.iter(|| first.sign("bench", &value))
    });
    g.bench_function(
        "ed25519 verify (200-byte value, key decoded each time)",
        |b| b.iter(|| id.verify("bench", &value, &sig).expect("valid")),
    );
    let kib = vec![1u8; 1024];
    g.bench_function("blake3 of 1 KiB", |b| {
        b.iter(|| offst_core::protocol::identity::Hash::of_bytes("bench", &kib))
    });
    // The same 1 KiB as the protocol hashes its values: 32 ids of 32 bytes, encoded by
    // postcard into the hasher. The difference from the line above is the encoding's cost,
    // which the crypto floor does not count. The protocol's ids go eight bytes a call
    // (`identity::serialize_fixed`); plain arrays, one call per byte, as all ids did until
    // 2026-12-08.
    let ids: Vec<offst_core::protocol::identity::Hash> = (0..32u8)
        .map(|i| offst_core::protocol::identity::Hash([i; 32]))
        .collect();
    g.bench_function(
        "blake3 of 32 ids (1 KiB), encoded as the protocol hashes values",
        |b| b.iter(|| offst_core::protocol::identity::Hash::of("bench", &ids)),
    );
    let arrays: Vec<[u8; 32]> = (0..32u8).map(|i| [i; 32]).collect();
    g.bench_function("blake3 of 32 plain byte arrays (1 KiB), encoded", |b| {
        b.iter(|| offst_core::protocol::identity::Hash::of("bench", &arrays))
    });
    g.finish();
}

fn moves(c: &mut Criterion) {
    let (first, second) = pair();
    let hours = Currency::new("hours").expect("currency");
    let op = Op::SetLimit {
        currency: hours,
        limit: 100,
    };
    let mut g = c.benchmark_group("move");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign (build one-operation move)", |b| {
        b.iter_batched(
            || {
                let mut ch = Channel::new(first.id(), second.id());
                ch.enqueue(op.clone());
                ch
            },
            |mut ch| ch.build_move(&first, false),
            BatchSize::SmallInput,
        )
    });
    let mut sender = Channel::new(first.id(), second.id());
    sender.enqueue(op.clone());
    let m = sender.build_move(&first, false).message.expect("a move");
    g.bench_function("verify and apply one-operation move", |b| {
        b.iter_batched(
            || (Channel::new(second.id(), first.id()), m.clone()),
            |(mut ch, m)| ch.receive_move(m).expect("valid"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn chain_payments(c: &mut Criterion) {
    let hours = Currency::new("hours").expect("currency");
    let mut net = LocalNet::new();
    net.encode = true;
    let path: Vec<NodeId> = (1..=5u8)
        .map(|s| net.add_node(s, Rate { base: 1, ppm: 1000 }))
        .collect();
    for w in path.windows(2) {
        net.befriend(w[0], w[1], &hours, u64::MAX >> 3)
            .expect("befriend");
    }
    let mut nonce = 0u64;
    let mut g = c.benchmark_group("payment");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    g.bench_function("4-hop chain, in-process", |b| {
        b.iter(|| {
            nonce += 1;
            net.buy_along(&path, &hours, 10, nonce).expect("payment")
        })
    });
    g.finish();
}

/// A relay frame carrying a 1 KiB envelope (about the size of a move), encoded and decoded:
/// each envelope is framed and read about four times on its way (wallet, relays, wallet).
fn frames(c: &mut Criterion) {
    use offst_core::net::wire::{self, FromRelay};
    let frame = FromRelay::Deliver {
        seq: 1_000_000,
        received_ms: 1_800_000_000_000,
        envelope: vec![0xa5; 1024],
    };
    let bytes = wire::encode(&frame);
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode a delivery of 1 KiB", |b| {
        b.iter(|| wire::encode(std::hint::black_box(&frame)))
    });
    g.bench_function("decode a delivery of 1 KiB", |b| {
        b.iter(|| wire::decode::<FromRelay>(std::hint::black_box(&bytes)).unwrap())
    });
    g.finish();
}

/// The state hash a move signs, with as many requests pending as one channel may hold
/// (`MAX_PENDING_REQUESTS`), as a mediator's channels have them under load.
fn state_hash(c: &mut Criterion) {
    use offst_core::protocol::bounds::MAX_PENDING_REQUESTS;
    use offst_core::protocol::channel::{ChannelState, Pending, Side};
    use offst_core::protocol::payment::{HashedLock, InvoiceId, Request, RequestId, RequestTerms};
    let buyer = Identity::from_seed([100; 32]);
    let route: Vec<NodeId> = (100..103u8)
        .map(|i| Identity::from_seed([i; 32]).id())
        .collect();
    let hours = Currency::new("hours").expect("currency");
    let mut state = ChannelState::default();
    state.lines.insert(hours, Default::default());
    for i in 0..MAX_PENDING_REQUESTS as u16 {
        let mut id = [7u8; 32];
        id[..2].copy_from_slice(&i.to_be_bytes());
        let terms = RequestTerms {
            request_id: RequestId(id),
            invoice_id: InvoiceId([1; 32]),
            currency: hours,
            src_hashed_lock: HashedLock([2; 32]),
            route: route.clone(),
            fees: vec![1],
            dest_payment: 5,
            total_dest_payment: 5,
        };
        let pending = Pending {
            request: Request::sign(&buyer, terms).expect("request"),
            payer: Side::First,
            amount: 6,
            response: None,
        };
        state.pending.insert(RequestId(id), pending.into());
    }
    let mut g = c.benchmark_group("state");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        format!("hash with {MAX_PENDING_REQUESTS} requests pending"),
        |b| b.iter(|| state.hash()),
    );
    g.finish();
}

criterion_group!(benches, crypto, moves, chain_payments, frames, state_hash);
criterion_main!(benches);
