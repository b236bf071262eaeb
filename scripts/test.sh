#!/usr/bin/env bash
# Every test Offst has, in the order a failure is cheapest to find. The README's test command;
# CI (.ci/run) runs exactly this. Needs the Rust toolchain (cargo, rustfmt, clippy), a JDK, npm,
# and root (apt-get, debootstrap) for the bindings' toolchains, which it installs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# Incremental compilation only pays when the same tree is built again; here it would only take
# gigabytes of disk.
export CARGO_INCREMENTAL=0

step() { printf '\n== %s\n' "$*"; }

for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install the Rust toolchain (rustup) with rustfmt and clippy" >&2; exit 1; }
done

# The builds of a whole run take about 14 GB under target/ (measured from a clean clone), and
# the bindings' toolchains about 3 GB more the first time: say so now rather than fail an hour
# in with "No space left on device". OFFST_SKIP_DISK_CHECK=1 skips the check.
if [ -z "${OFFST_SKIP_DISK_CHECK:-}" ]; then
  need_kb=$((15 * 1024 * 1024))
  [ -d "${OFFST_TOOLS:-/var/cache/offst-tools}/swift-trixie" ] || need_kb=$((need_kb + 3 * 1024 * 1024))
  have_target_kb=$( (du -sk target 2>/dev/null || echo 0) | awk '{print $1}')
  free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  if [ $((free_kb + have_target_kb)) -lt "$need_kb" ]; then
    printf 'not enough disk space: the tests need about %d GB free here (for target/ and the bindings'"'"' toolchains), and %d GB is.\nFree some (old clones'"'"' target/ directories: cargo clean), or set OFFST_SKIP_DISK_CHECK=1 to try anyway.\n' \
      $((need_kb / 1024 / 1024)) $(((free_kb + have_target_kb) / 1024 / 1024)) >&2
    exit 1
  fi
fi

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lint (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit, property, hostile-input, bounds, regression, simulator, wallet and crash-storm tests"
log=$(mktemp)
# The tests get a temporary directory of their own: whatever they leave in it is a leak (wallets,
# relays' databases) that would fill the disk of a machine running them again and again.
scratch=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$scratch"' EXIT
TMPDIR="$scratch" cargo test --workspace --locked 2>&1 | tee "$log"
left=$(find "$scratch" -mindepth 1 -maxdepth 1 | sed "s|^$scratch/||" | sort | head -n 20)
[ -z "$left" ] || { printf 'the tests left files in their temporary directory:\n%s\n' "$left" >&2; exit 1; }
passed=$(grep -Eo 'test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')

step "benchmarks build"
cargo bench --workspace --locked --no-run

step "offst demo (the main job): two relays, six wallets, four payments"
# Exits non-zero unless every payment completes and the balances sum to zero.
demo=$(cargo run --release --locked -q --bin offst -- demo --json | tail -n 1)
echo "$demo"
echo "$demo" | grep -q '"payments_completed":4' || { echo "the demo did not complete its 4 payments" >&2; exit 1; }
echo "$demo" | grep -q '"sum":0' || { echo "the demo's balances do not sum to zero" >&2; exit 1; }

step "bindings: Kotlin (JVM) and Swift (XCTest) suites against a real relay; phone targets"
# Sets up kotlinc, JNA, a Debian 13 chroot with Swift and the phone targets when missing (kept
# in $OFFST_TOOLS, default /var/cache/offst-tools); see docs/mobile.md.
blog=$(mktemp)
trap 'rm -f "$log" "$blog"; rm -rf "$scratch"' EXIT
bash scripts/test-bindings.sh 2>&1 | tee "$blog"
kotlin=$(grep -Eo '^[0-9]+ passed, [0-9]+ failed' "$blog" | tail -n 1)
swift=$(grep -Eo 'Executed [0-9]+ tests?, with [0-9]+ failures?' "$blog" | tail -n 1)
[ -n "$kotlin" ] && [ -n "$swift" ] || { echo "a bindings suite did not report" >&2; exit 1; }

step "seed story through the protocol alone"
cargo run --release --locked -q -p offst-core --example simulate -- --story seed

step "simulator acceptance run: 200 nodes, 20000 payments, seed 7 (about a minute)"
# Exits non-zero on any broken invariant; prints one JSON object as its last line.
cargo run --release --locked -q -p offst-core --example simulate -- \
  --nodes 200 --payments 20000 --seed 7 --json | tail -n 1

step "simulator with restored backups: 40 nodes, 800 payments, 30% of nodes restored"
cargo run --release --locked -q -p offst-core --example simulate -- \
  --nodes 40 --payments 800 --seed 2026 --restore-fraction 0.3 --offline-fraction 0.6 \
  --duplicate-fraction 0.2 --json | tail -n 1

step "crash storm: 30 SIGKILLs of a process running three wallets, seed 11"
# Exits non-zero if anything was lost; prints one JSON object as its last line.
cargo run --release --locked -q -p offst-tests --bin crash-storm -- --kills 30 --seed 11 --json | tail -n 1

step "load generator: 500 payments through 3 mediators and 2 relays, then 200 past a mediator that comes and goes"
# Exits non-zero if an invariant broke (channels disagree, credit frozen, sum not zero).
cargo run --release --locked -q -p offst-bench -- chain --hops 4 --payments 500 --json | tail -n 1
cargo run --release --locked -q -p offst-bench -- offline --hops 3 --payments 200 --inflight 8 --json | tail -n 1

printf '\nall checks passed\nKotlin: %s\nSwift: %s\n%s passed, %s failed\n' "$kotlin" "$swift" "$passed" "$failed"
