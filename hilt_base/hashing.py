"""The file hash and the tree hash: one definition for the host and the board.

Packed into the agent's zipapp, so it must stay standard library only and run on Python 3.9.
"""

from __future__ import annotations

import hashlib
from typing import Dict


def sha256_file(path: str) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks (bundles can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def tree_hash(files: Dict[str, str]) -> str:
    """Hash of a set of files (name -> sha256): sha256 over the sorted `name:sha256\\n` lines.

    The one definition of the bundle and runtime hash; hilt-runner computes the same.
    """
    text = "".join("%s:%s\n" % (name, files[name]) for name in sorted(files))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
