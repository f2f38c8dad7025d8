"""Pack this package into one zipapp, `agent-<sha16>.pyz`, that transports copy to boards and run.

The bytes are deterministic (sorted entries, fixed timestamps and modes, stored uncompressed so
no zlib version shows through), so the same sources always give the same hash and a board that
already has this agent is not sent it again. Standard library only, like the rest of the agent.

Besides the package, the archive carries the stdlib-only leaf modules the agent imports from below
it (`LEAF_MODULES`: the file and tree hash), so host and board hash with the same code.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipapp
import zipfile
from typing import Dict, Optional

import hilt_base.hashing

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
ARCHIVE_PACKAGE = "device_agents/agent"  # the same import path on the board as on the host
INTERPRETER = "/usr/bin/env python3"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
# archive name -> source file: the leaf modules outside this package that the agent imports
LEAF_MODULES = {
    "hilt_base/__init__.py": os.path.join(os.path.dirname(hilt_base.hashing.__file__), "__init__.py"),
    "hilt_base/hashing.py": hilt_base.hashing.__file__,
}
ROOT_FILES = {
    "__main__.py": b"import sys\n\nfrom device_agents.agent.serve import main\n\nsys.exit(main())\n",
    "device_agents/__init__.py": b'"""Only the hilt agent: this archive is what runs on a board."""\n',
}


def _sources(source: str) -> Dict[str, bytes]:
    """Archive name -> bytes of every .py file of the package (no caches, nothing else)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for name in filenames:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, source).replace(os.sep, "/")
            with open(path, "rb") as f:
                out[ARCHIVE_PACKAGE + "/" + rel] = f.read()
    return out


def archive_bytes(source: str = PACKAGE_DIR) -> bytes:
    """The .pyz bytes for the package at `source` (a copy of it, in tests)."""
    files = dict(ROOT_FILES)
    for name, path in LEAF_MODULES.items():
        with open(path, "rb") as f:
            files[name] = f.read()
    files.update(_sources(source))
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # unix, whatever packs it
            zf.writestr(info, files[name])
    raw.seek(0)
    out = io.BytesIO()
    zipapp.create_archive(raw, out, interpreter=INTERPRETER)
    return out.getvalue()


def build_pyz(dest_dir: str, source: Optional[str] = None) -> str:
    """Write `agent-<sha16>.pyz` into `dest_dir` unless it is already there; its path."""
    data = archive_bytes(source or PACKAGE_DIR)
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = os.path.join(dest_dir, "agent-%s.pyz" % digest)
    if not os.path.isfile(path):
        os.makedirs(dest_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".agent-", suffix=".tmp")  # threads pack too
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    return path
