#!/usr/bin/env bash
# Build liboffst_ffi.so for Android phones and the Kotlin bindings into the Gradle project.
# Needs the Android NDK (ANDROID_NDK_HOME) and cargo-ndk; not available on the project's CI
# machine, so this is not run there (see docs/mobile.md).
source "$(dirname "$0")/bindings-env.sh"
cd "$ROOT"
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to the Android NDK}"
command -v cargo-ndk >/dev/null || cargo install cargo-ndk
rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 -o android/app/src/main/jniLibs \
  build --locked --profile mobile -p offst-ffi
bash scripts/gen-bindings.sh   # target/bindings/kotlin, which android/viewmodels compiles
(cd android && gradle :app:assembleRelease)
