"""Where hilt keeps what it builds itself (demo data, demo models, runtimes)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$HILT_CACHE` if set, else `~/.cache/hilt`; one root so tests can redirect everything."""
    env = os.environ.get("HILT_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "hilt"
    return root.expanduser()
