"""The on-board bench lock: a second bench on the same store is refused (or waits), with who holds
the board and since when; a dead holder never leaves the board locked. Real agents, a real runner
script and real flocks, held in this process and in other processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from device_agents.agent import lock, serve, wire
from device_agents.transports.local import LocalTransport
from harness.errors import BoardBusyError, HiltError, RemoteError
from hilt_base import hashing

RUNNER = """#!/bin/sh
sleep "${HILT_TEST_RUNNER_S:-0}"
echo '{"ok": true, "samples_ns": [1000, 1200, 1100], "warmup": 0, "threads": 1}'
"""


def _call(a: serve.Agent, type_: str, args: dict[str, Any], timeout: float = 10) -> dict:
    header = {"v": wire.PROTOCOL_VERSION, "id": 1, "type": type_, "timeout": timeout, "args": args}
    return a.handle(header, b"")


def _install_runner(a: serve.Agent) -> str:
    """A stand-in hilt-runner (a shell script) installed through the store like a real runtime."""
    data = RUNNER.encode()
    sha = hashlib.sha256(data).hexdigest()
    a.store.put({"sha256": sha, "op": "chunk", "offset": 0}, data)
    a.store.put({"sha256": sha, "op": "commit"}, b"")
    files = {wire.RUNNER_NAME: sha}
    tree = hashing.tree_hash(files)
    assert _call(a, "install", {"kind": "runtime", "hash": tree, "files": files})["ok"]
    return tree


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture()
def agent(store: Path, tmp_path: Path) -> serve.Agent:
    return serve.Agent(str(store), sysfs=str(tmp_path / "sys"))


def _bench(a: serve.Agent, runtime: str, **kw: Any) -> dict:
    return _call(
        a, "bench", {"runtime": runtime, "selftest": True, "idle_seconds": 0.0, "power": False, **kw}
    )


def test_busy_board_refuses_at_once_and_names_the_holder(agent: serve.Agent, store: Path) -> None:
    runtime = _install_runner(agent)
    deadline = time.monotonic() + 30
    with lock.bench_lock(str(store), "alice@lab (pid 1)", 0.0, deadline):
        t0 = time.monotonic()
        res = _bench(agent, runtime, holder="bob@desk")
        assert time.monotonic() - t0 < 1.0
        assert _call(agent, "hello", {})["result"]["bench_lock"]["holder"] == "alice@lab (pid 1)"
    assert res["ok"] is False and res["error"]["type"] == "busy"
    msg = res["error"]["message"]
    assert msg.startswith(f"board busy: held by alice@lab (pid 1) (agent pid {os.getpid()}) since 20")
    assert _bench(agent, runtime)["ok"]  # released: the next bench runs
    assert _call(agent, "hello", {})["result"]["bench_lock"] is None


def test_bench_waits_for_the_lock_when_asked(agent: serve.Agent, store: Path) -> None:
    runtime = _install_runner(agent)
    held = threading.Event()

    def hold() -> None:
        with lock.bench_lock(str(store), "tuner", 0.0, time.monotonic() + 30):
            held.set()
            time.sleep(0.6)

    th = threading.Thread(target=hold)
    th.start()
    held.wait(5)
    gave_up = _bench(agent, runtime, wait_s=0.2)
    assert gave_up["error"]["type"] == "busy" and "gave up after waiting 0." in gave_up["error"]["message"]
    t0 = time.monotonic()
    res = _bench(agent, runtime, wait_s=5)
    th.join()
    assert res["ok"], res
    assert time.monotonic() - t0 >= 0.2  # it really waited for the holder to finish
    assert res["result"]["runner"]["samples_ns"] == [1000, 1200, 1100]


def test_a_killed_holder_does_not_leave_the_board_locked(agent: serve.Agent, store: Path) -> None:
    runtime = _install_runner(agent)
    code = (
        "import sys, time\n"
        "from device_agents.agent.lock import bench_lock\n"
        "with bench_lock(sys.argv[1], 'doomed', 0.0, time.monotonic() + 60):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        res = _bench(agent, runtime)
        assert res["error"]["type"] == "busy" and "held by doomed" in res["error"]["message"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _bench(agent, runtime)["ok"]


@pytest.mark.parametrize("args", [{"wait_s": -1}, {"wait_s": "soon"}, {"holder": 7}])
def test_bad_lock_arguments_are_typed_errors(agent: serve.Agent, args: dict) -> None:
    runtime = _install_runner(agent)
    res = _bench(agent, runtime, **args)
    assert res["error"]["type"] == "bad_request"


def test_the_host_gets_a_board_busy_error(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two agent processes on one store: the second bench fails with BoardBusyError (a HiltError:
    the CLI prints its one line and exits 2)."""
    monkeypatch.setenv("HILT_TEST_RUNNER_S", "2")
    with LocalTransport("a", cache=store) as first, LocalTransport("b", cache=store) as second:
        runtime = _install_runner(serve.Agent(str(store)))
        args = {"runtime": runtime, "selftest": True, "idle_seconds": 0.0, "power": False}
        out: dict[str, Any] = {}
        th = threading.Thread(target=lambda: out.update(first.request("bench", {**args, "holder": "first"})))
        th.start()
        deadline = time.monotonic() + 10
        while lock.read_holder(str(store)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(BoardBusyError) as info:
            second.request("bench", {**args, "holder": "second"})
        th.join()
    assert isinstance(info.value, HiltError) and not isinstance(info.value, RemoteError)  # busy, not lost
    assert info.value.kind == "busy"
    text = str(info.value)
    assert text.startswith("board b busy: held by first (agent pid ") and " since 20" in text
    assert out["runner"]["samples_ns"]  # the holder's bench was not disturbed
