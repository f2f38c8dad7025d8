"""Faults between host and agent, on real agents, runners and ptys:

- damage in the board→host direction: the bench-result frame corrupted (one byte flipped) and truncated,
  asked again by request id and replayed from the agent's reply cache (the bench never runs twice)
  (its tail never sent) by a pty relay on a serial board, during a tuning run: a typed timeout on that
  board, a retry on the other board, and every measurement recorded exactly once;
- the agent SIGSTOPped mid-bench: AgentTimeoutError within the timeout, not a hang;
- a bundle with one byte changed: refused by the agent (upload and install), by the runner (the agent's
  installed copy damaged), and rebuilt by the host (its cached copy damaged).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from device_agents.agent import wire
from device_agents.bench import BenchOptions, bundle_tree, run_bench
from device_agents.inventory import Board, default_farm
from device_agents.transports.base import agent_pyz
from device_agents.transports.local import LocalTransport
from harness.errors import AgentTimeoutError, ArtifactError, RemoteError
from hilt_base import hashing
from tests.unit.prune_tiny import tiny_model, write_tiny_task
from tests.waiting import wait_for
from tuner.store import ResultsStore, stored_record

pytestmark = pytest.mark.timeout(900)


class ReplyDamage:
    """host pty <-> relay <-> board pty, forwarding both ways; the board→host bench answers are damaged
    in turn by `modes` ("flip": one payload byte XORed, so the CRC fails; "truncate": the frame's last
    half never sent). Everything else passes untouched. Minimal on purpose: frames are cut at MAGIC."""

    def __init__(self, modes: list[str]) -> None:
        self.modes = list(modes)
        self.damaged: list[tuple[str, float]] = []
        self._host_m, self._host_s = os.openpty()
        self._board_m, self._board_s = os.openpty()
        for fd in (self._host_s, self._board_s):
            tty.setraw(fd)
        self.host_path, self.board_path = os.ttyname(self._host_s), os.ttyname(self._board_s)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._pump, args=(self._host_m, self._board_m, False), daemon=True),
            threading.Thread(target=self._pump, args=(self._board_m, self._host_m, True), daemon=True),
        ]

    def __enter__(self) -> ReplyDamage:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for fd in (self._host_m, self._host_s, self._board_m, self._board_s):
            os.close(fd)

    def _frames(self, buf: bytearray) -> Iterator[bytes]:
        """Complete frames at the head of `buf` (removed from it); bytes outside frames pass as they are."""
        while buf:
            starts = [i for i in (buf.find(wire.MAGIC), buf.find(wire.MAGIC2)) if i >= 0]
            i = min(starts) if starts else -1
            if i != 0:
                n = len(buf) - len(wire.MAGIC) + 1 if i < 0 else i  # keep what may start a MAGIC
                if n <= 0:
                    return
                yield bytes(buf[:n])
                del buf[:n]
                continue
            checked = bytes(buf[:4]) == wire.MAGIC2  # MAGIC2 frames carry a CRC of the length too
            if len(buf) < (12 if checked else 8):
                return
            total = (16 if checked else 12) + struct.unpack(">I", bytes(buf[4:8]))[0]
            if len(buf) < total:
                return
            yield bytes(buf[:total])
            del buf[:total]

    def _damage(self, frame: bytes) -> bytes:
        if not self.modes or not frame.startswith((wire.MAGIC, wire.MAGIC2)) or b'"runner"' not in frame:
            return frame
        mode = self.modes.pop(0)
        self.damaged.append((mode, time.time()))
        if mode == "flip":
            at = frame.index(b'"runner"') + 2
            return frame[:at] + bytes([frame[at] ^ 0xFF]) + frame[at + 1 :]
        return frame[: len(frame) // 2]

    def _pump(self, src: int, dst: int, damage: bool) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([src], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(src, 1 << 16)
            except OSError:  # the far end closed its side for a moment
                time.sleep(0.01)
                continue
            if not damage:
                os.write(dst, data)
                continue
            buf += data
            for piece in self._frames(buf):
                out = memoryview(self._damage(piece))
                while out:
                    n = os.write(dst, out)
                    out = out[n:]


def test_damaged_bench_answers_are_asked_again_and_replayed_not_rerun(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tuner.space import SpaceConfig
    from tuner.tune import TuneRequest, tune

    task = write_tiny_task(tmp_path / "task")
    timeout = 8.0
    with ReplyDamage(["flip", "truncate"]) as relay:
        agent = subprocess.Popen(
            [sys.executable, str(agent_pyz()), "--serial", relay.board_path, "--cache", str(tmp_path / "sc")]
        )
        try:
            farm = tmp_path / "farm.toml"
            farm.write_text(
                'version = 1\n[[board]]\nname = "line"\nprofile = "local"\n'
                f'[board.transport]\nkind = "serial"\ndevice = "{relay.host_path}"\nbaud = 921600\n'
                f'[[board]]\nname = "good"\nprofile = "local"\n'
                f'[board.transport]\nkind = "local"\nagent_dir = "{tmp_path / "good-store"}"\n'
            )  # fmt: skip
            db = f"sqlite:///{tmp_path / 'hilt.db'}"
            req = TuneRequest(
                model=str(task["model"]), study="damage", storage=db, farm=str(farm), profile="local",
                trials=1, calib=task["calib"], val=task["val"], use_sia=False, work_dir=tmp_path / "runs",
                pool=str(tmp_path / "pool.db"), space=SpaceConfig(max_stages=1, max_steps=0),
                bench_options=BenchOptions(
                    min_iters=20, min_seconds=0.2, idle_seconds=0, timeout_s=timeout, wait_s=1.0
                ),  # each board has its own agent store here: no one else's bench lock to queue behind
            )  # fmt: skip
            with caplog.at_level(logging.WARNING, logger="tuner.pipeline"):
                tune(req)
            assert agent.poll() is None  # the board's agent never noticed: only its answers were hit
        finally:
            agent.kill()
            agent.wait()
    # the dense bench's answer was corrupted, the trial's truncated: each on board "line". The host
    # asks again by request id and the agent re-sends its cached answer: no bench runs twice, none
    # is lost, and nothing moves to the other board
    assert [m for m, _ in relay.damaged] == ["flip", "truncate"]
    assert not [r for r in caplog.records if "lost during bench" in r.getMessage()]
    study = optuna.load_study(study_name="damage", storage=db)
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert trial.user_attrs["board"] == "line" and study.user_attrs["dense"]["board"] == "line"
    rows = ResultsStore(db).measurements(study="damage")
    assert sorted((r["trial_number"] is None, r["board"]) for r in rows) == [(False, "line"), (True, "line")]
    records = sorted((stored_record(r) for r in rows), key=lambda r: r.started_at)
    assert all(r.line is not None for r in records)
    assert sum(r.line.retries for r in records if r.line) >= 2  # each damaged answer was asked again
    assert max(r.line.agent.get("replays", 0) for r in records if r.line) >= 2  # both answers re-sent


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def board() -> Board:
    return default_farm().board("local")


def test_sigstopped_agent_mid_bench_is_a_timeout_not_a_hang(board: Board, tmp_path: Path) -> None:
    opts = BenchOptions(warmup=0, min_iters=5, min_seconds=2.0, idle_seconds=0.0, power=False, timeout_s=6.0)
    t = LocalTransport("stopped", cache=tmp_path / "store")
    t.open()
    agent = t.pid
    assert agent is not None
    out: dict[str, object] = {}

    def bench() -> None:
        t0 = time.monotonic()
        try:
            out["record"] = run_bench(t, board, None, opts)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc
        out["seconds"] = time.monotonic() - t0

    th = threading.Thread(target=bench, daemon=True)
    th.start()
    runner: list[int] = []
    try:

        def runners() -> list[int]:
            return [c for c in _children(agent) if b"hilt-runner" in Path(f"/proc/{c}/cmdline").read_bytes()]

        runner = wait_for(runners, 120, "the runner", poll=0.02)
        stopped_at = time.monotonic()
        os.kill(agent, signal.SIGSTOP)
        th.join(timeout=opts.timeout_s + t.grace_s + 10)
        assert not th.is_alive(), "the host hung on a stopped agent"
        assert time.monotonic() - stopped_at < opts.timeout_s + t.grace_s + 2
        err = out.get("error")
        assert isinstance(err, AgentTimeoutError) and "no answer to 'bench'" in str(err), out
        assert "record" not in out
        t0 = time.monotonic()
        t.close()  # a silent agent is not asked to shut down; closing it does not wait on it either
        assert time.monotonic() - t0 < 10
    finally:
        try:
            os.kill(agent, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in runner:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _xor_byte(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF  # always a different byte
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def test_one_byte_changed_bundle_refused_by_agent_and_runner_and_rebuilt_by_host(
    board: Board, tmp_path: Path
) -> None:
    from harness.compile import CompileOptions, compile_model

    model = tmp_path / "model"
    tiny_model("gpt2", layers=1, seed=11).save_pretrained(model)
    built = compile_model(model, "local", CompileOptions(seq_len=8)).bundle
    sha, files = bundle_tree(built.directory)
    opts = BenchOptions(warmup=0, min_iters=3, min_seconds=0.0, idle_seconds=0.0, power=False)

    # the agent: an upload whose bytes do not hash to the name it claims is refused at commit, and an
    # install whose metadata.json lists other hashes is refused
    damaged = tmp_path / "input.bin"
    shutil.copyfile(files["input.bin"], damaged)
    _xor_byte(damaged)
    good_sha = hashing.sha256_file(str(files["input.bin"]))
    with LocalTransport("agent", cache=tmp_path / "store") as t:
        assert t.request("put", {"sha256": good_sha, "op": "begin"})["offset"] == 0
        t.request("put", {"sha256": good_sha, "op": "chunk", "offset": 0}, body=damaged.read_bytes())
        with pytest.raises(RemoteError) as refused:
            t.request("put", {"sha256": good_sha, "op": "commit"})
        assert refused.value.kind == "hash_mismatch"
        assert t.request("has", {"hashes": [good_sha]})["held"] == []
        meta = tmp_path / "metadata.json"
        meta.write_text(files["metadata.json"].read_text().replace(good_sha, "0" * 64))
        hashes = {n: hashing.sha256_file(str(p)) for n, p in files.items()}
        for name, path in files.items():
            t.upload(meta if name == "metadata.json" else path)
        hashes["metadata.json"] = hashing.sha256_file(str(meta))
        with pytest.raises(RemoteError) as refused:
            t.request("install", {"kind": "bundle", "hash": sha, "files": hashes})
        assert refused.value.kind == "hash_mismatch"
        assert t.request("has", {"hashes": [sha]})["held"] == []

        # the runner: the agent's installed copy loses one byte's worth of truth; the runner refuses it
        first = run_bench(t, board, built.directory, opts)
        assert first.artifact == sha
        _xor_byte(tmp_path / "store" / "bundle" / sha / "model.so", at=100)
        with pytest.raises(RemoteError) as refused:
            run_bench(t, board, built.directory, opts)
        assert refused.value.kind == "runner_hash_mismatch" and "model.so" in str(refused.value)

    # the host: its cached copy changed by one byte is refused before shipping, and rebuilt by compile
    _xor_byte(Path(built.directory) / "input.bin")
    with (
        LocalTransport("host", cache=tmp_path / "store2") as t,
        pytest.raises(ArtifactError, match="input.bin"),
    ):
        run_bench(t, board, built.directory, opts)
    again = compile_model(model, "local", CompileOptions(seq_len=8))
    assert not again.cached
    rebuilt_sha, _ = bundle_tree(again.bundle.directory)  # verifies every file against metadata.json
    assert rebuilt_sha == sha and again.bundle.directory == built.directory  # the damaged copy, replaced
    with LocalTransport("host", cache=tmp_path / "store2") as t:
        record = run_bench(t, board, again.bundle.directory, opts)
    assert record.artifact == rebuilt_sha and record.summary.n >= 3
    assert compile_model(model, "local", CompileOptions(seq_len=8)).cached  # and the rebuild is the cache
