#!/usr/bin/env bash
# System packages the integration tests need (real sshd, socat ptys, cross toolchains, qemu-user), and
# static OpenBLAS for the host and aarch64 board runtimes (libhilt_blas; Debian 12 has no riscv64 one).
set -euo pipefail
PKGS="openssh-server openssh-client socat qemu-user-static binfmt-support debootstrap g++ g++-aarch64-linux-gnu g++-riscv64-linux-gnu binutils prometheus prometheus-pushgateway chromium postgresql libopenblas-pthread-dev"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing system packages:$missing (run as root or install them)" >&2
        exit 1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

# aarch64 OpenBLAS: the -dev package's files unpacked into a private root, not installed through
# multiarch. Installing it would pull libc6:arm64 into /lib/aarch64-linux-gnu, where qemu-user finds it
# before the cross toolchain's libc, and a libc that does not match the cross ld.so hangs threads.
BLAS_ROOT=/opt/hilt/openblas/aarch64
if [ ! -f "$BLAS_ROOT/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.a" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing $BLAS_ROOT (aarch64 OpenBLAS; run as root)" >&2
        exit 1
    fi
    dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -q; }
    tmp=$(mktemp -d)
    chmod 777 "$tmp"  # apt-get download writes as _apt
    (cd "$tmp" && apt-get download -q libopenblas-pthread-dev:arm64 >/dev/null)
    mkdir -p "$BLAS_ROOT"
    dpkg-deb -x "$tmp"/libopenblas-pthread-dev_*_arm64.deb "$BLAS_ROOT"
    rm -rf "$tmp"
fi
