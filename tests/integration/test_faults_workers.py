"""Fault: one of two `hilt tune` workers on a real PostgreSQL is killed with SIGKILL while it benches a
trial on the board, then the study is resumed.

Asserts: exactly N finished trials, each completed trial measured exactly once, the killed trial failed
(by heartbeat) and unmeasured, the dead worker's board lease reaped before it would have expired, and
completed trials from both workers (each trial names the worker that ran it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, select

from device_agents.inventory import default_farm
from device_agents.leases import lease_table
from device_agents.pool import BoardPool
from tests.integration.test_tuner_distributed import postgres  # noqa: F401 - the real server fixture
from tests.unit.prune_tiny import write_tiny_task
from tests.waiting import wait_for
from tuner.store import ResultsStore

pytestmark = pytest.mark.timeout(1500)
N = 4


def _worker(task: dict[str, Path], storage: str, out: Path) -> subprocess.Popen[str]:
    args = [
        sys.executable, "-m", "harness.cli.main", "tune", "--model", str(task["model"]), "--calib",
        str(task["calib"]), "--val", str(task["val"]), "--trials", str(N), "--storage", storage,
        "--study", "faults", "--max-steps", "5", "--max-stages", "1", "--no-sia", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HILT_HEARTBEAT_S": "2"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # fmt: skip


def _pid_of(worker: str) -> int:
    return int(worker.split(":")[1])  # worker ids are host:pid:random


def test_worker_killed_mid_bench_on_postgresql_then_resumed(postgres: str, tmp_path: Path) -> None:  # noqa: F811
    task = write_tiny_task(tmp_path / "task")
    machine = default_farm().board("local").machine
    engine = create_engine(postgres)

    def lease() -> tuple[str | None, float | None]:
        with engine.connect() as conn:
            row = conn.execute(
                select(lease_table.c.holder, lease_table.c.expires).where(lease_table.c.key == machine)
            ).first()
        return (row[0], row[1]) if row else (None, None)

    def study() -> optuna.Study | None:
        try:
            return optuna.load_study(study_name="faults", storage=postgres)
        except Exception:  # noqa: BLE001 - schema or study not created yet
            return None

    a = _worker(task, postgres, tmp_path / "a")
    wait_for(lambda: (s := study()) is not None and "dense" in s.user_attrs, 600, "worker A's dense baseline")
    b = _worker(task, postgres, tmp_path / "b")
    resumed = None
    try:
        # A's third hold of the board (dense, its first trial, now its second): A is mid-bench of a trial
        # and has completed one already
        def a_on_its_second_trial() -> tuple[str, float] | None:
            holder, expires = lease()
            if holder and holder.split(":")[1] == str(a.pid) and int(holder.rsplit(":", 1)[1]) >= 3:
                return holder, float(expires or 0.0)
            return None

        holder, expires = wait_for(a_on_its_second_trial, 900, "worker A benching its 2nd trial", poll=0.02)
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(timeout=30)
        killed_at = time.time()
        assert lease()[0] == holder  # the dead worker's lease is still in the table, unexpired
        # another measurement on that machine (a `hilt bench` here, say) gets it long before the lease's
        # own expiry: the pool reaps a lease whose holder process on this host is gone
        board = default_farm().board("local")
        with BoardPool(postgres, holder="fault-probe").hold([board], wait_s=120) as held:
            taken_at = time.time()
        assert held.board.name == "local" and taken_at < expires, (taken_at - killed_at, expires - killed_at)
        resumed = _worker(task, postgres, tmp_path / "a2")
        for w in (b, resumed):
            out, _ = w.communicate(timeout=1200)
            assert w.returncode == 0, out
    finally:
        for w in (a, b, resumed):
            if w is not None and w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait()
    s = study()
    assert s is not None
    finished = s.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == N
    failed = [t for t in s.get_trials(states=(TrialState.FAIL,)) if "worker" in t.user_attrs]  # not surplus
    assert [_pid_of(t.user_attrs["worker"]) for t in failed] == [a.pid]  # the killed trial, by heartbeat
    completed = s.get_trials(states=(TrialState.COMPLETE,))
    rows = [r for r in ResultsStore(postgres).measurements(study="faults") if r["trial_number"] is not None]
    assert sorted(r["trial_number"] for r in rows) == sorted(t.number for t in completed)  # once each
    assert failed[0].number not in {r["trial_number"] for r in rows}  # the killed bench left no record
    pids = {_pid_of(t.user_attrs["worker"]) for t in completed}
    assert a.pid in pids and b.pid in pids, pids  # both original workers completed trials
    spans = sorted((r["record"]["started_at"], r["record"]["finished_at"]) for r in rows)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, "two workers benched on the one local machine at once"
    assert lease()[0] is None  # nothing holds the board after the study
