"""Shared test set-up.

- Integration tests are marked by folder so each half can run alone.
- One cache for the whole session: `$HILT_CACHE` points at a directory of the session's own (under
  pytest's base temp), so no test writes to the real `~/.cache/hilt`, and what tests must share
  (board runtime builds, demo models, rootfs images, bundles) is built once per session whatever
  the order the tests run in. Set `HILT_TEST_CACHE=DIR` to keep that cache across sessions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if (
            Path(str(item.fspath)).parent.name == "integration"
            or "integration" in Path(str(item.fspath)).parts
        ):
            item.add_marker(pytest.mark.integration)


def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("HILT_TEST_CACHE")
    cache = Path(chosen).expanduser().resolve() if chosen else tmp_path_factory.getbasetemp() / "hilt-cache"
    real = (Path.home() / ".cache" / "hilt").resolve()
    if cache == real or real in cache.parents:
        raise pytest.UsageError(f"HILT_TEST_CACHE={chosen} is the real hilt cache; point it elsewhere")
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@pytest.fixture(scope="session", autouse=True)
def hilt_session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's `$HILT_CACHE` (set for this process and every subprocess a test starts)."""
    cache = _session_cache(tmp_path_factory)
    before = os.environ.get("HILT_CACHE")
    os.environ["HILT_CACHE"] = str(cache)
    try:
        yield cache
    finally:
        if before is None:
            os.environ.pop("HILT_CACHE", None)
        else:
            os.environ["HILT_CACHE"] = before
