"""hilt's own tables beside Optuna's, in the same database: measurements, board leases, artifacts.

SQLite by default (one file next to the study), PostgreSQL by URL for many workers on many hosts.
Leases are taken with one conditional UPDATE, so two workers can never hold the same board: the
database decides, whichever backend it is.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from harness.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///hilt-runs/hilt.db"
metadata = MetaData()

measurements = Table(
    "hilt_measurements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study", String(255), index=True),
    Column("trial_number", Integer, nullable=True, index=True),
    Column("run", String(255), nullable=True, index=True),  # nightly run name, for regression
    Column("board", String(255), index=True),
    Column("bundle", String(64), index=True),
    Column("created", Float),
    Column("record", JSON),  # the full measurement record (all samples)
)

leases = Table(
    "hilt_leases",
    metadata,
    Column("board", String(255), primary_key=True),
    Column("holder", String(255), nullable=True),
    Column("acquired", Float, nullable=True),
    Column("expires", Float, nullable=True),
)

nightly_runs = Table(
    "hilt_nightly_runs",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("suite", String(255), index=True),
    Column("created", Float),
    Column("baseline", Integer, default=0),  # 1 once promoted with --update-baseline
    Column("summary", JSON),
)

artifacts = Table(
    "hilt_artifacts",
    metadata,
    Column("bundle", String(64), primary_key=True),
    Column("profile", String(255)),
    Column("created", Float),
    Column("meta", JSON),
)


def resolve_url(url: str | None) -> str:
    """The storage URL; a bare path means an SQLite file, and its folder is created."""
    url = url or os.environ.get("HILT_STORAGE") or DEFAULT_URL
    if "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not url.startswith(("postgresql", "mysql")):
        raise ConfigError(f"storage URL {url!r} is neither sqlite:///PATH nor postgresql://...")
    return url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_id() -> str:
    """A holder name unique to this process on this host."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Lease:
    board: str
    holder: str
    expires: float


class ResultsStore:
    """Measurements, leases and artifact metadata in the study's database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        kwargs: dict = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine: Engine = create_engine(self.url, **kwargs)
        metadata.create_all(self.engine)

    # ---- measurements ------------------------------------------------------------------
    def add_measurement(
        self,
        record: dict,
        *,
        study: str,
        board: str,
        bundle: str,
        trial_number: int | None = None,
        run: str | None = None,
    ) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(
                insert(measurements).values(
                    study=study,
                    trial_number=trial_number,
                    run=run,
                    board=board,
                    bundle=bundle,
                    created=time.time(),
                    record=json.loads(json.dumps(record)),
                )
            )
            return int(res.inserted_primary_key[0])

    def measurements(
        self, *, study: str | None = None, trial_number: int | None = None, run: str | None = None
    ) -> list[dict]:
        q = select(measurements)
        if study is not None:
            q = q.where(measurements.c.study == study)
        if trial_number is not None:
            q = q.where(measurements.c.trial_number == trial_number)
        if run is not None:
            q = q.where(measurements.c.run == run)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(measurements.c.id))]

    # ---- artifacts ---------------------------------------------------------------------
    def add_artifact(self, bundle: str, profile: str, meta: dict) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(artifacts).values(bundle=bundle, profile=profile, created=time.time(), meta=meta)
                )
        except IntegrityError:
            pass  # the same bundle was recorded before: content-addressed, nothing changes

    def artifact(self, bundle: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(artifacts).where(artifacts.c.bundle == bundle)).first()
            return None if row is None else dict(row._mapping)

    # ---- nightly runs --------------------------------------------------------------------
    def add_run(self, name: str, suite: str, summary: dict) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(nightly_runs).values(
                        name=name, suite=suite, created=time.time(), baseline=0, summary=summary
                    )
                )
        except IntegrityError:
            raise ConfigError(
                f"a nightly run named '{name}' already exists; pick another --run name"
            ) from None

    def promote(self, name: str) -> None:
        with self.engine.begin() as conn:
            res = conn.execute(update(nightly_runs).where(nightly_runs.c.name == name).values(baseline=1))
            if res.rowcount != 1:
                raise ConfigError(f"no nightly run named '{name}' to promote")

    def runs(self, suite: str) -> list[dict]:
        """Runs of a suite, oldest first."""
        q = select(nightly_runs).where(nightly_runs.c.suite == suite).order_by(nightly_runs.c.created)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def baseline_run(self, suite: str, which: str, exclude: str | None = None) -> str | None:
        """`latest`: the newest promoted run (else the newest earlier run); otherwise a run by name."""
        runs = [r for r in self.runs(suite) if r["name"] != exclude]
        if which != "latest":
            if not any(r["name"] == which for r in runs):
                raise ConfigError(f"baseline run '{which}' not found for suite '{suite}'")
            return which
        promoted = [r for r in runs if r["baseline"]]
        pick = promoted or runs
        return pick[-1]["name"] if pick else None

    # ---- leases ------------------------------------------------------------------------
    def _ensure_board(self, board: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(leases).values(board=board, holder=None, acquired=None, expires=None))
        except IntegrityError:
            pass

    def _reap_dead_local_holder(self, board: str) -> None:
        """A holder on this host whose process is gone (kill -9) releases at once, not at expiry."""
        with self.engine.connect() as conn:
            row = conn.execute(select(leases.c.holder).where(leases.c.board == board)).first()
        holder = row[0] if row else None
        if not holder or holder.count(":") < 2:
            return
        host, pid = holder.split(":")[0], holder.split(":")[1]
        if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
            return
        log.warning("lease on %s held by dead process %s: released", board, holder)
        with self.engine.begin() as conn:
            conn.execute(
                update(leases)
                .where(leases.c.board == board)
                .where(leases.c.holder == holder)
                .values(holder=None, acquired=None, expires=None)
            )

    def renew(self, lease: Lease, ttl_s: float) -> bool:
        """Push a held lease's expiry forward; False if it was lost (expired and taken)."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(leases)
                .where(leases.c.board == lease.board)
                .where(leases.c.holder == lease.holder)
                .values(expires=time.time() + ttl_s)
            )
            return res.rowcount == 1

    def try_lease(self, board: str, holder: str, ttl_s: float) -> Lease | None:
        """Take the board if it is free or its lease expired; None if someone else holds it."""
        self._ensure_board(board)
        self._reap_dead_local_holder(board)
        now = time.time()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(leases)
                .where(leases.c.board == board)
                .where(or_(leases.c.holder.is_(None), leases.c.expires < now, leases.c.holder == holder))
                .values(holder=holder, acquired=now, expires=now + ttl_s)
            )
            if res.rowcount == 1:
                return Lease(board, holder, now + ttl_s)
        return None

    def lease_any(
        self, boards: list[str], holder: str, ttl_s: float, wait_s: float, poll_s: float = 0.2
    ) -> Lease | None:
        """First free board of the list, waiting up to `wait_s`; None when all stay busy."""
        deadline = time.monotonic() + wait_s
        while True:
            for b in boards:
                lease = self.try_lease(b, holder, ttl_s)
                if lease:
                    return lease
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll_s)

    def release(self, lease: Lease) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(leases)
                .where(leases.c.board == lease.board)
                .where(leases.c.holder == lease.holder)
                .values(holder=None, acquired=None, expires=None)
            )

    @contextmanager
    def leased(self, boards: list[str], holder: str, ttl_s: float, wait_s: float) -> Iterator[Lease | None]:
        lease = self.lease_any(boards, holder, ttl_s, wait_s)
        try:
            yield lease
        finally:
            if lease:
                self.release(lease)

    def holders(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return {r.board: r.holder for r in conn.execute(select(leases))}
