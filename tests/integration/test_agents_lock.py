"""Two real agents sharing one board (one store, as two SSH sessions or two hosts would): their
bench windows never overlap, and a bench that will not wait is told who holds the board."""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from pathlib import Path

import pytest

from device_agents.agent import lock
from device_agents.bench import BenchOptions, run_bench, runtime_files, ship_tree
from device_agents.inventory import Board, default_farm
from device_agents.records import MeasurementRecord
from device_agents.transports.local import LocalTransport
from harness.errors import BoardBusyError

ARCH = os.uname().machine
OPTS = BenchOptions(warmup=1, min_iters=5, min_seconds=0.6, idle_seconds=0.1, wait_s=120.0)


@pytest.fixture(scope="module")
def runtime() -> tuple[str, dict[str, Path], dict[str, str]]:
    try:
        return runtime_files(ARCH)
    except Exception as exc:  # noqa: BLE001 - no runtime here is a skip with its reason, not a failure
        pytest.skip(f"board runtime for {ARCH} unavailable: {exc}")


@pytest.fixture()
def board() -> Board:
    return default_farm().board("local")


@pytest.fixture()
def store(tmp_path: Path, runtime: tuple) -> Path:
    store = tmp_path / "store"
    with LocalTransport("setup", cache=store) as t:
        tree, files, versions = runtime
        ship_tree(t, "runtime", files, tree, versions=versions)
    return store


def _bench_in_thread(name: str, store: Path, board: Board, opts: BenchOptions, out: dict) -> threading.Thread:
    def run() -> None:
        try:
            with LocalTransport(name, cache=store) as t:
                out[name] = run_bench(t, board, None, dataclasses.replace(opts, holder=name))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out[name] = exc

    th = threading.Thread(target=run, name=f"bench-{name}")
    th.start()
    return th


def test_two_agents_on_one_store_never_bench_at_once(store: Path, board: Board) -> None:
    out: dict[str, MeasurementRecord | BaseException] = {}
    threads = [_bench_in_thread(name, store, board, OPTS, out) for name in ("a", "b", "c")]
    for th in threads:
        th.join(timeout=300)
    records = [out[n] for n in ("a", "b", "c")]
    assert all(isinstance(r, MeasurementRecord) for r in records), records
    windows = sorted((r.started_at, r.finished_at) for r in records)  # type: ignore[union-attr]
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, f"bench windows overlap: {windows}"


def test_a_bench_that_will_not_wait_gets_busy(store: Path, board: Board) -> None:
    out: dict[str, MeasurementRecord | BaseException] = {}
    long = dataclasses.replace(OPTS, min_seconds=3.0)
    th = _bench_in_thread("nightly", store, board, long, out)
    deadline = time.monotonic() + 60
    while (lock.read_holder(str(store)) or {}).get("holder") != "nightly":
        assert time.monotonic() < deadline, "the first bench never took the board"
        time.sleep(0.02)
    t0 = time.monotonic()
    with LocalTransport("tune", cache=store) as t, pytest.raises(BoardBusyError) as info:
        run_bench(t, board, None, dataclasses.replace(OPTS, holder="tune", wait_s=0.0))
    assert time.monotonic() - t0 < 10  # refused, not queued
    assert "held by nightly" in str(info.value) and " since 20" in str(info.value)
    th.join(timeout=120)
    assert isinstance(out["nightly"], MeasurementRecord)
    assert out["nightly"].finished_at > out["nightly"].started_at
