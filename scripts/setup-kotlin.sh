#!/usr/bin/env bash
# Kotlin on the JVM without Gradle: JNA from Debian, kotlinc (with the coroutines and
# kotlin-test jars) from npm's kotlin-compiler package. Skips what is already there.
source "$(dirname "$0")/bindings-env.sh"
command -v java >/dev/null || { echo "missing java: install a JDK (17 or newer)" >&2; exit 1; }
if [ ! -f "$JNA" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libjna-java >/dev/null
fi
if [ ! -x "$KOTLIN_HOME/bin/kotlinc" ]; then
  command -v npm >/dev/null || { echo "missing npm: install Node.js and npm" >&2; exit 1; }
  mkdir -p "$TOOLS/kotlin-$KOTLIN_VERSION"
  (cd "$TOOLS/kotlin-$KOTLIN_VERSION" && npm pack --silent "kotlin-compiler@$KOTLIN_VERSION" >/dev/null \
     && tar xzf "kotlin-compiler-$KOTLIN_VERSION.tgz" && rm "kotlin-compiler-$KOTLIN_VERSION.tgz")
fi
"$KOTLIN_HOME/bin/kotlinc" -version 2>&1 | tail -n 1
