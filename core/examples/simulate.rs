//! Run the seeded network simulator, or the seed story of six friends.
//!
//! ```text
//! cargo run --release -p offst-core --example simulate -- --nodes 200 --payments 20000 --seed 7 --json
//! cargo run --release -p offst-core --example simulate -- --story seed
//! ```

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use offst_core::sim::{self, SimConfig};
use offst_core::story;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Story {
    /// The six-person network A–F from the seed story.
    Seed,
    /// The milkman and the baker.
    Milkman,
}

/// Simulate an Offst network: random friends, payments over chains, a delaying, reordering,
/// duplicating network with offline nodes; then check every invariant.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Number of payments.
    #[arg(long, default_value_t = 1000)]
    payments: usize,
    /// Seed; the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of the time nodes are offline while their mail waits at the relay.
    #[arg(long, default_value_t = 0.3)]
    offline_fraction: f64,
    /// Probability that a message is delivered twice.
    #[arg(long, default_value_t = 0.05)]
    duplicate_fraction: f64,
    /// Fraction of nodes restored once from an older snapshot (a backup) mid-run.
    #[arg(long, default_value_t = 0.0)]
    restore_fraction: f64,
    /// Fraction of friendships reset by hand mid-run (proposed by one friend, accepted by the
    /// other).
    #[arg(long, default_value_t = 0.0)]
    reset_fraction: f64,
    /// Fraction of payments whose buyer gives up at a random moment before committing.
    #[arg(long, default_value_t = 0.0)]
    abandon_fraction: f64,
    /// Longest message delay, in simulated ms.
    #[arg(long, default_value_t = 300)]
    max_delay_ms: u64,
    /// Simulated ms between two payments' starts (at least 1). Small values with long delays
    /// make bursts: more operations queue in a channel than one move carries.
    #[arg(long, default_value_t = 20)]
    payment_interval_ms: u64,
    /// Keep a store per node fed only with each step's changes, and check at the end that it
    /// rebuilds every node exactly (slower: every node is visited after every event).
    #[arg(long)]
    verify_persistence: bool,
    /// Print the report as one JSON object (last line).
    #[arg(long)]
    json: bool,
    /// Run a story instead of a random network.
    #[arg(long, value_enum)]
    story: Option<Story>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(which) = args.story {
        let result = match which {
            Story::Seed => story::six_friends().map(|t| t.to_string()),
            Story::Milkman => story::milkman_and_baker().map(|t| t.to_string()),
        };
        return match result {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("story failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = SimConfig {
        nodes: args.nodes,
        payments: args.payments,
        seed: args.seed,
        offline_fraction: args.offline_fraction,
        duplicate_fraction: args.duplicate_fraction,
        restore_fraction: args.restore_fraction,
        reset_fraction: args.reset_fraction,
        abandon_fraction: args.abandon_fraction,
        max_delay_ms: args.max_delay_ms,
        payment_interval_ms: args.payment_interval_ms,
        verify_persistence: args.verify_persistence,
        ..SimConfig::default()
    };
    if !args.json {
        eprintln!(
            "simulating {} nodes, {} payments, seed {}, offline {:.0}% of the time ...",
            cfg.nodes,
            cfg.payments,
            cfg.seed,
            cfg.offline_fraction * 100.0
        );
    }
    let started = Instant::now();
    let mut report = sim::run(cfg);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    let ok = report.invariant_violations == 0;
    if args.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("could not write the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!(
            "nodes {}  friendships {}  payments {}",
            report.nodes, report.friendships, report.payments
        );
        println!(
            "completed {} ({} over several routes)  cancelled {} ({} refused up front)",
            report.completed, report.completed_multi_route, report.cancelled, report.refused
        );
        println!(
            "messages {}  bytes {}  moves {}  offers {}  resyncs {}  restores {}  resets {}",
            report.messages,
            report.bytes,
            report.moves,
            report.offers,
            report.resyncs,
            report.restores,
            report.resets
        );
        println!(
            "invariant violations {}  disagreeing pairs {}  sum of balances {}  frozen left {}",
            report.invariant_violations,
            report.disagreeing_pairs,
            report.sum_of_balances,
            report.frozen_left
        );
        println!(
            "simulated {} s in {} ms",
            report.simulated_ms / 1000,
            report.elapsed_ms
        );
    }
    for v in &report.violations {
        eprintln!("violation: {v}");
    }
    if !ok {
        eprintln!("replay with --seed {}", report.seed);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
