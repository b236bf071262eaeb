//! Route queries on a synthetic network: by default 100,000 wallets and 1,000,000 friendships,
//! every wallet reporting (signed, verified on the way in). Prints the report ingest rate and
//! the p50 / p99 / max time of a multi-route, fee-aware query.
//!
//! `cargo bench -p offst-core --bench routing [-- --nodes N --friendships M --queries Q
//! --seed S --json]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use offst_core::protocol::amount::{Currency, Rate};
use offst_core::protocol::identity::{Identity, NodeId};
use offst_core::routing::{CapacityReport, Index, ReportEntry, RouteError, RouteQuery};
use offst_core::sim::rng::SimRng;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = arg(&args, "--nodes", 100_000) as usize;
    let m = arg(&args, "--friendships", 1_000_000) as usize;
    let queries = arg(&args, "--queries", 2_000) as usize;
    let seed = arg(&args, "--seed", 1);
    let json = args.iter().any(|a| a == "--json");
    let mut rng = SimRng::new(seed);
    let eur = Currency::new("EUR").unwrap();

    let t = Instant::now();
    let ids: Vec<Identity> = (0..n)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s[8..16].copy_from_slice(&seed.to_le_bytes());
            Identity::from_seed(s)
        })
        .collect();
    let keys: Vec<NodeId> = ids.iter().map(Identity::id).collect();
    // A small world: half the friendships between near neighbours on a ring (people know
    // people near them), half between random wallets.
    let mut edges: HashSet<(u32, u32)> = HashSet::with_capacity(m);
    while edges.len() < m {
        let a = rng.below(n as u64) as u32;
        let b = if rng.chance(0.5) {
            ((u64::from(a) + rng.range(1, 50)) % n as u64) as u32
        } else {
            rng.below(n as u64) as u32
        };
        if a != b {
            edges.insert((a.min(b), a.max(b)));
        }
    }
    // Each direction: what can be sent (100 to 10,000), known to both ends alike.
    let mut edges: Vec<(u32, u32)> = edges.into_iter().collect();
    edges.sort_unstable();
    let mut adj: Vec<Vec<(u32, u64, u64)>> = vec![Vec::new(); n];
    for (a, b) in &edges {
        let ab = rng.range(100, 10_000);
        let ba = rng.range(100, 10_000);
        adj[*a as usize].push((*b, ab, ba));
        adj[*b as usize].push((*a, ba, ab));
    }
    let rates: Vec<Rate> = (0..n)
        .map(|_| Rate {
            base: rng.range(0, 10),
            ppm: rng.range(0, 5_000) as u32,
        })
        .collect();
    let build_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let reports: Vec<_> = (0..n)
        .map(|i| {
            CapacityReport {
                node: keys[i],
                issued_ms: 1_000,
                expires_ms: 3_600_000,
                rate: rates[i],
                entries: adj[i]
                    .iter()
                    .map(|(f, send, recv)| ReportEntry {
                        friend: keys[*f as usize],
                        currency: eur,
                        send: *send,
                        recv: *recv,
                    })
                    .collect(),
            }
            .sign(&ids[i])
        })
        .collect();
    let sign_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut index = Index::new();
    for r in &reports {
        index.apply(r, 2_000).unwrap();
    }
    let ingest_s = t.elapsed().as_secs_f64();
    drop(reports);
    let stats = index.stats();

    let mut times = Vec::with_capacity(queries);
    let mut found = 0u64;
    let mut no_route = 0u64;
    let mut routes_hist: BTreeMap<usize, u64> = BTreeMap::new();
    let mut hops = 0u64;
    let mut fees = 0u64;
    for _ in 0..queries {
        let a = rng.below(n as u64) as usize;
        let mut b = rng.below(n as u64 - 1) as usize;
        if b >= a {
            b += 1;
        }
        // Most payments fit one route; about a third need several.
        let amount = if rng.chance(0.65) {
            rng.range(10, 2_000)
        } else {
            rng.range(5_000, 40_000)
        };
        let q = RouteQuery {
            from: keys[a],
            to: keys[b],
            currency: eur,
            amount,
            max_routes: 8,
            avoid: Vec::new(),
            first_hops: None,
        };
        let t = Instant::now();
        let r = index.find_routes(&q);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if std::env::var("DBG").is_ok() {
            eprintln!(
                "query {amount}: {:.1} ms {:?}",
                times.last().unwrap(),
                r.as_ref().map(|s| s.routes.len())
            );
        }
        match r {
            Ok(set) => {
                found += 1;
                fees += set.total_fee;
                *routes_hist.entry(set.routes.len()).or_default() += 1;
                hops += set
                    .routes
                    .iter()
                    .map(|r| r.route.len() as u64 - 1)
                    .sum::<u64>();
            }
            Err(RouteError::NoRoute { .. }) => no_route += 1,
            Err(e) => panic!("{e}"),
        }
    }
    times.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0.0),
    );
    let multi: u64 = routes_hist
        .iter()
        .filter(|(k, _)| **k > 1)
        .map(|(_, v)| *v)
        .sum();
    let routes_total: u64 = routes_hist.iter().map(|(k, v)| *k as u64 * v).sum();
    if json {
        println!(
            "{{\"nodes\":{n},\"friendships\":{m},\"queries\":{queries},\"found\":{found},\"no_route\":{no_route},\"multi_route\":{multi},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"total_fees\":{fees},\"max_ms\":{max:.3},\"ingest_reports_per_sec\":{:.0}}}",
            n as f64 / ingest_s
        );
    } else {
        println!(
            "routing: {n} wallets, {m} friendships ({} hops known)",
            stats.hops
        );
        println!(
            "  set-up: graph {build_s:.1} s, signing reports {sign_s:.1} s, ingesting (verify + apply) {ingest_s:.1} s = {:.0} reports/s",
            n as f64 / ingest_s
        );
        println!(
            "  {queries} queries: {found} found ({multi} over several routes, {:.2} routes and {:.2} hops per route on average), {no_route} without a route",
            routes_total as f64 / found.max(1) as f64,
            hops as f64 / routes_total.max(1) as f64
        );
        println!("  query time: p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms");
        println!(
            "  fees of all answers together: {fees} (lower is better; compares search settings)"
        );
        println!("  routes per answer: {routes_hist:?}");
    }
}
