"""A farm-scale run: N `hilt tune` worker processes on one PostgreSQL study over a farm of simulated
boards, faults injected while they run, and an account of what happened taken from the study, the
results store and the boards' own lock logs (not from the workers' view). Used by
`tests/integration/test_farm_scale.py` (reduced) and `benchmarks/farm_scale.py` (100 boards, 20
workers)."""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from device_agents.inventory import load_farm
from device_agents.lock_audit import audit
from device_agents.simfarm import LatencyModel, inject, stores, write_sim_farm
from tests.unit.prune_tiny import write_tiny_task
from tuner.store import ResultsStore, stored_record

ROOT = Path(__file__).resolve().parents[1]
ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Warning)): (.*)$")


@dataclass
class FarmTask:
    model: Path
    calib: Path
    val: Path
    farm: Path
    storage: str
    cache: Path
    logs: Path
    bench_timeout_s: float = 30.0
    heartbeat_s: int = 5


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen
    log: Path
    killed: bool = False


@dataclass
class FarmReport:
    """What a run did, from the study, the results store and the boards' lock logs."""

    study: str
    workers: int
    trials_wanted: int
    states: dict[str, int] = field(default_factory=dict)
    retried: int = 0  # trials re-queued after their worker died (heartbeat)
    measured_per_trial: dict[int, int] = field(default_factory=dict)
    complete_unmeasured: list[int] = field(default_factory=list)
    measured_twice: list[int] = field(default_factory=list)
    double_holds: int = 0
    holds: int = 0
    lease_wait_p50_ms: float | None = None
    lease_wait_p99_ms: float | None = None
    lease_wait_max_ms: float | None = None
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # trial -> its recorded reason
    unattributed_failures: list[int] = field(default_factory=list)
    worker_exits: dict[int, int | None] = field(default_factory=dict)
    wall_s: float = 0.0
    completed_per_min: float = 0.0
    steady_per_min: float = 0.0  # once every worker has started its first trial
    events: list[str] = field(default_factory=list)


def lay_out(
    root: Path, boards: int, storage: str, cache: Path, model: LatencyModel, bench_timeout_s: float = 30.0
) -> FarmTask:
    """Under `root`: the tiny task, a farm of `boards` simulated boards, and a folder for worker logs."""
    tiny = write_tiny_task(root)
    farm = write_sim_farm(root / "sim", boards, model=model)
    logs = root / "logs"
    logs.mkdir()
    return FarmTask(tiny["model"], tiny["calib"], tiny["val"], farm, storage, cache, logs, bench_timeout_s)


def worker_env(task: FarmTask) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HILT_CACHE=str(task.cache),
        HILT_HEARTBEAT_S=str(task.heartbeat_s),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def start_worker(task: FarmTask, study: str, trials: int, index: int) -> Worker:
    log = task.logs / f"{study}-w{index}.log"
    cmd = [
        sys.executable, "-m", "harness.cli.main", "tune", "--model", str(task.model),
        "--calib", str(task.calib), "--val", str(task.val), "--val-n", "32", "--trials", str(trials),
        "--storage", task.storage, "--study", study, "--farm", str(task.farm), "--profile", "sim",
        "--max-steps", "0", "--max-stages", "1", "--granularities", "layer", "--no-sia", "--seed", str(index),
        "--bench-timeout", str(task.bench_timeout_s), "--out", str(task.logs / f"{study}-runs"),
    ]  # fmt: skip
    f = log.open("w")
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=worker_env(task), cwd=ROOT)
    return Worker(index, proc, log)


def study_exists(storage: str, study: str) -> bool:
    try:
        return any(s.study_name == study for s in optuna.get_all_study_summaries(storage))
    except Exception:  # noqa: BLE001 - no schema yet, or the server restarting
        return False


