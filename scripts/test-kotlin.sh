#!/usr/bin/env bash
# Compile the generated Kotlin, the Android app's view models and the tests with kotlinc, and
# run them on the JVM against the debug library. Needs OFFST_TEST_RELAY (a relay's
# KEY@HOST:PORT); scripts/test-bindings.sh sets it.
source "$(dirname "$0")/bindings-env.sh"
cd "$ROOT"
L="$KOTLIN_HOME/lib"
CP="$JNA:$L/kotlinx-coroutines-core-jvm.jar:$L/kotlin-test.jar"
rm -rf "$BUILD/kotlin"; mkdir -p "$BUILD/kotlin"
t=$(ts)
sources=("$GEN"/kotlin/org/offst/ffi/offst_ffi.kt bindings/tests/kotlin/*.kt)
if [ -d android/viewmodels/src/main/kotlin ]; then
  mapfile -t vm < <(find android/viewmodels/src/main/kotlin android/viewmodels/src/test/kotlin -name '*.kt' 2>/dev/null | sort)
  sources+=("${vm[@]}")
fi
"$KOTLIN_HOME/bin/kotlinc" -J-Xmx2g -nowarn -cp "$CP" "${sources[@]}" -d "$BUILD/kotlin/classes"
took kotlinc "$t"
t=$(ts)
timeout 600 java -Djna.library.path="$LIBDIR" -cp "$BUILD/kotlin/classes:$CP:$L/kotlin-stdlib.jar" WalletTestKt
took "kotlin tests" "$t"
