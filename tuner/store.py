"""hilt's own tables beside Optuna's, in the same database: measurements, nightly runs, artifacts.

SQLite by default (one file next to the study), PostgreSQL by URL for many workers on many hosts.
Board leases are the board pool's (`device_agents.pool`); this store keeps only the trial-claim lock,
a lease in its own database.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from device_agents.db import make_engine, retrying
from device_agents.leases import LeaseTable
from device_agents.pool import sql_url
from device_agents.records import MeasurementRecord
from harness.errors import ConfigError

if TYPE_CHECKING:  # the SIA package pulls in torch; the nightly and pool paths of this store do not need it
    from harness.sia.empirical import GranularityResult

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
    Column("case_name", String(255), nullable=True, index=True),  # nightly case, for regression
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


sia_results = Table(
    "hilt_sia_results",
    metadata,
    Column("study", String(255), primary_key=True),
    Column("model_hash", String(64), primary_key=True),
    Column("granularity", String(32), primary_key=True),
    Column("created", Float),
    Column("result", JSON),  # GranularityResult.to_dict(), what the deployment report plots
)


def resolve_url(url: str | None) -> str:
    """The storage URL; a bare path means an SQLite file, and its folder is created."""
    return sql_url(url or os.environ.get("HILT_STORAGE") or DEFAULT_URL)


def _add_missing_columns(engine: Engine) -> None:
    """Databases made before a column existed get it (the only schema change so far: case_name)."""
    have = {c["name"] for c in inspect(engine).get_columns("hilt_measurements")}
    if "case_name" not in have:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE hilt_measurements ADD COLUMN case_name VARCHAR(255)"))


def stored_record(row: dict) -> MeasurementRecord:
    """A measurement row's record, typed again (derived fields such as the summary are recomputed)."""
    return MeasurementRecord.model_validate(row["record"])


LOCK_TTL_S = 60.0


class ResultsStore:
    """Measurements, nightly runs and artifact metadata in the study's database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self.engine: Engine = make_engine(self.url)
        metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        self.locks = LeaseTable(self.engine)

    # ---- measurements ------------------------------------------------------------------
    def add_measurement(
        self,
        record: MeasurementRecord,
        *,
        study: str,
        trial_number: int | None = None,
        run: str | None = None,
        case: str | None = None,
    ) -> int:
        """Store one measurement; waits out a database restart rather than lose a finished bench."""
        row = dict(
            study=study,
            trial_number=trial_number,
            run=run,
            board=record.board,
            bundle=record.artifact,
            created=time.time(),
            record=json.loads(record.model_dump_json()),
            case_name=case,
        )

        def insert_row() -> int:
            with self.engine.begin() as conn:
                return int(conn.execute(insert(measurements).values(**row)).inserted_primary_key[0])

        return retrying("storing a measurement", insert_row)

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
        def insert_row() -> None:
            try:
                values = dict(bundle=bundle, profile=profile, created=time.time(), meta=meta)
                with self.engine.begin() as conn:
                    conn.execute(insert(artifacts).values(**values))
            except IntegrityError:
                pass  # the same bundle was recorded before: content-addressed, nothing changes

        retrying("recording an artifact", insert_row)

    def artifact(self, bundle: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(artifacts).where(artifacts.c.bundle == bundle)).first()
            return None if row is None else dict(row._mapping)

    # ---- SIA results of a study (one per model state and granularity) --------------------
    def add_sia_result(self, study: str, model_hash: str, result: GranularityResult) -> None:
        """Keep one granularity's SIA result on one model state (stored in its JSON form)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(sia_results).values(
                        study=study, model_hash=model_hash, granularity=result.granularity,
                        created=time.time(), result=result.to_dict(),
                    )
                )  # fmt: skip
        except IntegrityError:
            pass  # the same model state was checked before: the result is the same

    def sia_results(self, study: str) -> list[GranularityResult]:
        """The study's SIA results, oldest first (rows written by older versions read too)."""
        from harness.sia.empirical import GranularityResult

        q = select(sia_results).where(sia_results.c.study == study).order_by(sia_results.c.created)
        with self.engine.connect() as conn:
            return [GranularityResult.from_dict(dict(r.result)) for r in conn.execute(q)]

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

    # ---- the trial-claim lock ----------------------------------------------------------
    @contextmanager
    def lock(self, name: str, holder: str, wait_s: float) -> Iterator[bool]:
        """A database-wide named lock (a lease in this store's database); yields False if not taken."""
        lease = self.locks.take_any([name], holder, ttl_s=LOCK_TTL_S, wait_s=wait_s, poll_s=0.05)
        stop = threading.Event()
        if lease is not None:  # renewed while held: a long holder (a dense LLM's compile) keeps it

            def beat() -> None:
                while not stop.wait(LOCK_TTL_S / 3):
                    try:
                        self.locks.renew(lease, LOCK_TTL_S)
                    except SQLAlchemyError:  # the database restarting: next beat
                        continue

            threading.Thread(target=beat, daemon=True, name=f"lock-{name}").start()
        try:
            yield lease is not None
        finally:
            stop.set()
            if lease is not None:
                retrying(f"release of {name}", lambda: self.locks.release(lease))
