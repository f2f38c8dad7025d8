"""Wire formats shared by host and agent: JSON lines with bodies, and CRC frames that resynchronise."""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from device_agents.agent import wire
from hilt_base import hashing


def test_line_roundtrip_with_body_split_anywhere() -> None:
    body = os.urandom(5000)
    data = wire.encode_line({"id": 1, "type": "put"}, body) + wire.encode_line({"id": 2, "type": "has"})
    dec = wire.LineDecoder()
    out = []
    for i in range(0, len(data), 7):
        out += dec.feed(data[i : i + 7])
    assert out == [({"id": 1, "type": "put"}, body), ({"id": 2, "type": "has"}, b"")]


def test_line_malformed_is_reported_and_next_line_still_parses() -> None:
    out = wire.LineDecoder().feed(b"{not json\n[1,2]\n" + wire.encode_line({"id": 3}))
    assert out[0][0] is None and "malformed JSON" in out[0][1]
    assert out[1][0] is None and "not a JSON object" in out[1][1]
    assert out[2] == ({"id": 3}, b"")


def test_line_bad_body_len_is_an_error() -> None:
    out = wire.LineDecoder().feed(b'{"id":1,"body_len":-4}\n')
    assert out[0][0] is None and "body_len" in out[0][1]


def test_frame_roundtrip() -> None:
    body = bytes(range(256)) * 10
    out = wire.FrameDecoder().feed(wire.encode_frame({"id": 9, "type": "put"}, body))
    assert out == [({"id": 9, "type": "put"}, body)]


def test_frame_resyncs_after_garbage_and_a_flipped_byte() -> None:
    good = wire.encode_frame({"id": 2}, b"payload")
    bad = bytearray(wire.encode_frame({"id": 1}, b"x" * 100))
    bad[50] ^= 0x01
    dec = wire.FrameDecoder()
    out = dec.feed(b"\x00garbage" + wire.MAGIC[:2] + bytes(bad) + good)
    assert out == [({"id": 2}, b"payload")]
    assert dec.crc_errors == 1
    assert dec.dropped_bytes > 0


def test_frame_over_cap_is_skipped() -> None:
    dec = wire.FrameDecoder(max_frame=64)
    huge = wire.MAGIC + struct.pack(">I", 10_000) + b"y" * 20
    out = dec.feed(huge + wire.encode_frame({"id": 5}))
    assert out == [({"id": 5}, b"")]


def test_encode_frame_refuses_oversized_payload() -> None:
    try:
        wire.encode_frame({"id": 1}, b"z" * (wire.MAX_FRAME + 1))
    except ValueError as exc:
        assert "exceeds cap" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("oversized frame was encoded")


def test_stale_incomplete_frame_is_dropped_so_later_frames_get_through() -> None:
    frame = wire.encode_frame({"id": 1}, b"a" * 1000)
    truncated = frame[:300]  # the rest was lost on the line; the length field still promises it
    dec = wire.FrameDecoder(stale_s=1.0)
    assert dec.feed(truncated, now=0.0) == []
    assert dec.feed(b"", now=0.5) == []  # not stale yet
    nxt = wire.encode_frame({"id": 2})
    assert dec.feed(nxt, now=0.6) == []  # swallowed as the rest of frame 1, for now
    assert dec.feed(b"", now=2.0) == [({"id": 2}, b"")]
    assert dec.stale_drops == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    st.binary(max_size=40),
    st.integers(min_value=1, max_value=64),
)
def test_frames_survive_any_split_and_leading_noise(bodies: list[bytes], noise: bytes, step: int) -> None:
    stream = noise.replace(wire.MAGIC[:1], b"") + b"".join(
        wire.encode_frame({"id": i}, b) for i, b in enumerate(bodies)
    )
    dec = wire.FrameDecoder()
    out = []
    for i in range(0, len(stream), step):
        out += dec.feed(stream[i : i + step])
    assert out == [({"id": i}, b) for i, b in enumerate(bodies)]


def test_tree_hash_matches_the_bundle_contract() -> None:
    import hashlib

    files = {"b.bin": "2" * 64, "a.json": "1" * 64}
    expect = hashlib.sha256(f"a.json:{'1' * 64}\nb.bin:{'2' * 64}\n".encode()).hexdigest()
    assert hashing.tree_hash(files) == expect
