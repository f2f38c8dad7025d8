"""The pieces a noisy serial line leans on: checked frames, chunks held past a gap, the agent's reply
cache, the chunk sizer's estimate, and the relay's seeded random noise."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agents.agent import serve, wire
from device_agents.agent.store import Store
from device_agents.linesim import LineNoise, _Noiser
from device_agents.transports.base import ChunkSizer, LineTooNoisyError
from harness.errors import ConfigError, HiltError, TransportError

# ------------------------------------------------------------------------------ checked frames


def test_checked_frame_roundtrip_and_both_kinds_in_one_stream() -> None:
    body = os.urandom(3000)
    stream = wire.encode_frame({"id": 1}, body, checked=True) + wire.encode_frame({"id": 2}, b"old")
    dec = wire.FrameDecoder()
    assert dec.feed(stream) == [({"id": 1}, body), ({"id": 2}, b"old")]
    assert dec.checked_seen and dec.frames == 2 and dec.resyncs == 0


def test_damaged_length_of_a_checked_frame_is_refused_at_once() -> None:
    for checked, waits in ((False, True), (True, False)):
        bad = bytearray(wire.encode_frame({"id": 1}, b"x" * 100, checked=checked))
        bad[6] ^= 0x01  # length grows by 64 KiB: a plain frame swallows what follows until that arrived
        dec = wire.FrameDecoder()
        out = dec.feed(bytes(bad) + wire.encode_frame({"id": 2}, b"next", checked=checked))
        if waits:
            assert out == []
        else:
            assert out == [({"id": 2}, b"next")] and dec.crc_errors == 1 and dec.resyncs == 1


def test_checked_length_crc_and_payload_crc_both_guard() -> None:
    frame = bytearray(wire.encode_frame({"id": 3}, b"y" * 50, checked=True))
    (length,) = struct.unpack(">I", bytes(frame[4:8]))
    assert length == len(frame) - 16
    frame[-1] ^= 0x80  # payload CRC
    dec = wire.FrameDecoder()
    assert dec.feed(bytes(frame)) == [] and dec.crc_errors == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.integers(min_value=1, max_value=64))
def test_checked_frames_survive_any_split(bodies: list[bytes], step: int) -> None:
    stream = b"".join(wire.encode_frame({"id": i}, b, checked=i % 2 == 0) for i, b in enumerate(bodies))
    dec = wire.FrameDecoder()
    out = []
    for i in range(0, len(stream), step):
        out += dec.feed(stream[i : i + step])
    assert out == [({"id": i}, b) for i, b in enumerate(bodies)]


# -------------------------------------------------------------------- store: held past a gap


def test_chunks_past_a_gap_are_held_then_assembled(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    sha = hashlib.sha256(data).hexdigest()
    store = Store(str(tmp_path))
    handle = store.put({"sha256": sha, "op": "begin"}, b"")["handle"]
    # chunk 0 lost on the line; 1 and 2 arrive and are held
    assert store.put({"handle": handle, "op": "chunk", "offset": 4000}, data[4000:7000]) == {
        "offset": 0, "complete": False, "ahead": True}  # fmt: skip
    assert store.put({"handle": handle, "op": "chunk", "offset": 7000}, data[7000:])["ahead"]
    assert not (tmp_path / "partial" / sha).exists() or (tmp_path / "partial" / sha).stat().st_size == 0
    # the resent chunk 0 (a different size now: the host's chunk shrank) fills the gap; all is appended
    assert store.put({"handle": handle, "op": "chunk", "offset": 0}, data[:2500])["offset"] == 2500
    assert store.put({"handle": handle, "op": "chunk", "offset": 2500}, data[2500:4500])["offset"] == 10_000
    assert store.put({"sha256": sha, "op": "commit"}, b"")["complete"]
    assert (tmp_path / "objects" / sha).read_bytes() == data


def test_unknown_upload_handle_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(wire.AgentFailure, match="unknown upload handle"):
        Store(str(tmp_path)).put({"handle": 99, "op": "chunk", "offset": 0}, b"x")


# ---------------------------------------------------------------------- agent reply cache


def test_a_repeated_non_idempotent_id_is_answered_from_the_cache_not_run(tmp_path: Path) -> None:
    agent = serve.Agent(str(tmp_path / "cache"))
    req = {"v": wire.PROTOCOL_VERSION, "id": 41, "type": "shutdown", "timeout": 5}
    first = agent.respond(req, b"")
    assert first is not None and first["result"] == {"bye": True} and not agent.running
    agent.running = True
    again = agent.respond(req, b"")  # the reply was lost: re-sent, shutdown not run again
    assert again is not None and again["replayed"] and again["result"] == {"bye": True}
    assert agent.running and agent.replays == 1
    assert agent.respond(req, b"") is None  # more copies queued behind: one re-send was enough for now
    other = agent.respond(dict(req, id=42), b"")  # a new id runs
    assert other is not None and not other.get("replayed") and not agent.running


def test_reply_cache_is_bounded(tmp_path: Path) -> None:
    agent = serve.Agent(str(tmp_path / "cache"))
    for i in range(serve.REPLY_CACHE + 5):
        agent.respond({"v": wire.PROTOCOL_VERSION, "id": i, "type": "shutdown"}, b"")
    assert len(agent.replies) == serve.REPLY_CACHE


def test_hello_says_what_the_agent_can_do_on_a_line(tmp_path: Path) -> None:
    hello = serve.Agent(str(tmp_path / "cache")).handle({"v": 1, "id": 1, "type": "hello"}, b"")["result"]
    assert 2 in hello["frames"] and "bench" in hello["dedup"] and hello["line"] is None  # no tty here


# -------------------------------------------------------------------------------- chunk sizer


def _optimum(p: float, h: int) -> float:
    return (-h + math.sqrt(h * h + 4 * h / p)) / 2


@pytest.mark.parametrize("p", [1e-5, 1e-4, 1e-3])
def test_chunk_sizer_settles_near_the_best_chunk_for_the_line(p: float) -> None:
    rng = random.Random(7)
    sizer = ChunkSizer(16 << 10, overhead=90)
    sizes = []
    for i in range(4000):
        n = sizer.size + sizer.overhead
        if rng.random() < 1 - (1 - p) ** n:
            sizer.failed(n)
        else:
            sizer.clean(n)
        if i > 1000:
            sizes.append(sizer.size)
    best = max(ChunkSizer.MIN, _optimum(p, 90))
    median = sorted(sizes)[len(sizes) // 2]
    assert best / 2 <= median <= best * 2, (median, best)


def test_chunk_sizer_grows_on_a_clean_line_and_halves_on_failure() -> None:
    sizer = ChunkSizer(4 << 10)
    for _ in range(300):
        sizer.clean(sizer.size + 100)
    assert sizer.size >= 128 << 10
    before = sizer.size
    sizer.failed(before + 100)
    assert sizer.size <= before // 2
    for _ in range(100):
        sizer.failed(sizer.size + 100)
    assert sizer.size == ChunkSizer.MIN


def test_too_noisy_is_a_transport_error_the_cli_prints_in_one_line() -> None:
    assert issubclass(LineTooNoisyError, TransportError) and issubclass(LineTooNoisyError, HiltError)


# ------------------------------------------------------------------------------ relay noise


def test_noise_is_seeded_and_near_its_rates() -> None:
    data = bytes(1 << 20)

    def run(seed: int) -> tuple[bytes, dict[str, int]]:
        n = _Noiser(LineNoise(flip=1e-3, drop=5e-4, burst=1e-5, burst_len=8), random.Random(seed), 0)
        out = b"".join(n.apply(data[i : i + 4096]) for i in range(0, len(data), 4096))
        return out, n.counts

    out, counts = run(3)
    assert run(3) == (out, counts) and run(4)[0] != out
    assert 800 < counts["flipped"] < 1300 and 380 < counts["dropped"] < 650
    assert 0 < counts["burst_bytes"] <= 8 * 25
    assert len(out) == len(data) - counts["dropped"]


# ------------------------------------------------------- line quality: record, metrics, CLI


def test_record_line_field_round_trips_and_old_records_still_load(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from device_agents.records import LineQuality, load_record
    from device_agents.transports.base import LineStats
    from harness.cli.cmd_boards import line_summary
    from reports.metrics import HiltMetrics
    from tests.unit.test_agents_records import _record

    old = _record([5, 6, 7])
    assert old.line is None
    data = json.loads(old.to_json())
    data.pop("line")  # a record written before the field existed
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert load_record(tmp_path / "old.json").line is None

    stats = LineStats(frames_sent=200, frames_failed=20, crc_errors=3, resyncs=4, retries=21,
                      bytes_sent=250_000, upload_bytes=200_000, upload_s=2.5,
                      agent={"frames": 180, "crc_errors": 17, "resyncs": 15, "stale_drops": 0})  # fmt: skip
    line = LineQuality.model_validate(stats.as_dict())
    assert line.goodput_bps == 80_000 and line.frame_error_rate == 0.1
    rec = old.model_copy(update={"line": line})
    rec.save(tmp_path / "new.json")
    assert load_record(tmp_path / "new.json").line == line
    data = json.loads((tmp_path / "new.json").read_text())
    data["line"]["made_up"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="line.made_up"):
        load_record(tmp_path / "bad.json")

    text = line_summary(stats.as_dict())
    assert "200 frames sent, 20 failed (10 %), 21 retries" in text and "80.0 kB/s" in text
    assert "the agent saw 17 damaged of 197 frames" in text

    metrics = HiltMetrics()
    metrics.observe_line("tty0", line)
    metrics.observe_line("tty0", line)
    scraped = generate_latest(metrics.registry).decode()
    assert 'hilt_line_frames_total{board="tty0",outcome="failed"} 40.0' in scraped
    assert 'hilt_line_upload_bytes_total{board="tty0"} 400000.0' in scraped
    assert 'hilt_line_goodput_bytes_per_second{board="tty0"} 80000.0' in scraped


def test_serial_chunks_stay_within_about_a_second_of_line_time() -> None:
    from device_agents.transports.serial import SerialTransport

    slow = SerialTransport("slow", "/dev/null", 115200, agent_path=__file__)
    fast = SerialTransport("fast", "/dev/null", 3_000_000, agent_path=__file__)
    assert slow.sizer.max == 16 << 10 and fast.sizer.max == ChunkSizer.MAX
    for _ in range(300):
        slow.sizer.clean(slow.sizer.size + 100)
    assert slow.sizer.size == 16 << 10


# ---------------------------------------------------------------------- compressed chunks


def _compressible(n: int, seed: int = 0) -> bytes:
    """Like a binary with text and tables in it: compresses about 3x, not 1000x."""
    rng = random.Random(seed)
    words = [bytes(rng.randrange(256) for _ in range(rng.randrange(2, 9))) for _ in range(300)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words)
    return bytes(out[:n])


@pytest.mark.parametrize("codec", wire.CODECS)
def test_a_compressed_chunk_is_stored_uncompressed_at_uncompressed_offsets(
    codec: str, tmp_path: Path
) -> None:
    data = _compressible(50_000)
    sha = hashlib.sha256(data).hexdigest()
    agent = serve.Agent(str(tmp_path / "cache"))
    hello = agent.handle({"v": 1, "id": 1, "type": "hello"}, b"")["result"]
    assert codec in hello["codecs"]

    def put(args: dict, body: bytes = b"") -> dict:
        return agent.handle({"v": 1, "id": 2, "type": "put", "args": {"sha256": sha, **args}}, body)

    put({"op": "begin"})
    for off in (0, 20_000):
        raw = data[off : off + 20_000]
        packed = wire.compress_chunk(codec, raw)
        assert len(packed) < len(raw) / 2
        answer = put(
            {"op": "chunk", "offset": off, "z": codec, "n": len(raw), "crc": zlib.crc32(raw)}, packed
        )
        assert answer["result"]["offset"] == off + 20_000  # uncompressed bytes, so resuming works
    put({"op": "chunk", "offset": 40_000}, data[40_000:])  # and a plain chunk after compressed ones
    assert put({"op": "commit"})["ok"]
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == data


@pytest.mark.parametrize("codec", wire.CODECS)
def test_a_corrupt_compressed_chunk_is_a_typed_error_and_stores_nothing(codec: str, tmp_path: Path) -> None:
    data = _compressible(8_000, seed=1)
    sha = hashlib.sha256(data).hexdigest()
    agent = serve.Agent(str(tmp_path / "cache"))
    packed = wire.compress_chunk(codec, data)
    flipped = bytearray(packed)
    flipped[len(flipped) // 2] ^= 0x10
    good = {"sha256": sha, "op": "chunk", "offset": 0, "z": codec, "n": len(data), "crc": zlib.crc32(data)}
    cases = [
        (good, bytes(flipped)),  # damaged: does not decode, or decodes to other bytes
        (good, packed[: len(packed) // 2]),  # cut short
        (dict(good, n=len(data) - 1), packed),  # decodes to more than it says
        (dict(good, crc=zlib.crc32(data) ^ 1), packed),  # right length, wrong bytes
    ]
    for args, body in cases:
        answer = agent.handle({"v": 1, "id": 3, "type": "put", "args": args}, body)
        assert not answer["ok"] and answer["error"]["type"] == "bad_chunk", args
        partial = tmp_path / "cache" / "partial" / sha
        assert not partial.exists() or partial.stat().st_size == 0
    answer = agent.handle({"v": 1, "id": 4, "type": "put", "args": dict(good, z="bz2")}, packed)
    assert answer["error"]["type"] == "bad_request" and "codec" in answer["error"]["message"]
    answer = agent.handle(
        {"v": 1, "id": 5, "type": "put", "args": dict(good, n=wire.MAX_CHUNK_RAW + 1)}, packed
    )
    assert answer["error"]["type"] == "bad_request"
    assert agent.handle({"v": 1, "id": 6, "type": "put", "args": good}, packed)["result"]["offset"] == 8_000


def test_chunk_coder_compresses_what_shrinks_and_gives_up_on_what_does_not() -> None:
    from device_agents.transports.base import ChunkCoder

    coder = ChunkCoder(wire.CODECS[0])
    text = _compressible(16_000, seed=2)
    extra, body = coder.encode(text)
    assert extra["z"] == wire.CODECS[0] and extra["n"] == 16_000 and len(body) < 8_000
    assert wire.decompress_chunk(extra["z"], body, extra["n"], extra["crc"]) == text
    assert coder.raw_len(4096, 1 << 20) > 4096  # it learnt the data shrinks: reads more per wire byte
    noise = os.urandom(16_000)
    for _ in range(ChunkCoder.GIVE_UP):
        assert coder.encode(noise) == ({}, noise)  # already compressed: sent as it is
    plain = 0
    while plain < ChunkCoder.PROBE_EVERY:  # the next stretch goes plain, not even tried
        assert coder.encode(text) == ({}, text)
        plain += len(text)
    assert coder.encode(text)[0]["z"] == wire.CODECS[0]  # then compressible data is compressed again
    assert ChunkCoder(None).encode(text) == ({}, text)  # an agent without codecs gets plain chunks
    coder = ChunkCoder("zlib")
    for _ in range(ChunkCoder.BAD_LIMIT):
        coder.refused()
    assert coder.codec is None


def test_a_zdict_chunk_past_a_gap_is_held_then_decoded_with_the_bytes_before_it(tmp_path: Path) -> None:
    data = _compressible(60_000, seed=3)
    sha = hashlib.sha256(data).hexdigest()
    store = Store(str(tmp_path))
    handle = store.put({"sha256": sha, "op": "begin"}, b"")["handle"]

    def chunk(off: int, end: int, spoil: bool = False) -> dict:
        raw = data[off:end]
        packed = bytearray(wire.compress_chunk("zdict", raw, data[max(0, off - wire.DICT_SPAN) : off]))
        if spoil:
            packed[len(packed) // 2] ^= 0x20
        args = {
            "handle": handle,
            "op": "chunk",
            "offset": off,
            "z": "zdict",
            "n": len(raw),
            "crc": zlib.crc32(raw),
        }
        return store.put(args, bytes(packed))

    plain = len(wire.compress_chunk("zlib", data[40_000:41_000]))
    primed = len(wire.compress_chunk("zdict", data[40_000:41_000], data[40_000 - wire.DICT_SPAN : 40_000]))
    assert primed < plain * 0.8  # why it exists: a 1 kB chunk alone hardly compresses
    assert chunk(0, 20_000)["offset"] == 20_000  # offset 0: nothing before it, plain zlib
    assert chunk(40_000, 50_000)["ahead"]  # its dictionary (20k..40k) is not stored yet: held
    assert chunk(50_000, 60_000, spoil=True)["ahead"]  # damaged, but only decoding can tell
    assert chunk(20_000, 40_000)["offset"] == 50_000  # the gap filled: 40k.. decoded; the damaged one dropped
    assert chunk(50_000, 60_000)["offset"] == 60_000  # sent again
    assert store.put({"sha256": sha, "op": "commit"}, b"")["complete"]
    assert (tmp_path / "objects" / sha).read_bytes() == data


def test_small_chunks_use_the_primed_codec_and_large_ones_the_best() -> None:
    from device_agents.transports.base import ChunkCoder

    data = _compressible(200_000, seed=4)
    coder = ChunkCoder("lzma", "zdict")
    assert coder.wants_before
    extra, body = coder.encode(data[100_000:101_000], data[100_000 - wire.DICT_SPAN : 100_000])
    assert extra["z"] == "zdict" and len(body) < 1_000 * 0.6
    extra, _ = coder.encode(data[:64_000])
    assert extra["z"] == "lzma"
