"""The tuner across workers and boards: two workers on a real PostgreSQL server, and a board that
disappears mid-bench (its agent killed while the runner is timing) so the trial retries elsewhere."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests import pg_server
from tests.unit.prune_tiny import write_tiny_task
from tuner.store import ResultsStore

pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist")
    return write_tiny_task(root)


@pytest.fixture(scope="module")
def postgres():
    if not pg_server.available():
        pytest.skip("needs Debian's postgresql package and root (to run the server as user postgres)")
    with pg_server.PostgresServer() as server:
        yield server.url


def test_two_workers_on_postgresql(task, postgres, tmp_path) -> None:
    args = [
        sys.executable, "-m", "harness.cli.main", "tune", "--model", str(task["model"]), "--calib",
        str(task["calib"]), "--val", str(task["val"]), "--trials", "4", "--storage", postgres,
        "--study", "pg", "--max-steps", "10", "--max-stages", "2", "--no-sia",
    ]  # fmt: skip

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen([*args, "--out", str(tmp_path / f"w{i}")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip

    def study_created() -> bool:  # the second worker joins a study, not a race to create one
        try:
            return bool(optuna.load_study(study_name="pg", storage=postgres))
        except Exception:  # noqa: BLE001 - schema or study not there yet
            return False

    workers = [start(0)]
    deadline = time.monotonic() + 300
    while not study_created():
        assert workers[0].poll() is None and time.monotonic() < deadline, "the first worker made no study"
        time.sleep(0.2)
    workers.append(start(1))
    for w in workers:
        out, _ = w.communicate(timeout=1200)
        assert w.returncode == 0, out
    study = optuna.load_study(study_name="pg", storage=postgres)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 4
    ran = [int(t.user_attrs["worker"].split(":")[1]) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert {w.pid for w in workers} <= set(ran), ran  # both workers completed trials
    rows = [r for r in ResultsStore(postgres).measurements(study="pg") if r["trial_number"] is not None]
    assert sorted(r["trial_number"] for r in rows) == sorted(
        t.number for t in study.get_trials(states=(TrialState.COMPLETE,))
    )
    spans = sorted((r["record"]["started_at"], r["record"]["finished_at"]) for r in rows)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, "the one local board ran two benches at once"


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _ours(pid: int) -> bool:
    """Whether `pid` descends from this test process (other hilt work on the machine is left alone)."""
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        pid = _ppid(pid)
    return False


def _runner_pids() -> dict[int, int]:
    """This test's hilt-runner processes timing a bundle: pid -> parent (the agent) pid."""
    out = {}
    for status in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            cmd = Path(status).read_bytes().split(b"\0")
            if cmd and cmd[0].endswith(b"hilt-runner") and b"--bundle" in cmd:
                pid = int(status.split("/")[2])
                if _ours(pid):
                    out[pid] = _ppid(pid)
        except (OSError, ValueError, IndexError):
            continue
    return out


def test_board_lost_mid_bench_retries_on_another(task, tmp_path) -> None:
    from device_agents.bench import BenchOptions
    from tuner.space import SpaceConfig
    from tuner.tune import TuneRequest, tune

    farm = tmp_path / "farm.toml"
    farm.write_text('version = 1\n[[board]]\nname = "flaky"\nprofile = "local"\n'
                    '[[board]]\nname = "good"\nprofile = "local"\n')  # fmt: skip
    seen: list[int] = []
    killed: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # the 2nd bundle bench (trial 0's, after the dense one) loses its board
        while not stop.is_set():
            for pid, agent in _runner_pids().items():
                if pid not in seen:
                    seen.append(pid)
                    if len(seen) == 2:
                        for victim in (agent, pid):
                            try:
                                os.kill(victim, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                        killed.append(agent)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    db = tmp_path / "hilt.db"
    try:
        req = TuneRequest(
            model=str(task["model"]), study="lost", storage=f"sqlite:///{db}", farm=str(farm),
            profile="local", trials=1, calib=task["calib"], val=task["val"], use_sia=False,
            work_dir=tmp_path / "runs",
            space=SpaceConfig(max_stages=1, max_steps=0),
            bench_options=BenchOptions(min_iters=200, min_seconds=3.0, timeout_s=60),
        )  # fmt: skip
        tune(req)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert killed, "the watcher never saw the trial's bench"
    study = optuna.load_study(study_name="lost", storage=f"sqlite:///{db}")
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert trial.user_attrs["board"] == "good"
    rows = [r for r in ResultsStore(f"sqlite:///{db}").measurements(study="lost") if r["trial_number"] == 0]
    assert len(rows) == 1 and rows[0]["board"] == "good"  # measured once, on the board that stayed
    locks = ResultsStore(f"sqlite:///{db}").locks.holders()
    assert locks == {"claim:lost": None, "dense:lost": None}  # the claim and dense-baseline locks: released
    from device_agents.inventory import this_host
    from device_agents.pool import BoardPool

    assert BoardPool().leases.holder_of(this_host()) is None  # the machine both boards share is free
