#!/usr/bin/env bash
# Build OffstKit (the generated Swift, the wrapper and the view models) with SwiftPM in the
# Debian 13 chroot, and run its XCTest suite against the debug library and a real relay
# (OFFST_TEST_RELAY; scripts/test-bindings.sh sets it). The package is assembled in
# target/bindings-build, so the source tree stays clean.
source "$(dirname "$0")/bindings-env.sh"
cd "$ROOT"
: "${OFFST_TEST_RELAY:?set OFFST_TEST_RELAY to the relay address KEY@HOST:PORT}"
PKG="$BUILD/swift/OffstKit"
mkdir -p "$PKG"
# Keep SwiftPM's .build between runs (it is much faster warm); refresh everything else.
find "$PKG" -mindepth 1 -maxdepth 1 ! -name .build -exec rm -rf {} +
cp -r ios/OffstKit/Package.swift ios/OffstKit/Sources ios/OffstKit/Tests "$PKG/"
cp "$GEN/swift/${LIBNAME}FFI.h" "$PKG/Sources/${LIBNAME}FFI/"
cp "$GEN/swift/${LIBNAME}FFI.modulemap" "$PKG/Sources/${LIBNAME}FFI/module.modulemap"
cp "$GEN/swift/$LIBNAME.swift" "$PKG/Sources/OffstFFI/"
mkdir -p "$CHROOT/src"
rel=${PKG#"$ROOT/"}
t=$(ts)
unshare --mount --propagation private -- bash -ec "
  mount -t proc proc '$CHROOT/proc'
  mount --rbind /dev '$CHROOT/dev'
  mount --bind '$ROOT' '$CHROOT/src'
  chroot '$CHROOT' env OFFST_TEST_RELAY='$OFFST_TEST_RELAY' HOME=/tmp bash -ec '
    cd /src/$rel
    L=/src/target/debug
    swift build --build-tests -Xlinker -L\$L 2>&1 | grep -v \"^\\[\" || true
    test -d .build/debug || { echo \"swift build failed\" >&2; exit 1; }
    LD_LIBRARY_PATH=\$L timeout 600 swift test --skip-build --disable-swift-testing
  '
"
took "swift build and test" "$t"