def completed(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        s = optuna.load_study(study_name=study, storage=storage)
        return s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    except Exception:  # noqa: BLE001 - the server may be restarting
        return []


def start_workers(
    task: FarmTask, study: str, trials: int, n: int, first_timeout_s: float = 600
) -> list[Worker]:
    """The first worker creates the study and measures the dense model; the rest join it."""
    first = start_worker(task, study, trials, 0)
    deadline = time.monotonic() + first_timeout_s
    while not study_exists(task.storage, study):
        if first.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the first worker made no study: {first.log.read_text()[-2000:]}")
        time.sleep(0.5)
    return [first] + [start_worker(task, study, trials, i) for i in range(1, n)]


def kill(worker: Worker) -> None:
    worker.killed = True
    try:
        os.kill(worker.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def inject_faults(task: FarmTask, boards: list[str], fault: str) -> None:
    for b in boards:
        inject(task.farm, b, fault)


def wait_workers(workers: list[Worker], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for w in workers:
        try:
            w.proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            kill(w)
            w.proc.wait()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def error_kinds(logs: list[Path]) -> Counter:
    """Exception kinds the workers logged (a traceback's last line, a warning's name)."""
    kinds: Counter = Counter()
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            m = ERROR_LINE.match(line.strip())
            if m and not m.group(1).endswith("Warning"):
                kinds[m.group(1)] += 1
            if "already finished" in line:
                kinds["trial already finished"] += 1
    return kinds


def report(task: FarmTask, study: str, workers: list[Worker], trials: int, since: float) -> FarmReport:
    """Account for the run: states, measurements per trial, the boards' lock logs, lease waits."""
    s = optuna.load_study(study_name=study, storage=task.storage)
    trials_all = s.get_trials(deepcopy=False)
    rep = FarmReport(study=study, workers=len(workers), trials_wanted=trials)
    rep.states = dict(Counter(t.state.name for t in trials_all))
    rep.retried = sum(1 for t in trials_all if "failed_trial" in t.system_attrs)
    rows = [r for r in ResultsStore(task.storage).measurements(study=study) if r["trial_number"] is not None]
    per_trial = Counter(r["trial_number"] for r in rows)
    rep.measured_per_trial = dict(sorted(per_trial.items()))
    done = [t for t in trials_all if t.state == TrialState.COMPLETE]
    rep.complete_unmeasured = sorted(t.number for t in done if per_trial.get(t.number, 0) == 0)
    rep.measured_twice = sorted(n for n, c in per_trial.items() if c > 1)
    waits = [stored_record(r).pool_wait_s * 1000 for r in rows]
    rep.lease_wait_p50_ms = _percentile(waits, 50)
    rep.lease_wait_p99_ms = _percentile(waits, 99)
    rep.lease_wait_max_ms = max(waits) if waits else None
    lock = audit(stores(load_farm(task.farm)))
    rep.holds = sum(1 for h in lock.holds if h.start >= since)
    rep.double_holds = sum(1 for a, _ in lock.overlaps if a.start >= since) + sum(
        1 for e in lock.contended if e["t"] >= since
    )
    rep.errors_by_kind = dict(error_kinds([w.log for w in workers]))
    for t in trials_all:
        if t.state == TrialState.FAIL:
            reason = failure_reason(t)
            rep.failures[str(t.number)] = reason
            if not reason:
                rep.unattributed_failures.append(t.number)
    rep.worker_exits = {w.index: w.proc.poll() for w in workers}
    ends = [t.datetime_complete.timestamp() for t in done if t.datetime_complete]
    starts = [t.datetime_start.timestamp() for t in trials_all if t.datetime_start]
    if ends and starts:
        rep.wall_s = max(ends) - min(starts)
        rep.completed_per_min = 60 * len(done) / rep.wall_s if rep.wall_s > 0 else 0.0
        rep.steady_per_min = steady_rate(trials_all, max(ends))
    return rep


def steady_rate(trials: list[optuna.trial.FrozenTrial], last: float) -> float:
    """Completions per minute from the moment the last worker started its first trial to the end:
    the throughput of all workers together, without the staggered start-up."""
    first_by_worker: dict[str, float] = {}
    for t in trials:
        w = t.user_attrs.get("worker")
        if w and t.datetime_start:
            first_by_worker[w] = min(first_by_worker.get(w, float("inf")), t.datetime_start.timestamp())
    if not first_by_worker:
        return 0.0
    start = max(first_by_worker.values())
    n = sum(1 for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete
            and t.datetime_complete.timestamp() > start)  # fmt: skip
    return 60 * n / (last - start) if last > start else 0.0


def failure_reason(t: optuna.trial.FrozenTrial) -> str:
    """Who a failed trial's failure belongs to: the step and board hilt recorded, or the worker whose
    heartbeat stopped (killed mid-trial); "" when neither is known."""
    if t.user_attrs.get("failed_step"):
        return str(t.user_attrs["failed_step"])
    if t.user_attrs.get("surplus"):  # claimed nothing: the study had its trials when it asked
        return "surplus: " + str(t.user_attrs["surplus"])
    if t.user_attrs.get("worker"):
        return f"worker {t.user_attrs['worker']} stopped beating mid-trial"
    return ""


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
