"""Named, renewable leases in an SQL table: the one mutual-exclusion primitive hilt's hosts share.

A lease is taken with one conditional UPDATE, so two holders can never hold the same key: the
database decides, SQLite or PostgreSQL. A lease expires unless renewed; a holder on this host whose
process is gone (kill -9) is reaped at once instead of at expiry. The board pool leases machines
with it, and the tuner's study store uses it for the trial-claim lock.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import Column, Float, MetaData, String, Table, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

log = logging.getLogger(__name__)

metadata = MetaData()

lease_table = Table(
    "hilt_pool_leases",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("holder", String(255), nullable=True),
    Column("note", String(255), nullable=True),  # what the holder uses it for (e.g. the board name)
    Column("acquired", Float, nullable=True),
    Column("expires", Float, nullable=True),
)


def worker_id() -> str:
    """A holder name unique to this process on this host: `host:pid:random`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local(holder: str | None) -> bool:
    """Whether a holder (`host:pid:...`) is a process of this host that is gone."""
    parts = (holder or "").split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    return not _alive(int(parts[1]))


@dataclass(frozen=True)
class Lease:
    key: str
    holder: str
    note: str
    acquired: float
    expires: float


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a key, for a "busy" message."""

    key: str
    holder: str
    note: str
    acquired: float


class LeaseTable:
    """Leases on arbitrary keys in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def _ensure(self, key: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(lease_table).values(key=key))
        except IntegrityError:
            pass

    def _reap_dead_local_holder(self, key: str) -> None:
        """A holder on this host whose process is gone releases at once, not at expiry."""
        with self.engine.connect() as conn:
            row = conn.execute(select(lease_table.c.holder).where(lease_table.c.key == key)).first()
        holder = row[0] if row else None
        if not dead_local(holder):
            return
        log.warning("lease on %s held by dead process %s: released", key, holder)
        with self.engine.begin() as conn:
            conn.execute(
                update(lease_table)
                .where(lease_table.c.key == key)
                .where(lease_table.c.holder == holder)
                .values(holder=None, note=None, acquired=None, expires=None)
            )

    def try_take(self, key: str, holder: str, ttl_s: float, note: str = "") -> Lease | None:
        """Take the key if it is free, expired, or already ours; None if someone else holds it."""
        lease = self._take(key, holder, ttl_s, note)  # one statement when the key is free
        if lease is None:  # a key never used, or held by a process of this host that died
            self._ensure(key)
            self._reap_dead_local_holder(key)
            lease = self._take(key, holder, ttl_s, note)
        return lease

    def _take(self, key: str, holder: str, ttl_s: float, note: str) -> Lease | None:
        now = time.time()
        c = lease_table.c
        with self.engine.begin() as conn:
            res = conn.execute(
                update(lease_table)
                .where(c.key == key)
                .where(or_(c.holder.is_(None), c.expires < now, c.holder == holder))
                .values(holder=holder, note=note, acquired=now, expires=now + ttl_s)
            )
            if res.rowcount == 1:
                return Lease(key, holder, note, now, now + ttl_s)
        return None

    def take_any(
        self, keys: list[str], holder: str, ttl_s: float, wait_s: float, poll_s: float = 0.2, note: str = ""
    ) -> Lease | None:
        """The first free key of the list, waiting up to `wait_s`; None when all stay held."""
        deadline = time.monotonic() + wait_s
        while True:
            for key in keys:
                lease = self.try_take(key, holder, ttl_s, note)
                if lease:
                    return lease
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll_s)

    def renew(self, lease: Lease, ttl_s: float) -> bool:
        """Push a held lease's expiry forward; False if it was lost (expired and taken)."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(lease_table)
                .where(lease_table.c.key == lease.key)
                .where(lease_table.c.holder == lease.holder)
                .values(expires=time.time() + ttl_s)
            )
            return res.rowcount == 1

    def release(self, lease: Lease) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(lease_table)
                .where(lease_table.c.key == lease.key)
                .where(lease_table.c.holder == lease.holder)
                .values(holder=None, note=None, acquired=None, expires=None)
            )

    def holder_of(self, key: str) -> LeaseHolder | None:
        """The live holder of a key, or None if it is free."""
        with self.engine.connect() as conn:
            row = conn.execute(select(lease_table).where(lease_table.c.key == key)).first()
        if row is None or row.holder is None or (row.expires or 0) < time.time():
            return None
        return LeaseHolder(key, row.holder, row.note or "", float(row.acquired or 0.0))

    def live_holders(self, keys: list[str]) -> dict[str, str]:
        """The live holder of each of `keys` that has one, in one query (a pool of 100 boards asks
        this on every pass instead of trying each key)."""
        c = lease_table.c
        live = select(c.key, c.holder).where(c.key.in_(keys), c.holder.is_not(None), c.expires >= time.time())
        with self.engine.connect() as conn:
            return {r.key: r.holder for r in conn.execute(live)}

    def holders(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return {r.key: r.holder for r in conn.execute(select(lease_table))}
