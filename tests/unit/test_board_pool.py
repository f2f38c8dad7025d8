"""The board pool: leases on the machine a board measures on, on a real SQLite database."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from device_agents.inventory import parse_farm, this_host
from device_agents.leases import LeaseTable
from device_agents.pool import BoardPool, pool_url
from harness.errors import BoardBusyError, ConfigError


def _farm(boards: list[dict]) -> object:
    return parse_farm({"version": 1, "board": boards}, "<test farm>")


def _hammer(url: str, holder: str, rounds: int, q: mp.Queue) -> None:
    table = LeaseTable(create_engine(url))
    spans = []
    for _ in range(rounds):
        lease = table.take_any(["b0", "b1"], holder, ttl_s=60, wait_s=30, poll_s=0.01)
        assert lease is not None
        t0 = time.time()
        time.sleep(0.01)
        spans.append((lease.key, t0, time.time()))
        table.release(lease)
    q.put(spans)


def test_leases_are_exclusive_across_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'leases.db'}"
    LeaseTable(create_engine(url))
    q: mp.Queue = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(target=_hammer, args=(url, f"w{i}", 15, q)) for i in range(3)]
    for p in procs:
        p.start()
    spans = [s for _ in procs for s in q.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for key in ("b0", "b1"):
        mine = sorted((a, b) for name, a, b in spans if name == key)
        for (_, end), (start, _) in zip(mine, mine[1:], strict=False):
            assert start >= end - 1e-3, "a key was leased twice at once"
    assert len(spans) == 45


def test_expired_lease_can_be_taken(tmp_path: Path) -> None:
    table = LeaseTable(create_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    assert table.try_take("b", "a", ttl_s=1.0)
    assert table.try_take("b", "c", ttl_s=10) is None
    time.sleep(1.1)
    assert table.try_take("b", "c", ttl_s=10)


def test_lease_of_a_dead_local_process_is_reaped_and_live_ones_renew(tmp_path: Path) -> None:
    table = LeaseTable(create_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert table.try_take("b", f"{socket.gethostname()}:{dead.pid}:x", ttl_s=600)
    assert table.try_take("b", "other:1:y", ttl_s=600)  # the dead holder's lease does not block
    live = table.try_take("c", f"{socket.gethostname()}:{os.getpid()}:z", ttl_s=0.2)
    assert live and table.renew(live, ttl_s=600)
    time.sleep(0.3)
    assert table.try_take("c", "other:1:y", ttl_s=600) is None  # renewed: still held


def test_every_board_knows_its_machine() -> None:
    farm = _farm([
        {"name": "a", "profile": "local"},
        {"name": "b", "profile": "local"},
        {"name": "pi", "profile": "rpi5", "transport": {"kind": "ssh", "host": "10.0.0.5"}},
        {"name": "pi-serial", "profile": "rpi5", "transport": {"kind": "serial", "device": "/dev/ttyUSB0"},
         "tags": ["same-board:pi"]},
        {"name": "q", "profile": "qemu-aarch64",
         "transport": {"kind": "ssh", "host": "127.0.0.1", "port": 2222}},
        {"name": "lab", "profile": "rpi5", "transport": {"kind": "ssh", "host": "10.0.0.6"},
         "machine": "rack-1"},
    ])  # fmt: skip
    machine = {b.name: b.machine for b in farm.boards}
    assert machine["a"] == machine["b"] == machine["q"] == this_host()  # same cores
    assert machine["pi"] == machine["pi-serial"] == "board:pi"  # two names for one board
    assert machine["lab"] == "rack-1"


def test_a_same_board_tag_naming_no_board_is_an_error() -> None:
    with pytest.raises(ConfigError, match="same-board:ghost"):
        _farm([{"name": "x", "profile": "local", "tags": ["same-board:ghost"]}])


def test_a_busy_machine_says_who_holds_it_and_since_when(tmp_path: Path) -> None:
    url = str(tmp_path / "pool.db")
    farm = _farm([{"name": "a", "profile": "local"}, {"name": "b", "profile": "local"}])
    first, second = BoardPool(url, holder="tuner-1"), BoardPool(url, holder="nightly-1")
    with first.hold([farm.board("a")]):
        with pytest.raises(BoardBusyError) as err:
            with second.hold([farm.board("b")]):
                pass
    msg = str(err.value)
    assert msg.startswith("board b busy (machine host:")
    assert "held by tuner-1:1 for board a since 20" in msg and "UTC" in msg and "--wait" in msg
    with second.hold([farm.board("b")]) as held:  # released on exit: free again
        assert held.board.name == "b"


def _windows(pool: BoardPool, board: object, n: int, out: list[tuple[float, float]], wait_s: float) -> None:
    for _ in range(n):
        with pool.hold([board], wait_s=wait_s):
            t0 = time.monotonic()
            time.sleep(0.05)
            out.append((t0, time.monotonic()))


def _overlaps(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> bool:
    return any(a0 < b1 and b0 < a1 for a0, a1 in x for b0, b1 in y)


def test_boards_on_one_machine_take_turns_and_separate_machines_run_together(tmp_path: Path) -> None:
    url = str(tmp_path / "pool.db")
    farm = _farm([
        {"name": "a", "profile": "local"}, {"name": "b", "profile": "local"},
        {"name": "p", "profile": "rpi5", "transport": {"kind": "ssh", "host": "10.0.0.5"}},
        {"name": "r", "profile": "rpi5", "transport": {"kind": "ssh", "host": "10.0.0.6"}},
    ])  # fmt: skip
    spans: dict[str, list[tuple[float, float]]] = {n: [] for n in "abpr"}
    threads = [
        threading.Thread(target=_windows, args=(BoardPool(url, holder=n), farm.board(n), 6, spans[n], 30.0))
        for n in "abpr"
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(len(s) == 6 for s in spans.values())
    assert not _overlaps(spans["a"], spans["b"]), "two boards on one machine measured at once"
    assert _overlaps(spans["p"], spans["r"]), "boards on separate machines were serialised"


def test_threads_sharing_one_pool_still_take_turns(tmp_path: Path) -> None:
    farm = _farm([{"name": "a", "profile": "local"}, {"name": "b", "profile": "local"}])
    pool = BoardPool(str(tmp_path / "pool.db"), holder="nightly")  # one pool, one thread per board
    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    threads = [threading.Thread(target=_windows, args=(pool, farm.board(n), 5, spans[n], 30.0)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(spans["a"]) == len(spans["b"]) == 5
    assert not _overlaps(spans["a"], spans["b"])


def test_wait_returns_how_long_it_waited(tmp_path: Path) -> None:
    url = str(tmp_path / "pool.db")
    board = _farm([{"name": "a", "profile": "local"}]).board("a")
    holder = BoardPool(url, holder="first")
    release = threading.Event()

    def hold() -> None:
        with holder.hold([board]):
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.2)
    threading.Timer(0.5, release.set).start()
    with BoardPool(url, holder="second").hold([board], wait_s=10) as held:
        assert held.waited_s >= 0.3
    t.join(5)


def test_pool_url_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HILT_POOL", raising=False)
    monkeypatch.setenv("HILT_CACHE", str(tmp_path / "cache"))
    assert pool_url() == f"sqlite:///{tmp_path / 'cache' / 'pool.db'}"
    assert pool_url(storage="sqlite:///study.db") == f"sqlite:///{tmp_path / 'cache' / 'pool.db'}"
    assert pool_url(storage="postgresql://h/db") == "postgresql://h/db"  # a shared study DB is shared
    monkeypatch.setenv("HILT_POOL", str(tmp_path / "env.db"))
    assert pool_url(storage="postgresql://h/db") == f"sqlite:///{tmp_path / 'env.db'}"
    assert pool_url("postgresql://x/y") == "postgresql://x/y"
    with pytest.raises(ConfigError, match="neither sqlite"):
        pool_url("redis://localhost")


def test_a_lost_board_is_set_aside_for_every_worker_and_comes_back(tmp_path: Path) -> None:
    farm = _farm([{"name": n, "profile": "local", "machine": f"m-{n}"} for n in ("a", "b", "c")])
    url = str(tmp_path / "pool.db")
    one, two = BoardPool(url, holder="w1"), BoardPool(url, holder="w2")
    with one.hold(farm.boards) as held:
        assert held.board.name == "a"
    one.set_aside(farm.board("a"), "board a: no answer to 'bench'", for_s=1.0)
    with two.hold(farm.boards) as held, one.hold(farm.boards) as other:  # the other worker skips it too
        assert (held.board.name, other.board.name) == ("b", "c")
    with pytest.raises(BoardBusyError, match=r"board a set aside since .*lost: board a: no answer"):
        with two.hold([farm.board("a")]):
            pass
    time.sleep(1.1)  # the mark expires: a rebooted board is tried again
    with two.hold(farm.boards) as held:
        assert held.board.name == "a"


def test_hold_tries_free_machines_first(tmp_path: Path) -> None:
    farm = _farm([{"name": f"b{i}", "profile": "local", "machine": f"m{i}"} for i in range(6)])
    pool = BoardPool(str(tmp_path / "pool.db"), holder="w")
    held = [pool.leases.try_take(f"m{i}", f"other:{i}:x", 60) for i in range(5)]
    assert all(held)
    holders = pool.leases.live_holders([f"m{i}" for i in range(6)])
    assert holders == {f"m{i}": f"other:{i}:x" for i in range(5)}
    with pool.hold(farm.boards) as got:
        assert got.board.name == "b5" and got.waited_s < 1.0
