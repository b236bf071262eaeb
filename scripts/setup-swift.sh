#!/usr/bin/env bash
# Swift on Linux: Debian 12 has none, Debian 13 has swiftlang 6.0.3. A minimal Debian 13 chroot
# with it, made once (about 2.6 GB) and kept in $OFFST_TOOLS.
source "$(dirname "$0")/bindings-env.sh"
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; fi
if [ ! -x "$CHROOT/usr/bin/swiftc" ]; then
  rm -rf "$CHROOT"
  mkdir -p "$TOOLS"
  debootstrap --variant=minbase trixie "$CHROOT" http://deb.debian.org/debian >/dev/null
  cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
  # apt inside needs /proc and /dev; a private mount namespace drops them on exit.
  unshare --mount --propagation private -- bash -ec "
    mount -t proc proc '$CHROOT/proc'
    mount --rbind /dev '$CHROOT/dev'
    chroot '$CHROOT' apt-get update -qq
    chroot '$CHROOT' env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends swiftlang libc6-dev >/dev/null
    chroot '$CHROOT' apt-get clean
  "
fi
# swiftc finds its runtime through /proc/self/exe: /proc must be mounted for every command.
unshare --mount --propagation private -- bash -ec "mount -t proc proc '$CHROOT/proc'; chroot '$CHROOT' swiftc --version" 2>&1 | head -n 1
