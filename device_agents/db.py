"""Database connections that outlive a server restart: engines that ping pooled connections before
use, and a retry for the writes a measurement must not lose (the lease's release, the record)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_S = 120.0  # how long a write waits for the database to come back (a restart takes seconds)


def make_engine(url: str) -> Engine:
    """An engine whose pooled connections are pinged before use and replaced if the server dropped
    them: without it every process fails once per stale connection after a database restart."""
    kwargs: dict = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    return create_engine(url, pool_pre_ping=True, **kwargs)


def transient(exc: BaseException) -> bool:
    """A failure that waiting can cure: the server gone or restarting, not a bad statement."""
    if isinstance(exc, IntegrityError):
        return False
    return isinstance(exc, OperationalError) or bool(getattr(exc, "connection_invalidated", False))


def retrying(what: str, fn: Callable[[], T], within_s: float = RETRY_S) -> T:
    """`fn()`, again after a pause while the database is unreachable, for up to `within_s`."""
    deadline = time.monotonic() + within_s
    pause = 0.25
    while True:
        try:
            return fn()
        except SQLAlchemyError as exc:
            if not transient(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning("%s: database unreachable (%s); retrying in %.1f s", what, type(exc).__name__, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
