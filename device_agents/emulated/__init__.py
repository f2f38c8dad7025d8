"""Emulated aarch64/riscv64 boards on the host (qemu-user chroots, or qemu-system VMs) over SSH and serial."""

from .farm import ARCHES, BoardStatus, UpResult, down, parse_arches, reboot, status, up
from .paths import FarmPaths, cache_root

__all__ = [
    "ARCHES",
    "BoardStatus",
    "FarmPaths",
    "UpResult",
    "cache_root",
    "down",
    "parse_arches",
    "reboot",
    "status",
    "up",
]
