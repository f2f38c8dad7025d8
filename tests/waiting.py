"""Polling for a condition that another process makes true, with a clear failure when it does not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout: float, what: str, poll: float = 0.05) -> T:
    """The first truthy value of `pred()`; an AssertionError naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"{what}: not reached within {timeout:.0f} s")
