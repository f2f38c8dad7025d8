"""The farm at a reduced scale (issue 31): 5 `hilt tune` workers on one PostgreSQL study over 20
simulated boards, one worker killed with SIGKILL and two boards dying mid-bench while they run. The
study ends with exactly the trials asked for, each measured once, no board held twice at once (by the
boards' own lock logs), and every failed trial attributed to its worker or board."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from device_agents.inventory import load_farm
from device_agents.pool import BoardPool, aside_key
from device_agents.simfarm import LatencyModel, down_boards
from tests import farm_run
from tests.integration.test_tuner_distributed import postgres  # noqa: F401 - the real server fixture

pytestmark = pytest.mark.timeout(600)
TRIALS = 40


def test_five_workers_twenty_boards_with_faults(postgres: str, tmp_path: Path) -> None:  # noqa: F811
    # the session cache: the board runtime is built once
    task = farm_run.lay_out(
        tmp_path, 20, postgres, Path(os.environ["HILT_CACHE"]), LatencyModel(bench_s=0.5), 20
    )
    farm = task.farm
    since = time.time()
    workers = farm_run.start_workers(task, "farm", TRIALS, 5)
    deadline = time.monotonic() + 400
    while len(farm_run.completed(postgres, "farm")) < 10:
        assert time.monotonic() < deadline, "10 trials did not complete"
        assert any(w.proc.poll() is None for w in workers), [w.log.read_text()[-1500:] for w in workers]
        time.sleep(0.5)
    victim = workers[2]
    farm_run.kill(victim)
    farm_run.inject_faults(task, ["sim-000", "sim-001"], "die")  # the boards every worker tries first
    farm_run.wait_workers(workers, max(deadline - time.monotonic(), 60))
    rep = farm_run.report(task, "farm", workers, TRIALS, since)

    assert rep.states.get("COMPLETE") == TRIALS, (rep.states, rep.failures)
    assert rep.complete_unmeasured == [] and rep.measured_twice == [], rep.measured_per_trial
    assert rep.holds >= TRIALS and rep.double_holds == 0  # the boards' own account
    assert rep.unattributed_failures == [], rep.failures
    assert all(code == 0 for i, code in rep.worker_exits.items() if i != victim.index), rep.worker_exits
    assert "trial already finished" not in rep.errors_by_kind, rep.errors_by_kind
    killed = [r for r in rep.failures.values() if "stopped beating" in r]
    assert all(f":{victim.proc.pid}:" in r for r in killed), (victim.proc.pid, killed)  # its own trials
    assert sorted(down_boards(farm)) == ["sim-000", "sim-001"]
    pool, boards = BoardPool(postgres), load_farm(farm)
    lost = {name: pool.leases.holder_of(aside_key(boards.board(name))) for name in ("sim-000", "sim-001")}
    assert all(h is not None and h.holder.startswith("lost: ") for h in lost.values()), lost  # set aside
