"""Fault: an emulated qemu-user aarch64 board lost mid-bench during a tuning trial, once over SSH (its
on-board agent killed) and once over serial (the board's socat line killed). Each time: a typed
transport error on that board within the bench timeout, the trial retried on the board's other
transport, and the trial measured exactly once, on the board that stayed."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from device_agents.bench import BenchOptions
from device_agents.emulated import FarmPaths, down, up
from device_agents.emulated.state import load_state
from tests.integration.test_farm_user import _gone
from tests.unit.prune_tiny import write_tiny_task
from tuner.store import ResultsStore

pytestmark = pytest.mark.timeout(1500)
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmPaths]:
    paths = FarmPaths(images=FarmPaths.default().images, state=tmp_path_factory.mktemp("faultfarm"))
    boards = list(up(["aarch64"], paths=paths).state.boards)
    try:
        yield paths
    finally:
        boards += list(load_state(paths.state_file).boards)
        down(paths)
        _gone(paths.state, boards)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_task(tmp_path_factory.mktemp("faulttask"))


def _runners(root: str) -> list[int]:
    """Processes running hilt-runner on a bundle inside the board's root."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
            pid = int(cmdline.parent.name)
            if any(a.endswith(b"hilt-runner") for a in argv) and b"--bundle" in argv:
                if os.readlink(f"/proc/{pid}/root") == root:
                    out.append(pid)
        except (OSError, ValueError):
            continue
    return out


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _tune_losing_a_board(
    farm: FarmPaths, task: dict[str, Path], tmp_path: Path, first: str, kill: Callable[[int], list[int]]
) -> tuple[optuna.Study, str]:
    """Tune one trial with `first` tried first; `kill(runner_pid)` runs on the trial's first bench."""
    from tuner.space import SpaceConfig
    from tuner.tune import TuneRequest, tune

    text = farm.farm_file.read_text()
    head, *blocks = text.split("\n[[board]]")
    blocks.sort(key=lambda b: 0 if f'name = "{first}"' in b else 1)
    (tmp_path / "farm.toml").write_text(head + "".join("\n[[board]]" + b for b in blocks))
    root = load_state(farm.state_file).boards[0].root
    seen: list[int] = []
    killed: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # the second bundle bench is trial 0's (the first is the dense baseline's)
        while not stop.is_set() and not killed:
            for pid in _runners(root):
                if pid not in seen:
                    seen.append(pid)
                    if len(seen) == 2:
                        killed.extend(kill(pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    db = f"sqlite:///{tmp_path / 'hilt.db'}"
    try:
        req = TuneRequest(
            model=str(task["model"]), study="lost", storage=db, farm=str(tmp_path / "farm.toml"),
            profile="qemu-aarch64", trials=1, calib=task["calib"], val=task["val"], use_sia=False,
            work_dir=tmp_path / "runs", pool=str(tmp_path / "pool.db"),
            space=SpaceConfig(max_stages=1, max_steps=0),
            bench_options=BenchOptions(
                warmup=1, min_iters=5, min_seconds=4.0, idle_seconds=0.0, power=False, timeout_s=TIMEOUT_S
            ),  # no wait_s: the tuner's own wait for the board's lock (its other line's bench may still run)
        )  # fmt: skip
        tune(req)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert killed, f"the watcher never saw the trial's bench (runners seen: {seen})"
    return optuna.load_study(study_name="lost", storage=db), db


def _check(study: optuna.Study, db: str, lost: str, stayed: str, caplog: pytest.LogCaptureFixture) -> None:
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert not study.get_trials(states=(TrialState.FAIL,))  # retried inside the trial, not a failed trial
    assert trial.user_attrs["board"] == stayed
    rows = [r for r in ResultsStore(db).measurements(study="lost") if r["trial_number"] == trial.number]
    assert [r["board"] for r in rows] == [stayed]  # measured once, on the board that stayed
    msgs = [r.getMessage() for r in caplog.records if "lost during bench" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].startswith(f"board {lost} lost during bench"), msgs
    assert study.user_attrs["dense"]["board"] == lost  # before the fault, the lost board measured fine


def test_ssh_board_agent_killed_mid_bench_retries_over_serial(
    farm: FarmPaths, task: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def kill_agent(runner: int) -> list[int]:  # the SSH session's agent on the board, and its runner
        agent = _ppid(runner)
        for pid in (agent, runner):
            os.kill(pid, signal.SIGKILL)
        return [agent]

    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tuner.pipeline"):
        study, db = _tune_losing_a_board(farm, task, tmp_path, "qemu-a64-0", kill_agent)
    _check(study, db, "qemu-a64-0", "qemu-a64-0-serial", caplog)
    assert "agent connection closed" in caplog.text or "no answer to 'bench'" in caplog.text
    assert time.monotonic() - t0 < 900


def test_serial_line_killed_mid_bench_retries_over_ssh(
    farm: FarmPaths, task: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    board = load_state(farm.state_file).boards[0]
    socat = next(p for p in board.processes if p.role == "socat")

    def kill_line(_runner: int) -> list[int]:
        os.kill(socat.pid, signal.SIGKILL)
        return [socat.pid]

    lost_at: list[float] = []
    with caplog.at_level(logging.WARNING, logger="tuner.pipeline"):
        study, db = _tune_losing_a_board(
            farm,
            task,
            tmp_path,
            "qemu-a64-0-serial",
            lambda r: (lost_at.append(time.time()), kill_line(r))[1],
        )
    _check(study, db, "qemu-a64-0-serial", "qemu-a64-0", caplog)
    lost = next(r for r in caplog.records if "lost during bench" in r.getMessage())
    assert lost.created - lost_at[0] < TIMEOUT_S + 1.0 + 1.5 + 5  # a typed error within the bench timeout
    assert up(["aarch64"], paths=farm).started == ["qemu-a64-0"]  # the farm notices and restarts the board
