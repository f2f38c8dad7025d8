"""The board pool: every measurement owns the machine it runs on for as long as it measures.

Leases are on a board's *machine* (`Board.machine`), not its name: two `local` boards, or every
emulated board of one farm, share one set of cores, so they measure one after another, while boards
on separate machines measure in parallel. `hilt bench`, `hilt nightly` and `hilt tune` all go through
`BoardPool.hold`. The pool's database is `--pool URL`, else `$HILT_POOL`, else the study's server
database (PostgreSQL) when there is one, else an SQLite file in the hilt cache shared by every hilt
process of this host. The agent's own lock on the board covers hosts that share no pool.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from device_agents.db import make_engine, retrying
from device_agents.inventory import Board
from device_agents.leases import Lease, LeaseHolder, LeaseTable, dead_local, worker_id
from harness.cache import cache_root
from harness.errors import BoardBusyError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0  # renewed while held, so a killed holder frees its machine within a minute
LOST_HOLD_S = 300.0  # a board lost mid-bench sits out this long for every worker of the pool
LOST_PREFIX = "lost: "
SERVER_SCHEMES = ("postgresql", "mysql")


def sql_url(url: str) -> str:
    """A database URL; a bare path means an SQLite file, and its folder is created."""
    if "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif not url.startswith(SERVER_SCHEMES):
        raise ConfigError(f"database URL {url!r} is neither sqlite:///PATH nor postgresql://...")
    return url


def pool_url(explicit: str | None = None, storage: str | None = None) -> str:
    """Which database holds the board leases (see the module docstring for the order)."""
    if explicit:
        return sql_url(explicit)
    if os.environ.get("HILT_POOL"):
        return sql_url(os.environ["HILT_POOL"])
    if storage and sql_url(storage).startswith(SERVER_SCHEMES):
        return sql_url(storage)
    return sql_url(str(cache_root() / "pool.db"))


def aside_key(board: Board) -> str:
    return f"aside:{board.name}"


@dataclass(frozen=True)
class Held:
    """A board this measurement owns, and how long it waited for it."""

    board: Board
    waited_s: float


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def busy_message(board: Board, holder: LeaseHolder | None) -> str:
    if holder is None:
        return f"board {board.name} busy"
    shared = f" (machine {board.machine})" if holder.note and holder.note != board.name else ""
    who = f"{holder.holder} for board {holder.note}" if holder.note else holder.holder
    return f"board {board.name} busy{shared}: held by {who} since {_when(holder.acquired)}"


class BoardPool:
    """Leases on the machines boards measure on, with renewal while held."""

    def __init__(self, url: str | None = None, *, holder: str | None = None, ttl_s: float = DEFAULT_TTL_S):
        self.url = pool_url(url)
        self.leases = LeaseTable(make_engine(self.url))
        self.holder = holder or worker_id()
        self.ttl_s = ttl_s
        self._holds = itertools.count(1)  # each hold is its own holder: threads of one pool exclude too

    def _keep_alive(self, lease: Lease) -> threading.Event:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.ttl_s / 3):
                try:
                    renewed = self.leases.renew(lease, self.ttl_s)
                except SQLAlchemyError as exc:  # the database restarting: try again next beat
                    log.warning("lease on %s not renewed this beat: %s", lease.key, type(exc).__name__)
                    continue
                if not renewed:
                    log.warning("lease on %s was lost while held by %s", lease.key, lease.holder)
                    return

        threading.Thread(target=beat, daemon=True, name=f"lease-{lease.key}").start()
        return stop

    def set_aside(self, board: Board, reason: str, for_s: float = LOST_HOLD_S) -> None:
        """Keep a board that stopped answering out of every worker's way for `for_s`, so a dead board
        costs the farm one failed attempt, not one per worker per trial; a rebooted board comes back
        when the mark expires. The mark is on the board, not its machine: boards sharing a machine
        (this host's) stay usable."""
        holder = (LOST_PREFIX + reason)[:255]
        if self.leases.try_take(aside_key(board), holder, for_s, note=board.name) is not None:
            log.warning("board %s set aside for %.0f s: %s", board.name, for_s, reason)

    def _why_busy(self, board: Board) -> str:
        aside = self.leases.holder_of(aside_key(board))
        if aside is not None:
            return f"board {board.name} set aside since {_when(aside.acquired)} ({aside.holder})"
        return busy_message(board, self.leases.holder_of(board.machine))

    def _order(self, boards: list[Board]) -> list[Board]:
        """The boards worth trying this pass, from one query: those whose machine is free, then those
        held by a process of this host that died (taking them reaps it). Boards held by a live
        holder, or set aside as lost, are not tried: 20 workers polling 100 busy boards one UPDATE
        at a time kept two cores busy doing nothing else."""
        holders = self.leases.live_holders([b.machine for b in boards] + [aside_key(b) for b in boards])
        usable = [b for b in boards if aside_key(b) not in holders]
        free = [b for b in usable if b.machine not in holders]
        return free + [b for b in usable if b.machine in holders and dead_local(holders[b.machine])]

    @contextmanager
    def hold(self, boards: list[Board], wait_s: float = 0.0, poll_s: float = 0.1) -> Iterator[Held]:
        """Own the first board whose machine comes free within `wait_s`, else BoardBusyError."""
        if not boards:
            raise ConfigError("no board to measure on")
        t0 = time.monotonic()
        deadline = t0 + wait_s
        holder = f"{self.holder}:{next(self._holds)}"
        while True:
            for board in self._order(boards):
                lease = self.leases.try_take(board.machine, holder, self.ttl_s, note=board.name)
                if lease is not None:
                    break
            else:
                if time.monotonic() >= deadline:
                    reasons = [self._why_busy(b) for b in boards]
                    more = f" (waited {wait_s:.0f} s)" if wait_s else "; --wait SECONDS waits for it"
                    raise BoardBusyError("; ".join(reasons) + more)
                time.sleep(poll_s)
                continue
            break
        waited = time.monotonic() - t0
        log.info("board %s (machine %s) held by %s after %.2f s", board.name, board.machine, holder, waited)
        stop = self._keep_alive(lease)
        try:
            yield Held(board, waited)
        finally:
            stop.set()
            retrying(f"release of {lease.key}", lambda: self.leases.release(lease))
