#!/bin/sh
# Installs what the build and tests need from Debian's registry, if missing (idempotent, quiet when
# everything is there). Needs root or sudo for apt-get.
set -e
pkgs="cmake make gcc g++ pkg-config libgtest-dev libjansson-dev zlib1g-dev libopenblas-dev gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user clang libclang-rt-14-dev"
missing=""
for p in $pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
