"""Simulated boards: a farm file of boards, each its own machine and store; the real agent with its
runner replaced by a latency model; faults on command (die, reboot, hang); and the boards' lock logs
audited for two holders at once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from device_agents.agent import lock, serve, simulate
from device_agents.inventory import load_farm
from device_agents.lock_audit import audit
from device_agents.simfarm import LatencyModel, down_boards, inject, stores, write_sim_farm
from device_agents.transports.base import agent_pyz
from device_agents.transports.local import LocalTransport
from harness.errors import ConfigError, TransportError
from tests.unit.test_agents_lock import _call, _install_runner


def _bench(a: serve.Agent, runtime: str, **kw: Any) -> dict:
    args = {"runtime": runtime, "selftest": True, "idle_seconds": 0.0, "power": False, **kw}
    return _call(a, "bench", args, timeout=kw.pop("timeout", 10))


@pytest.fixture()
def farm(tmp_path: Path) -> Path:
    return write_sim_farm(tmp_path / "sim", 3, model=LatencyModel(base_ms=2.0, bench_s=0.2, reboot_s=1.0))


def test_farm_file_gives_each_board_its_machine_and_store(farm: Path) -> None:
    boards = load_farm(farm).boards
    assert [b.name for b in boards] == ["sim-000", "sim-001", "sim-002"]
    assert len({b.machine for b in boards}) == 3 and all(b.machine.startswith("sim:") for b in boards)
    assert all(b.transport.simulate and b.profile.name == "sim" and b.profile.matmul == "tir" for b in boards)
    found = stores(load_farm(farm))
    assert json.loads((found["sim-001"] / "sim.json").read_text())["bench_s"] == 0.2
    with pytest.raises(ConfigError, match="unknown fault 'melt'"):
        inject(farm, "sim-000", "melt")
    with pytest.raises(ConfigError, match="no simulated board named 'sim-9'"):
        inject(farm, "sim-9", "die")


def test_simulated_bench_answers_the_model_inside_the_lock(farm: Path) -> None:
    store = stores(load_farm(farm))["sim-000"]
    agent = serve.Agent(str(store), simulate=True)
    runtime = _install_runner(agent)
    assert _call(agent, "hello", {})["result"]["simulated"] is True
    t0 = time.monotonic()
    res = _bench(agent, runtime)
    assert res["ok"], res
    assert time.monotonic() - t0 >= 0.2  # the board is held for the simulated measurement
    samples = res["result"]["runner"]["samples_ns"]
    assert len(samples) == simulate.SAMPLES and 1.5e6 < sorted(samples)[10] < 2.5e6  # base_ms 2.0
    events = [json.loads(x) for x in (store / lock.LOG_NAME).read_text().splitlines()]
    assert [e["ev"] for e in events] == ["take", "drop"] and events[0]["contended"] is False
    missing = _call(agent, "bench", {"runtime": runtime, "bundle": "ab" * 32, "power": False})
    assert missing["error"]["type"] == "missing_file"  # the store's checks are the real ones


def test_dead_board_refuses_to_start_and_reboot_comes_back(farm: Path) -> None:
    found = stores(load_farm(farm))
    for name, fault in (("sim-000", "die"), ("sim-001", "reboot")):
        agent = serve.Agent(str(found[name]), simulate=True)
        runtime = _install_runner(agent)
        inject(farm, name, fault)
        code = subprocess.run(
            [sys.executable, "-c", f"from device_agents.agent import serve, simulate\n"
             f"a = serve.Agent({str(found[name])!r}, simulate=True)\n"
             f"from tests.unit.test_simfarm import _bench\n_bench(a, {runtime!r})"],
            capture_output=True, timeout=30,
        ).returncode  # fmt: skip
        assert code == -9  # killed mid-bench, holding the lock
    assert sorted(down_boards(farm)) == ["sim-000", "sim-001"]
    with pytest.raises(TransportError, match="simulated board is dead"):
        with LocalTransport(
            "sim-000", cache=found["sim-000"], agent_path=agent_pyz(), extra_args=["--simulate"]
        ):
            pass
    time.sleep(1.1)  # reboot_s
    assert down_boards(farm) == ["sim-000"]
    with LocalTransport(
        "sim-001", cache=found["sim-001"], agent_path=agent_pyz(), extra_args=["--simulate"]
    ) as t:
        assert t.hello["simulated"] is True
    held = audit({"sim-001": found["sim-001"]})
    assert [h.end for h in held.holds] == [None] and held.double_holds == 0  # died holding it


def test_audit_finds_a_board_asked_while_held(tmp_path: Path) -> None:
    root = tmp_path / "b"
    root.mkdir()
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with lock.bench_lock(str(root), "w1", 0.0, time.monotonic() + 30):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    inside.wait(10)
    threading.Timer(0.3, release.set).start()
    with lock.bench_lock(str(root), "w2", 5.0, time.monotonic() + 30):  # waits for w1: a double lease
        pass
    t.join()
    result = audit({"b": root})
    assert len(result.holds) == 2 and result.overlaps == []
    assert [(e["holder"], e["held_by"]) for e in result.contended] == [("w2", "w1")]
    assert result.double_holds == 1
