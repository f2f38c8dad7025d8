"""Serial on a noisy line, against real parts: the packed agent serving `--serial` on one end of
hilt's pty relay, which damages bytes at random from fixed seeds (bit flips, dropped bytes, bursts
of garbage; either direction), and the serial transport on the other end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from device_agents.agent import wire
from device_agents.linesim import LineNoise, PtyRelay
from device_agents.transports.base import LineTooNoisyError, agent_pyz
from device_agents.transports.serial import SerialTransport
from harness.errors import HiltError, TransportError
from hilt_base import hashing

BAUD = 921600


@contextmanager
def agent_on_relay(cache: Path, baud: int | None = None, seed: int = 0) -> Iterator[PtyRelay]:
    """A relay (unthrottled unless `baud`) with the packed agent serving its board end."""
    with PtyRelay(baud=baud, seed=seed) as relay:
        proc = subprocess.Popen(
            [sys.executable, str(agent_pyz()), "--serial", relay.board_path, "--cache", str(cache)]
        )
        try:
            yield relay
        finally:
            proc.kill()
            proc.wait()


def _blob(tmp_path: Path, size: int, name: str = "blob") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _runtime_or_skip(blas: bool = True) -> tuple[str, dict[str, Path], dict[str, Any]]:
    from device_agents.bench import runtime_files

    try:
        return runtime_files(os.uname().machine, blas=blas)
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot be built here is a skip, with its reason
        pytest.skip(f"board runtime unavailable: {exc}")


SWEEP = [
    ("flips-1e-4", LineNoise(flip=1e-4), True),
    ("flips-1e-3", LineNoise(flip=1e-3), True),
    ("drops-1e-4", LineNoise(drop=1e-4), True),
    ("drops-1e-3", LineNoise(drop=1e-3), True),
    ("bursts-5e-5", LineNoise(burst=5e-5, burst_len=32), True),
    ("bursts-2e-4", LineNoise(burst=2e-4, burst_len=32), True),
    ("mixed-to-host-only", LineNoise(flip=1e-3, drop=3e-4, burst=5e-5), False),
]


@pytest.mark.parametrize(("name", "noise", "to_board"), SWEEP, ids=[s[0] for s in SWEEP])
def test_upload_survives_random_noise(name: str, noise: LineNoise, to_board: bool, tmp_path: Path) -> None:
    blob = _blob(tmp_path, 200_000)
    seed = [s[0] for s in SWEEP].index(name)
    with agent_on_relay(tmp_path / "cache", seed=seed) as relay:
        with SerialTransport("noisy", relay.host_path, BAUD) as t:
            relay.set_noise(noise if to_board else None, noise)
            sha = t.upload(blob)
            assert t.request("has", {"hashes": [sha]})["held"] == [sha]
            relay.set_noise(None, None)
        damage = relay.noise_damage
    assert sha == hashing.sha256_file(str(blob))
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == blob.read_bytes()
    assert sum(damage["to_board" if to_board else "to_host"].values()) > 0
    assert to_board or sum(damage["to_board"].values()) == 0
    assert t.line.frames_failed > 0 and t.line.retries > 0 and t.line.upload_bytes == 200_000


def test_bench_over_a_noisy_line_completes_with_the_right_hash(tmp_path: Path) -> None:
    from device_agents.bench import BenchOptions, run_bench
    from device_agents.inventory import default_farm

    rt_tree, rt_files, _ = _runtime_or_skip(blas=False)  # the self-test needs no libhilt_blas
    board = default_farm().board("local")
    noise = LineNoise(flip=1e-4, drop=5e-5)
    with agent_on_relay(tmp_path / "cache", seed=11) as relay:
        with SerialTransport("noisy", relay.host_path, BAUD) as t:
            relay.set_noise(noise, noise)
            opts = BenchOptions(warmup=1, min_iters=5, min_seconds=0.0, idle_seconds=0.0, power=False)
            record = run_bench(t, board, None, opts)
    installed = tmp_path / "cache" / "runtime" / rt_tree
    for name, path in rt_files.items():  # the runtime the agent assembled is the one that was sent
        assert hashing.sha256_file(str(installed / name)) == hashing.sha256_file(str(path))
    assert not (installed / "libhilt_blas.so").exists()
    assert record.runtime == rt_tree and record.summary.n >= 5 and record.transport == "serial"
    assert record.line is not None and record.line.retries > 0 and record.line.frames_failed > 0
    assert record.line.upload_bytes >= sum(p.stat().st_size for p in rt_files.values())
    assert sum(relay.noise_damage["to_board"].values()) > 100


def test_a_lost_last_chunk_is_sent_again_soon_on_a_line_faster_than_its_baud(tmp_path: Path) -> None:
    """A pty crosses bytes far faster than 921600 baud, so the nominal backlog of a 2 MB upload is
    about 22 s; a lost last chunk (no later answer shows it lost) must be sent again after about a
    second, not after that backlog (what once stalled a bench near the end of its upload)."""
    big, small = _blob(tmp_path, 2_000_000, "big"), _blob(tmp_path, 4_000, "small")
    with agent_on_relay(tmp_path / "cache") as relay:

        class LosesNextChunk(SerialTransport):
            armed = False

            def _send(self, data: bytes) -> None:
                if self.armed and b'"chunk"' in data:  # the real relay drops this frame's head
                    self.armed = False
                    relay.drop_next("to_board", 40)
                super()._send(data)

        with LosesNextChunk("fast", relay.host_path, BAUD) as t:
            t.upload(big)
            t.armed = True
            t0 = time.monotonic()
            sha = t.upload(small)
            took = time.monotonic() - t0
    assert not t.armed and t.line.retries >= 1  # the chunk was lost and sent again
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == small.read_bytes()
    assert took < 3.0, f"a lost tail chunk took {took:.1f} s to recover"


def test_a_short_request_survives_a_lost_reply(tmp_path: Path) -> None:
    with agent_on_relay(tmp_path / "cache", baud=BAUD) as relay:
        with SerialTransport("lossy", relay.host_path, BAUD) as t:
            relay.drop_next("to_host", 30)  # the head of the next answer vanishes
            t0 = time.monotonic()
            assert t.request("has", {"hashes": ["e" * 64]}, timeout=10.0)["held"] == []
            took = time.monotonic() - t0
    assert took < 2.0  # resent after a short, line-rate timeout, not after the 10 s request timeout
    assert t.line.retries == 1


def _read_answers(fd: int, n: int, timeout: float) -> list[dict[str, Any]]:
    dec = wire.FrameDecoder()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        out += [h for h, _ in dec.feed(data) if h is not None and h.get("id") is not None]
    return out


def test_a_repeated_bench_id_runs_once(tmp_path: Path) -> None:
    from device_agents.bench import ship_tree

    rt_tree, rt_files, versions = _runtime_or_skip()
    args = {"runtime": rt_tree, "selftest": True, "warmup": 1, "min_iters": 5, "min_seconds": 0.0,
            "idle_seconds": 0.0, "power": False, "holder": "test"}  # fmt: skip
    with agent_on_relay(tmp_path / "cache") as relay:
        with SerialTransport("tty", relay.host_path, BAUD) as t:
            ship_tree(t, "runtime", rt_files, rt_tree, versions=versions)
            # the bench's answer is lost: the transport sends the request again with its id, and the
            # agent re-sends the result it has instead of running the bench again
            relay.drop_next("to_host", 40)
            result = t.request("bench", args, timeout=60.0)
            assert result["runner"]["samples_ns"] and t.line.replays == 1
        # the same id twice on the raw line: two answers, one run
        fd = os.open(relay.host_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
            req = {"v": wire.PROTOCOL_VERSION, "id": "twice-1", "type": "bench", "timeout": 60, "args": args}
            os.write(fd, wire.encode_frame(req) + wire.encode_frame(req))
            first, second = _read_answers(fd, 2, 60.0)
            os.write(fd, wire.encode_frame(dict(req, id="twice-2")))
            (third,) = _read_answers(fd, 1, 60.0)
        finally:
            os.close(fd)
    assert first["ok"] and not first.get("replayed") and second["replayed"]
    assert second["result"] == first["result"]  # the very same run: same start time, same samples
    assert third["ok"] and third["result"]["started_at"] != first["result"]["started_at"]


def test_a_line_nothing_crosses_ends_in_one_clear_error_and_the_upload_resumes(tmp_path: Path) -> None:
    blob = _blob(tmp_path, 600_000)
    cache = tmp_path / "cache"
    sha = hashing.sha256_file(str(blob))
    with agent_on_relay(cache, baud=BAUD, seed=5) as relay:
        t = SerialTransport("hopeless", relay.host_path, BAUD)
        t.progress_timeout_s = 30.0
        t.open()
        try:
            import threading

            def spoil() -> None:  # the line goes bad a third of the way in
                while relay.forwarded["to_board"] < 200_000:
                    time.sleep(0.005)
                relay.set_noise(LineNoise(flip=0.05), LineNoise(flip=0.05))

            threading.Thread(target=spoil, daemon=True).start()
            t0 = time.monotonic()
            with pytest.raises(LineTooNoisyError) as info:
                t.upload(blob)
            took = time.monotonic() - t0
        finally:
            t.close()
        message = str(info.value)
        stored = (cache / "partial" / sha).stat().st_size
        relay.set_noise(None, None)
        with SerialTransport("clean-again", relay.host_path, BAUD) as again:
            assert again.upload(blob) == sha
    assert isinstance(info.value, HiltError) and "\n" not in message
    assert "line too noisy" in message and "% of frames failed CRC or were lost" in message
    assert f"at {BAUD} baud" in message and "try a lower baud or a shorter cable" in message
    # acknowledged before the error: a lower bound (answers were lost too, and frames in flight land)
    known = int(message.split("(at least ")[1].split(" bytes)")[0].replace(",", ""))
    assert "resumes on the next try" in message and 100_000 <= known <= stored
    assert took < 3.3 + 30.0  # the stretch before the line went bad, then well within the deadline
    assert again.line.upload_bytes == 600_000 - stored  # resumed from the stored prefix
    assert (cache / "objects" / sha).read_bytes() == blob.read_bytes()


def test_hello_on_a_line_nothing_crosses_is_the_clear_error(tmp_path: Path) -> None:
    with agent_on_relay(tmp_path / "cache", seed=9) as relay:
        relay.set_noise(LineNoise(flip=0.05), LineNoise(flip=0.05))
        t0 = time.monotonic()
        with pytest.raises(LineTooNoisyError, match="line too noisy: 100 % of frames"):
            SerialTransport("hopeless", relay.host_path, BAUD).open()
    assert time.monotonic() - t0 < SerialTransport.hello_timeout_s + 3


def test_boards_check_shows_the_line_quality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    with agent_on_relay(tmp_path / "cache", seed=3) as relay:
        farm = tmp_path / "farm.toml"
        farm.write_text(
            'version = 1\n[[board]]\nname = "tty0"\nprofile = "local"\n[board.transport]\nkind = "serial"\n'
            f'device = "{relay.host_path}"\nbaud = {BAUD}\n'
        )
        deadline = time.monotonic() + 30
        while relay.forwarded["to_host"] < len(wire.READY_MARKER) and time.monotonic() < deadline:
            time.sleep(0.02)  # the agent is up
        relay.drop_next("to_host", 30)  # the first answer is lost: check still answers, and says so
        assert main(["boards", "check", "--farm", str(farm)]) == 0
    out = capsys.readouterr().out
    assert "tty0 line: " in out and "retries" in out and "CRC failures" in out
    sent, failed = (int(x) for x in out.split("tty0 line: ")[1].split(" failed")[0].split(" frames sent, "))
    assert sent > failed > 0


# ---------------------------------------------------------------------- compressed uploads


def _compressible_blob(tmp_path: Path, size: int, name: str = "lib.so") -> Path:
    """Bytes that compress about 3x per chunk, like the runtime's shared libraries."""
    import random

    rng = random.Random(size)
    words = [os.urandom(rng.randrange(2, 9)) for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    path = tmp_path / name
    path.write_bytes(bytes(out[:size]))
    return path


def test_an_interrupted_compressed_upload_resumes_and_stores_the_right_hash(tmp_path: Path) -> None:
    blob = _compressible_blob(tmp_path, 1_500_000)
    sha = hashing.sha256_file(str(blob))
    cache = tmp_path / "cache"
    with agent_on_relay(cache) as relay:

        class CablePulled(SerialTransport):
            chunks = 0

            def _send(self, data: bytes) -> None:
                if b'"chunk"' in data:
                    self.chunks += 1
                    if self.chunks > 12:
                        raise TransportError("cable pulled")
                super()._send(data)

        with CablePulled("flaky", relay.host_path, BAUD) as t:
            with pytest.raises(TransportError, match="cable pulled"):
                t.upload(blob)
        time.sleep(0.5)  # what crossed before the cable went lands
        stored = (cache / "partial" / sha).stat().st_size
        assert t.line.compressed_chunks >= 12 and 0 < stored < 1_500_000
        with SerialTransport("again", relay.host_path, BAUD) as again:
            assert again.upload(blob) == sha
    line = again.line
    assert line.upload_bytes == 1_500_000 - stored  # resumed at the stored (uncompressed) prefix
    assert line.compressed_chunks > 0 and line.upload_wire_bytes < line.upload_bytes / 2
    assert line.wire_ratio is not None and line.wire_ratio < 0.5
    assert hashing.sha256_file(str(cache / "objects" / sha)) == sha


def test_a_chunk_the_agent_cannot_decompress_is_refused_and_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = _compressible_blob(tmp_path, 300_000)
    compress = wire.compress_chunk
    spoiled: list[int] = []

    def spoil_the_third(codec: str, raw: bytes, before: bytes = b"") -> bytes:  # a host bug, a CRC collision
        packed = bytearray(compress(codec, raw, before))
        if len(spoiled) < 3:
            spoiled.append(len(packed))
            if len(spoiled) == 3:
                packed[len(packed) // 2] ^= 0x5A
        return bytes(packed)

    monkeypatch.setattr(wire, "compress_chunk", spoil_the_third)
    with agent_on_relay(tmp_path / "cache") as relay:
        with SerialTransport("buggy", relay.host_path, BAUD) as t:
            sha = t.upload(blob)
    assert len(spoiled) == 3 and t.line.bad_chunks == 1 and t.line.retries >= 1
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == blob.read_bytes()


def test_an_agent_without_codecs_gets_plain_chunks(tmp_path: Path) -> None:
    """An older agent's hello lists no codecs: the host sends what it always sent."""
    blob = _compressible_blob(tmp_path, 200_000)
    with agent_on_relay(tmp_path / "cache") as relay:
        with SerialTransport("old", relay.host_path, BAUD) as t:
            t.hello.pop("codecs")
            sha = t.upload(blob)
    assert t.line.compressed_chunks == 0 and t.line.upload_wire_bytes > 200_000
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == blob.read_bytes()


def test_a_second_bundle_of_a_study_sends_only_its_new_files(tmp_path: Path) -> None:
    """Candidates of one study share inputs and weights; only the files that differ cross the line."""
    import json

    from device_agents.bench import ship_tree

    shared = {"weights.bin": os.urandom(60_000), "input.bin": os.urandom(3_000), "expected.bin": b"12345678"}

    def bundle(name: str, model: bytes) -> tuple[str, dict[str, Path]]:
        d = tmp_path / name
        d.mkdir()
        contents = {**shared, "model.so": model, "copy-of-input.bin": shared["input.bin"]}
        for f, data in contents.items():
            (d / f).write_bytes(data)
        hashes = {f: hashing.sha256_file(str(d / f)) for f in contents}
        (d / "metadata.json").write_text(json.dumps({"files": hashes, "candidate": name}))
        files = {f: d / f for f in contents} | {"metadata.json": d / "metadata.json"}
        return hashing.tree_hash(hashes), files

    first = bundle("cand-1", os.urandom(40_000))
    second = bundle("cand-2", os.urandom(41_000))
    sent: list[str] = []
    with agent_on_relay(tmp_path / "cache") as relay:

        class Counting(SerialTransport):
            def upload(self, path: Path | str) -> str:
                sent.append(Path(path).name)
                return super().upload(path)

        with Counting("study", relay.host_path, BAUD) as t:
            ship_tree(t, "bundle", first[1], first[0])
            first_sent, first_bytes = sorted(sent), t.line.upload_bytes
            sent.clear()
            ship_tree(t, "bundle", second[1], second[0])
            second_bytes = t.line.upload_bytes - first_bytes
            ship_tree(t, "bundle", second[1], second[0])  # installed already: nothing at all
    assert first_sent == ["expected.bin", "input.bin", "metadata.json", "model.so", "weights.bin"]
    assert sorted(sent) == ["metadata.json", "model.so"]  # the rest is on the board by content
    assert second_bytes == 41_000 + (tmp_path / "cand-2" / "metadata.json").stat().st_size
    for cand, (tree, _) in (("cand-1", first), ("cand-2", second)):
        installed = tmp_path / "cache" / "bundle" / tree
        assert (installed / "model.so").read_bytes() == (tmp_path / cand / "model.so").read_bytes()
        assert (installed / "copy-of-input.bin").read_bytes() == shared["input.bin"]
