#!/usr/bin/env bash
# Build the offst-ffi library and generate its Kotlin and Swift bindings (library mode) into
# target/bindings/{kotlin,swift}.
source "$(dirname "$0")/bindings-env.sh"
cd "$ROOT"
t=$(ts)
cargo build --locked -p offst-ffi -p uniffi-bindgen
took "cargo build offst-ffi" "$t"
rm -rf "$GEN"
for lang in kotlin swift; do
  "$ROOT/target/debug/uniffi-bindgen" generate --library "$LIBDIR/lib$LIBNAME.so" \
    --language "$lang" --out-dir "$GEN/$lang" --no-format
done
find "$GEN" -type f | sort
