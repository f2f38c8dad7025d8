"""Shared test set-up: integration tests are marked by folder so each half can run alone."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if (
            Path(str(item.fspath)).parent.name == "integration"
            or "integration" in Path(str(item.fspath)).parts
        ):
            item.add_marker(pytest.mark.integration)
