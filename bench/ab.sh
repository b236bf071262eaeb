#!/usr/bin/env bash
# Compare the CPU per payment of two builds of offst-bench by running them at the same time.
#
#   bench/ab.sh BIN_A BIN_B ROUNDS [scenario args...]
#   bench/ab.sh /tmp/bench-before target/release/offst-bench 6 chain --hops 4 --payments 6000
#
# This machine's cores change speed from one minute to the next, so two builds run one after
# the other differ by about 10 % for no reason of their own. Run side by side, both see the
# same minute: the ratio of their CPU per payment then varies by about 1.5 % a round
# (docs/benchmarks.md, "Comparing two builds side by side"). Each round starts both; which
# one starts first alternates, so the order cannot favour either.
#
# Prints each round and the mean and range of B's CPU per payment over A's. Needs python3.
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
a=$1
b=$2
rounds=$3
shift 3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq 1 "$rounds"); do
    if [ $((i % 2)) -eq 1 ]; then first=a; else first=b; fi
    if [ $first = a ]; then
        "$a" "$@" --json 2>/dev/null | tail -n 1 >"$out/a.json" &
        pa=$!
        "$b" "$@" --json 2>/dev/null | tail -n 1 >"$out/b.json" &
        pb=$!
    else
        "$b" "$@" --json 2>/dev/null | tail -n 1 >"$out/b.json" &
        pb=$!
        "$a" "$@" --json 2>/dev/null | tail -n 1 >"$out/a.json" &
        pa=$!
    fi
    wait "$pa" "$pb"
    python3 - "$out" "$first" <<'PY' | tee -a "$out/rounds"
import json, sys
d, first = sys.argv[1], sys.argv[2]
a = json.load(open(d + "/a.json"))
b = json.load(open(d + "/b.json"))
for name, j in (("A", a), ("B", b)):
    if j["invariant_violations"] != 0:
        sys.exit(f"{name}: {j['invariant_violations']} invariant violations")
ca = a["cpu_sec_per_payment"] * 1e3
cb = b["cpu_sec_per_payment"] * 1e3
print(f"ratio {cb / ca:.4f}  A {ca:.3f} ms {a['payments_per_sec']:.0f}/s p50 {a['p50_ms']:.1f} ms  "
      f"B {cb:.3f} ms {b['payments_per_sec']:.0f}/s p50 {b['p50_ms']:.1f} ms  "
      f"(started first: {first.upper()})")
PY
done
python3 - "$out/rounds" <<'PY'
import sys
r = [float(l.split()[1]) for l in open(sys.argv[1])]
print(f"B/A CPU per payment over {len(r)} rounds: mean {sum(r) / len(r):.4f}, "
      f"range {min(r):.4f}-{max(r):.4f}")
PY
