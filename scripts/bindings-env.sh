# Settings shared by the bindings scripts. Source it; do not run it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Toolchains fetched for the bindings (kotlinc from npm, a Debian 13 chroot with Swift) live
# outside the clone, so a second run on the same machine skips setting them up.
TOOLS="${OFFST_TOOLS:-/var/cache/offst-tools}"
KOTLIN_VERSION="2.4.20"
KOTLIN_HOME="$TOOLS/kotlin-$KOTLIN_VERSION/package"
CHROOT="$TOOLS/swift-trixie"
LIBNAME=offst_ffi
LIBDIR="$ROOT/target/debug"
GEN="$ROOT/target/bindings"          # generated Kotlin and Swift
BUILD="$ROOT/target/bindings-build"  # compiled foreign code
JNA=/usr/share/java/jna.jar
ts() { date +%s; }
took() { echo "[$1: $(( $(date +%s) - $2 )) s]"; }
