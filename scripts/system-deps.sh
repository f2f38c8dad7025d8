#!/usr/bin/env bash
# System packages the integration tests need (real sshd, socat ptys, cross toolchains, qemu-user), and
# static OpenBLAS for the host and aarch64 board runtimes (libhilt_blas; Debian 12 has no riscv64 one).
set -euo pipefail
PKGS="openssh-server openssh-client socat qemu-user-static binfmt-support debootstrap g++ g++-aarch64-linux-gnu g++-riscv64-linux-gnu binutils prometheus prometheus-pushgateway chromium postgresql libopenblas-pthread-dev libopenblas-pthread-dev:arm64"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing system packages:$missing (run as root or install them)" >&2
        exit 1
    fi
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
