#!/usr/bin/env bash
# `cargo check` of offst-ffi for Android (aarch64-linux-android) and iOS (aarch64-apple-ios).
# The Rust code is checked for the real targets. Some dependencies build C code (ring, SQLite)
# in their build scripts even for a check. Neither the Android NDK nor an iOS SDK exists on
# Linux, so that C is compiled with Debian's clang against Debian's aarch64 headers. The objects
# are never linked: a check needs only the build scripts to succeed. A real phone build uses the
# NDK (cargo-ndk) or Xcode; see docs/mobile.md.
source "$(dirname "$0")/bindings-env.sh"
cd "$ROOT"
need=()
command -v clang >/dev/null || need+=(clang)
command -v llvm-ar >/dev/null || need+=(llvm)
[ -d /usr/aarch64-linux-gnu/include ] || need+=(libc6-dev-arm64-cross)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
c_flags="--target=aarch64-linux-gnu -isystem /usr/aarch64-linux-gnu/include -Wno-unused-command-line-argument"
for target in aarch64-linux-android aarch64-apple-ios; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  t=$(ts)
  v=${target//-/_}
  env "CC_$v=clang" "AR_$v=llvm-ar" "CFLAGS_$v=$c_flags" SDKROOT=/usr/aarch64-linux-gnu \
    cargo check --locked -q -p offst-ffi --target "$target"
  echo "offst-ffi checks for $target"
  took "cargo check $target" "$t"
done
