#!/usr/bin/env bash
# The bindings as the apps use them: build offst-ffi, generate Kotlin and Swift, start a real
# relay on loopback, run the Kotlin suite on the JVM and the Swift suite (XCTest) in a Debian 13
# chroot, and check that the library builds for Android and iOS. Sets up what is missing
# (kotlinc, JNA, the Swift chroot, the phone targets) and keeps it in $OFFST_TOOLS.
source "$(dirname "$0")/bindings-env.sh"
cd "$ROOT"
D="$ROOT/scripts"
T0=$(ts)
step() { printf '\n== %s\n' "$*"; }

step "build offst-ffi and generate the bindings"
bash "$D/gen-bindings.sh"
cargo build --locked -q -p offst --bin offst

step "a relay on loopback"
work=$(mktemp -d)
relay_pid=
cleanup() { [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkfifo "$work/out"
"$ROOT/target/debug/offst" relay --listen 127.0.0.1:0 --data-dir "$work/relay" > "$work/out" 2> "$work/relay.log" &
relay_pid=$!
exec 3< "$work/out"
read -r -t 60 word key addr <&3 || { echo "the relay did not start:" >&2; cat "$work/relay.log" >&2; exit 1; }
[ "$word" = relay ] || { echo "unexpected relay output: $word $key $addr" >&2; exit 1; }
export OFFST_TEST_RELAY="$key@$addr"
echo "relay $OFFST_TEST_RELAY"

step "Kotlin (JVM)"
bash "$D/setup-kotlin.sh"
bash "$D/test-kotlin.sh"

step "Swift (XCTest, Debian 13 chroot)"
bash "$D/setup-swift.sh"
bash "$D/test-swift.sh"

step "the library for phones (cargo check)"
bash "$D/check-phones.sh"

took "bindings, all" "$T0"
