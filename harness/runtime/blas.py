"""Where a static OpenBLAS for an arch lives on this host (Debian's multiarch libopenblas-pthread-dev).

The board runtime links it into libhilt_blas.so, so bundles whose matmuls call `hilt.blas.*` run on a
board that has no BLAS package. Debian 12 ships it for x86_64 and aarch64; riscv64 has none (it is a
Debian-ports arch there), so riscv64 runtimes are built without BLAS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/")


@dataclass(frozen=True)
class StaticBlas:
    """A static OpenBLAS: the archive, the directory with its cblas.h, and its version string."""

    library: Path
    include: Path
    version: str

    @property
    def label(self) -> str:
        """What the runtime record and the cache key say (the version and the archive's size)."""
        return f"openblas {self.version} ({self.library.stat().st_size} bytes)"


def find_static_blas(arch: str, root: Path = ROOT) -> StaticBlas | None:
    """The static OpenBLAS for `arch`, or None when the package is not installed."""
    triplet = f"{arch}-linux-gnu"
    library = root / "usr" / "lib" / triplet / "openblas-pthread" / "libopenblas.a"
    include = root / "usr" / "include" / triplet / "openblas-pthread"
    config = include / "openblas_config.h"
    if not (library.is_file() and (include / "cblas.h").is_file() and config.is_file()):
        return None
    match = re.search(
        r'#define OPENBLAS_VERSION "\s*OpenBLAS\s+([^\s"]+)', config.read_text(errors="replace")
    )
    return StaticBlas(library=library, include=include, version=match.group(1) if match else "unknown")
