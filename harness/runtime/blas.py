"""Where a static OpenBLAS for an arch lives on this host (Debian's libopenblas-pthread-dev).

The board runtime links it into libhilt_blas.so, so bundles whose matmuls call `hilt.blas.*` run on a
board that has no BLAS package. The host's own arch comes installed; a foreign arch's package is
unpacked under /opt/hilt/openblas/<arch> (scripts/system-deps.sh does aarch64), not installed through
multiarch, whose libc would shadow the cross toolchain's under qemu-user. Debian 12 has none for
riscv64 (a Debian-ports arch there), so riscv64 runtimes are built without BLAS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOTS = ("/opt/hilt/openblas/{arch}", "/")  # unpacked foreign packages, then installed ones


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


def find_static_blas(arch: str, roots: tuple[str, ...] = ROOTS) -> StaticBlas | None:
    """The static OpenBLAS for `arch` from the first root that holds it, or None."""
    triplet = f"{arch}-linux-gnu"
    for pattern in roots:
        root = Path(pattern.format(arch=arch))
        library = root / "usr" / "lib" / triplet / "openblas-pthread" / "libopenblas.a"
        include = root / "usr" / "include" / triplet / "openblas-pthread"
        config = include / "openblas_config.h"
        if library.is_file() and (include / "cblas.h").is_file() and config.is_file():
            text = config.read_text(errors="replace")
            match = re.search(r'#define OPENBLAS_VERSION "\s*OpenBLAS\s+([^\s"]+)', text)
            version = match.group(1) if match else "unknown"
            return StaticBlas(library=library, include=include, version=version)
    return None
