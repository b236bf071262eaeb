#!/usr/bin/env bash
# Build OffstFFI.xcframework (device and simulator) and put the Swift bindings into OffstKit.
# Needs macOS with Xcode; not available on the project's CI machine (see docs/mobile.md).
source "$(dirname "$0")/bindings-env.sh"
cd "$ROOT"
[ "$(uname)" = Darwin ] || { echo "build-ios.sh needs macOS with Xcode" >&2; exit 1; }
targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do cargo build --locked --profile mobile -p offst-ffi --target "$t"; done
bash scripts/gen-bindings.sh
out="$ROOT/target/ios"; rm -rf "$out"; mkdir -p "$out/headers" "$out/sim"
cp "$GEN/swift/${LIBNAME}FFI.h" "$out/headers/"
cp "$GEN/swift/${LIBNAME}FFI.modulemap" "$out/headers/module.modulemap"
lipo -create target/aarch64-apple-ios-sim/mobile/lib$LIBNAME.a target/x86_64-apple-ios/mobile/lib$LIBNAME.a \
  -output "$out/sim/lib$LIBNAME.a"
xcodebuild -create-xcframework \
  -library target/aarch64-apple-ios/mobile/lib$LIBNAME.a -headers "$out/headers" \
  -library "$out/sim/lib$LIBNAME.a" -headers "$out/headers" \
  -output "$out/OffstFFI.xcframework"
# OffstKit's generated sources (kept out of git).
cp "$GEN/swift/${LIBNAME}FFI.h" ios/OffstKit/Sources/${LIBNAME}FFI/
cp "$GEN/swift/${LIBNAME}FFI.modulemap" ios/OffstKit/Sources/${LIBNAME}FFI/module.modulemap
cp "$GEN/swift/$LIBNAME.swift" ios/OffstKit/Sources/OffstFFI/
echo "Built $out/OffstFFI.xcframework. In Xcode, link it to the OffstFFI target (docs/mobile.md)."
