"""Per-arch compilers and emulators: what cross-builds for an arch and what runs its binaries here."""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import CompileError

ARCHES = ("x86_64", "aarch64", "riscv64")


@dataclass(frozen=True)
class Toolchain:
    """How to build for and run on one arch from this host."""

    arch: str
    prefix: str  # '' builds natively
    extra_libs: list[str] = field(default_factory=list)
    emulator: list[str] = field(default_factory=list)  # argv prefix to run a binary ([] = natively)

    @property
    def cc(self) -> str:
        return f"{self.prefix}gcc"

    @property
    def cxx(self) -> str:
        return f"{self.prefix}g++"

    @property
    def strip(self) -> str:
        """binutils' strip for the arch (symbol tables are not loaded on the board: dropped)."""
        return f"{self.prefix}strip"

    @property
    def native(self) -> bool:
        return not self.prefix


_QEMU = {
    "aarch64": ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"],
    "riscv64": ["qemu-riscv64-static", "-cpu", "rv64,v=true", "-L", "/usr/riscv64-linux-gnu"],
}


def host_arch() -> str:
    """This machine's arch in hilt's spelling."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def toolchain_for(arch: str) -> Toolchain:
    """The toolchain that builds `arch` binaries here; raises if the arch is unknown."""
    if arch not in ARCHES:
        raise CompileError(f"unknown arch '{arch}'; choose one of {', '.join(ARCHES)}")
    if arch == host_arch():
        return Toolchain(arch=arch, prefix="")
    extra = ["atomic"] if arch == "riscv64" else []
    return Toolchain(arch=arch, prefix=f"{arch}-linux-gnu-", extra_libs=extra, emulator=list(_QEMU[arch]))


def require_tools(tc: Toolchain) -> None:
    """Fail early, naming the Debian package, when a compiler is missing."""
    for tool in (tc.cc, tc.cxx, tc.strip):
        if shutil.which(tool) is None:
            cross = tc.arch.replace("_", "-")
            if tool == tc.strip:
                pkg = f"binutils-{cross}-linux-gnu" if tc.prefix else "binutils"
            else:
                pkg = f"g++-{cross}-linux-gnu" if tc.prefix else "g++"
            raise CompileError(f"compiler {tool} not found; install it (apt-get install {pkg})")


def require_emulator(tc: Toolchain) -> list[str]:
    """The argv prefix that runs `tc.arch` binaries here, checked to exist."""
    if not tc.emulator:
        return []
    if shutil.which(tc.emulator[0]) is None:
        raise CompileError(f"{tc.emulator[0]} not found; install qemu-user-static")
    sysroot = Path(tc.emulator[-1])
    if not sysroot.is_dir():
        raise CompileError(f"{sysroot} missing; install the {tc.arch} cross toolchain (libc for {tc.arch})")
    return list(tc.emulator)
