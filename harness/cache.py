"""Where hilt keeps what it builds itself, and the file hash every cache keys on.

Deliberately free of heavy imports (no torch, no TVM): the agent transports, the farm and the
runtime builder need a directory and a hash, not a model stack.
"""

from __future__ import annotations

import os
from pathlib import Path

from hilt_base import hashing


def cache_root() -> Path:
    """`$HILT_CACHE` if set, else `~/.cache/hilt`; one root so tests can redirect everything."""
    env = os.environ.get("HILT_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "hilt"
    return root.expanduser()


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes: the agent's own function (`hilt_base.hashing`), so host and board
    hash alike."""
    return hashing.sha256_file(str(path))
