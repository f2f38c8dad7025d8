"""The test session's one cache: never the real ~/.cache/hilt, the same for subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.cache import cache_root


def test_the_session_cache_is_not_the_real_one(hilt_session_cache: Path) -> None:
    assert cache_root() == hilt_session_cache == Path(os.environ["HILT_CACHE"])
    real = Path.home() / ".cache" / "hilt"
    assert cache_root().resolve() != real.resolve() and real.resolve() not in cache_root().resolve().parents
    assert hilt_session_cache.is_dir()


def test_subprocesses_share_the_session_cache(hilt_session_cache: Path) -> None:
    code = "from harness.cache import cache_root; print(cache_root())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert Path(out.stdout.strip()) == hilt_session_cache
