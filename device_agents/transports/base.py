"""The one transport interface (`open`, `request`, `upload`, `close`) over any byte stream.

Transports differ only in how they reach the agent (a subprocess, an SSH channel, a serial line);
everything above the byte stream (codecs, request ids, timeouts, chunked resumable upload) is here,
and the codecs come from the agent package itself (`device_agents.agent.wire`), so host and board
share one wire format. What a transport copies to a board and runs is `agent_pyz()`: the agent
package packed into one hash-named zipapp under the hilt cache.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device_agents.agent import pack, wire
from harness.cache import cache_root
from harness.errors import (
    AgentTimeoutError,
    BoardBusyError,
    ProtocolMismatchError,
    RemoteError,
    TransportError,
)
from hilt_base import hashing

log = logging.getLogger(__name__)

_EOF = object()


def agent_pyz() -> Path:
    """The agent as one file to ship: `agent-<sha16>.pyz` under the hilt cache, packed once per content."""
    return Path(pack.build_pyz(str(cache_root() / "agent-pyz")))


# Requests the host may safely resend after a lost frame (they change nothing twice). Others (bench,
# shutdown) are resent only to an agent that answers a repeated id from its reply cache (hello `dedup`).
IDEMPOTENT = frozenset({"hello", "has", "put", "install"})


class LineTooNoisyError(TransportError):
    """The line damages or loses so many frames that a request or upload makes no progress."""


@dataclass
class LineStats:
    """Line quality as this transport measured it (framed transports; all zero over pipes)."""

    frames_sent: int = 0
    frames_failed: int = 0  # sent frames never answered: damaged or lost on the way, or their answer was
    crc_errors: int = 0  # answers that failed CRC here
    resyncs: int = 0  # times this side's frame reader lost the frame boundary
    retries: int = 0  # requests and upload chunks sent again
    replays: int = 0  # answers the agent re-sent from its reply cache (a retried bench ran once)
    bytes_sent: int = 0
    upload_bytes: int = 0  # upload payload the agent acknowledged (bytes stored, uncompressed)
    upload_s: float = 0.0  # time those uploads took
    upload_wire_bytes: int = 0  # upload chunk frames put on the line, compressed, resends included
    compressed_chunks: int = 0  # upload chunks sent compressed (the rest went as they are)
    bad_chunks: int = 0  # compressed chunks the agent could not decode (refused, sent again)
    agent: dict[str, int] = field(default_factory=dict)  # the agent's own reader counters (hello, NAKs)

    @property
    def goodput_bps(self) -> float | None:
        """Acknowledged upload payload per second (bytes/s), None before any upload."""
        return self.upload_bytes / self.upload_s if self.upload_s > 0 else None

    @property
    def frame_error_rate(self) -> float:
        return self.frames_failed / self.frames_sent if self.frames_sent else 0.0

    @property
    def wire_ratio(self) -> float | None:
        """Bytes on the wire per byte stored (below 1: compression paid more than resends cost)."""
        return self.upload_wire_bytes / self.upload_bytes if self.upload_bytes else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["wire_ratio"] = self.wire_ratio
        out["goodput_bps"] = self.goodput_bps
        out["frame_error_rate"] = self.frame_error_rate
        return out


class ChunkSizer:
    """Upload chunk sized to the line: estimates the byte error rate from which frames got through
    (decayed counts), and picks the payload that maximises goodput for it, L/(L+h) * (1-p)^(L+h).

    A failed frame at least halves the chunk; a clean one at most doubles it."""

    MIN = 256
    MAX = 256 << 10
    DECAY = 0.99  # per frame: the estimate follows a line whose quality changes
    PRIOR_FAILS = 0.05  # as if this many frames failed: a clean line grows the chunk to MAX, gradually

    def __init__(self, start: int = 16 << 10, overhead: int = 160, max_size: int | None = None) -> None:
        self.max = max(self.MIN, min(self.MAX, max_size or self.MAX))
        self.size = max(self.MIN, min(self.max, start))
        self.overhead = overhead  # header and framing bytes per chunk
        self.fails = 0.0
        self.bytes = 0.0  # decayed line bytes of the frames whose fate is known

    def _best(self) -> int:
        if self.bytes <= 0:
            return self.size
        p = min(0.5, (self.fails + self.PRIOR_FAILS) / self.bytes)
        h = self.overhead
        best = (-h + math.sqrt(h * h + 4 * h / p)) / 2 if p > 0 else self.max
        return int(max(self.MIN, min(self.max, best)))

    def _record(self, nbytes: int, failed: bool) -> None:
        self.fails = self.fails * self.DECAY + (1.0 if failed else 0.0)
        self.bytes = self.bytes * self.DECAY + nbytes

    def clean(self, nbytes: int) -> None:
        self._record(nbytes, False)
        self.size = min(self.size * 2, self._best())

    def failed(self, nbytes: int) -> None:
        self._record(nbytes, True)
        self.size = max(self.MIN, min(self.size // 2, self._best()))


class ChunkCoder:
    """Compresses one upload's chunks where it pays (a slow line; the agent offers the codec).

    Each chunk is compressed by itself (`wire.compress_chunk`): large ones with `codec` (lzma),
    small ones (a noisy line's) with `small` (zdict: zlib primed with the file bytes just before
    the chunk, which the agent has stored by the time it decodes it), and offsets stay in
    uncompressed bytes. A chunk that does not shrink to `PAYS` of its size goes as it is; after
    `GIVE_UP` such chunks in a row (already-compressed data) the next `PROBE_EVERY` bytes go as they
    are and then a chunk is tried again (a library's tables do not compress, its code does: giving up
    for the whole file sent a 2.4 MB `libtvm_ffi.so` plain after its first 10 kB); after `BAD_LIMIT`
    chunks the agent could not decode, the rest of the file goes uncompressed. `ratio`
    (uncompressed per wire byte, smoothed) turns the sizer's wire-sized chunk into how much of the
    file to read."""

    PAYS = 0.9
    GIVE_UP = 4
    PROBE_EVERY = 64 << 10
    BAD_LIMIT = 3
    MIN = 64  # shorter chunks go as they are
    SMALL = 16 << 10  # chunks shorter than this use `small`: per-chunk lzma does poorly on them

    def __init__(self, codec: str | None, small: str | None = None) -> None:
        self.codec = codec
        self.small = small
        self.ratio = 1.0
        self.misses = 0
        self.plain_left = 0  # bytes to send as they are before trying to compress again
        self.bad = 0

    def raw_len(self, wire_len: int, cap: int) -> int:
        """How many file bytes to read for a chunk of about `wire_len` bytes on the line."""
        return max(1, min(cap, int(wire_len * self.ratio)))

    @property
    def wants_before(self) -> bool:
        """Whether `encode` may use the file bytes before the chunk."""
        return self.codec is not None and self.small == "zdict"

    def encode(self, raw: bytes, before: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """The chunk's extra `put` args and the body to send (`before`: the file's bytes just
        before the chunk, up to wire.DICT_SPAN, when `wants_before`)."""
        if self.codec is None or len(raw) < self.MIN:
            return {}, raw
        if self.plain_left > 0:
            self.plain_left -= len(raw)
            return {}, raw
        codec = self.small if self.small and len(raw) < self.SMALL else self.codec
        packed = wire.compress_chunk(codec, raw, before)
        if len(packed) > len(raw) * self.PAYS:
            self.misses += 1
            if self.misses >= self.GIVE_UP:
                log.debug("upload: %d chunks in a row did not shrink; the next %d bytes go as they are",
                          self.misses, self.PROBE_EVERY)  # fmt: skip
                self.plain_left, self.misses = self.PROBE_EVERY, 0
            self._learn(1.0)
            return {}, raw
        self.misses = 0
        self._learn(len(raw) / len(packed))
        return {"z": codec, "n": len(raw), "crc": zlib.crc32(raw) & 0xFFFFFFFF}, packed

    def refused(self) -> None:
        """The agent could not decode a chunk (`bad_chunk`): after a few, stop compressing."""
        self.bad += 1
        if self.bad >= self.BAD_LIMIT:
            self.codec = None

    def _learn(self, ratio: float) -> None:
        self.ratio = 0.7 * self.ratio + 0.3 * ratio


@dataclass
class Stream:
    """A byte stream to the agent: `read` blocks briefly and returns b"" at EOF, None when idle."""

    read: Callable[[], bytes | None]
    write: Callable[[bytes], None]


@dataclass
class _FrameUpload:
    """One lossy-line upload's state (`Transport._upload_frames`)."""

    acked: int
    last_progress: float
    mark: tuple[int, ...]  # the line's noise counters when the upload last made progress
    coder: ChunkCoder
    slack: float  # an answer's own line time, and the agent's
    streak: int = 0  # frames failed in a row
    # offset -> [end, request id (None: held by the agent past a gap), deadline, frame bytes]
    ranges: dict[int, list[Any]] = field(default_factory=dict)
    in_flight: dict[int, int] = field(default_factory=dict)  # request id -> offset


class Transport:
    """Request/response with the agent over a Stream; subclasses provide `_connect` and `_disconnect`."""

    kind = "base"
    framed = False
    chunk_size = 4 << 20
    grace_s = 5.0  # transit allowance on top of the agent-side timeout
    retries = 0  # resends of idempotent requests after a timeout
    hello_timeout_s = 30.0
    shutdown_on_close = True  # an agent started for this session ends with it
    # framed (noisy-line) uploads and retries
    retry_after_s = 0.3  # first resend of an unanswered request after this plus its line time
    ack_slack_s = 0.75  # an upload chunk is lost if unanswered this long after its last byte left
    window_bytes = 64 << 10  # upload bytes in flight (at least two chunks)
    window_frames = 32
    progress_timeout_s = 60.0  # an upload that stores nothing new for this long ends with an error
    compress = False  # framed uploads: compress chunks when the agent offers a codec (slow lines)
    max_failed_frames = 64  # ... as does one whose last this many frames failed (after a few seconds)

    def __init__(self, name: str, protocol: int = wire.PROTOCOL_VERSION) -> None:
        self.name = name
        self.protocol = protocol
        # ids unique across sessions: an agent's reply cache must not answer a new session's request
        self._ids = itertools.count(random.SystemRandom().randrange(1 << 32, 1 << 48))
        self.line = LineStats()
        self._decoder: wire.FrameDecoder | wire.LineDecoder | None = None
        self._line_free_at = 0.0  # when the bytes written so far will have left, at the line rate
        self._naks = 0
        self.sizer = ChunkSizer(self.chunk_size)
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._stream: Stream | None = None
        self._reader: threading.Thread | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.hello: dict[str, Any] = {}
        self._silent = False  # the agent stopped answering: do not wait for it again on close

    # -- to implement
    def _connect(self) -> Stream:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _describe_death(self) -> str:
        """Why the stream ended, for the error message (e.g. the agent's stderr)."""
        return ""

    # -- interface
    def open(self) -> dict[str, Any]:
        """Connect, say hello, and refuse an agent of another protocol version."""
        self._stream = self._connect()
        self._closed.clear()
        self._silent = False
        self._reader = threading.Thread(target=self._read_loop, name=f"agent-reader-{self.name}", daemon=True)
        self._reader.start()
        try:
            self.hello = self.request("hello", timeout=self.hello_timeout_s)
        except BaseException:
            self.close()
            raise
        if isinstance(self.hello.get("line"), dict):
            self.line.agent = dict(self.hello["line"])
        if self.hello.get("protocol") != wire.PROTOCOL_VERSION:
            self.close()
            raise ProtocolMismatchError(
                f"board {self.name}: agent speaks protocol {self.hello.get('protocol')}, "
                f"host speaks {wire.PROTOCOL_VERSION}; update the agent on the board"
            )
        return self.hello

    def request(
        self,
        type_: str,
        args: dict[str, Any] | None = None,
        body: bytes = b"",
        timeout: float = 60.0,
        retries: int | None = None,
    ) -> dict[str, Any]:
        """Send one request and wait for its answer; typed agent errors raise RemoteError.

        Over a lossy line (`retries` > 0) an unanswered request is sent again, with the same id,
        first after a short time derived from the line rate, then backing off, until its deadline;
        non-idempotent requests only to an agent that answers a repeated id from its reply cache."""
        if self._stream is None:
            raise TransportError(f"board {self.name}: transport is not open")
        req_id = next(self._ids)
        header = {"v": self.protocol, "id": req_id, "type": type_, "timeout": timeout, "args": args or {}}
        data = self._encode(header, body)
        resends = self.retries if retries is None else retries
        if type_ not in IDEMPOTENT and type_ not in (self.hello.get("dedup") or ()):
            resends = 0
        total = timeout + self.grace_s + len(data) * self._byte_time()
        deadline = time.monotonic() + total
        interval = self.retry_after_s + 4 * (len(data) + 1024) * self._byte_time()
        cap = max(2.0, timeout / 8)
        before = self._noise_mark()
        attempt = 0
        while True:
            with self._lock:
                self._send(data)
            now = time.monotonic()
            until = min(deadline, now + interval) if attempt < resends else deadline
            answer = self._wait(req_id, until - now)
            if answer is not None:
                return self._unwrap(answer)
            if time.monotonic() >= deadline or attempt >= resends:
                break
            attempt += 1
            interval = min(interval * 2, cap)
            self.line.frames_failed += 1
            self.line.retries += 1
            log.info("board %s: no answer to %s yet; sending it again (%d)", self.name, type_, attempt)
        self._silent = True
        self.line.frames_failed += 1
        if self._noise_mark() != before:
            raise self._too_noisy(f"no answer to '{type_}' within {total:.1f} s")
        raise AgentTimeoutError(
            f"board {self.name}: no answer to '{type_}' within {timeout + self.grace_s:.1f} s; "
            "the agent or the line is down"
        )

    def upload(self, path: Path | str) -> str:
        """Store a file in the agent's cache (chunked, resumable); returns its sha256."""
        path = Path(path)
        sha = hashing.sha256_file(str(path))
        size = path.stat().st_size
        state = self.request("put", {"sha256": sha, "op": "begin"}, timeout=10.0, retries=self.retries + 3)
        offset = int(state["offset"])
        if state.get("complete"):
            return sha
        if self.framed:
            handle = state.get("handle")
            name: dict[str, Any] = {"handle": handle} if isinstance(handle, int) else {"sha256": sha}
            self._upload_frames(path, name, size, offset)
        else:
            self._upload_stream(path, sha, size, offset)
        self.request("put", {"sha256": sha, "op": "commit"}, timeout=60.0, retries=self.retries + 3)
        return sha

    def _upload_stream(self, path: Path, sha: str, size: int, offset: int) -> None:
        """Over a reliable stream (pipes, SSH): fixed chunks, one at a time."""
        chunk_timeout = max(2.0, 4 * self.chunk_size * self._byte_time())
        with path.open("rb") as f:
            while offset < size:
                f.seek(offset)
                chunk = f.read(self.chunk_size)
                args = {"sha256": sha, "op": "chunk", "offset": offset}
                try:
                    state = self.request("put", args, body=chunk, timeout=chunk_timeout, retries=0)
                except AgentTimeoutError:
                    log.info(
                        "board %s: chunk at %d unacknowledged; asking where to resume", self.name, offset
                    )
                    state = self.request("put", {"sha256": sha, "op": "begin"}, timeout=2.0, retries=8)
                offset = int(state["offset"])

    def _upload_frames(self, path: Path, name: dict[str, Any], size: int, acked: int) -> None:
        """Over a lossy line: chunks sized to the line (`ChunkSizer`), several in flight; the agent
        holds chunks that arrive past a lost one, so only lost chunks are sent again (a later answer
        shows one was lost: the line keeps order; else its deadline passes). Ends with
        LineTooNoisyError when nothing new is stored for `progress_timeout_s`, or the last
        `max_failed_frames` frames all failed; what the agent stored stays for a later resume."""
        bt = self._byte_time()
        start, t0 = acked, time.monotonic()
        mark = self._noise_mark()  # as it was when the upload last made progress
        sent0, failed0 = self.line.frames_sent, self.line.frames_failed
        coder = ChunkCoder(*self._chunk_codecs())
        slack = 256 * bt + self.ack_slack_s  # an answer's own line time, and the agent's
        st = _FrameUpload(acked=acked, last_progress=t0, mark=mark, coder=coder, slack=slack)
        try:
            with path.open("rb") as f:
                while st.acked < size:
                    self._send_window(st, f, name, size)
                    if not st.in_flight:  # all the rest is held, yet no prefix: the agent lost it (restart)
                        st.ranges.clear()
                        continue
                    wait = min(st.ranges[o][2] for o in st.in_flight.values()) - time.monotonic()
                    item = self._next_item(max(0.0, wait))
                    now = time.monotonic()
                    if item is None:  # expired: one measurement, however many were in flight
                        for i, off in enumerate([o for o in st.in_flight.values() if st.ranges[o][2] <= now]):
                            self._frame_lost(st, off, measure=i == 0)
                    elif item.get("id") in st.in_flight or (
                        item.get("ok") and isinstance(item.get("result"), dict) and "offset" in item["result"]
                    ):  # an answer to a chunk in flight, or a late one to a chunk given up on
                        outcome = self._on_chunk_answer(st, item, size, now)
                        if outcome == "refused":
                            continue
                        if outcome == "complete":
                            break
                    stalled = now - st.last_progress
                    hopeless = st.streak >= self.max_failed_frames and stalled > 5
                    if stalled > self.progress_timeout_s or hopeless:
                        sent = self.line.frames_sent - sent0
                        failed = self.line.frames_failed - failed0
                        raise self._stalled(path.name, st.acked, size, stalled, sent, failed, st.mark)
        finally:
            self.line.upload_bytes += st.acked - start
            self.line.upload_s += time.monotonic() - t0

    def _send_window(self, st: _FrameUpload, f: Any, name: dict[str, Any], size: int) -> None:
        """Send the next missing chunks until the window (frames, and bytes) is full."""
        ranges, in_flight, coder = st.ranges, st.in_flight, st.coder
        while len(in_flight) < self.window_frames and (
            len(in_flight) < 2
            or sum(ranges[o][3] for o in in_flight.values()) < max(self.window_bytes, 2 * self.sizer.size)
        ):
            gap = _next_gap(ranges, st.acked, size, coder.raw_len(self.sizer.size, ChunkSizer.MAX))
            if gap is None:
                break
            off, end = gap
            start_dict = max(0, off - wire.DICT_SPAN) if coder.wants_before else off
            f.seek(start_dict)
            before = f.read(off - start_dict)
            rid = next(self._ids)
            extra, body = coder.encode(f.read(end - off), before)
            header = {"v": self.protocol, "id": rid, "type": "put",
                      "args": {**name, "op": "chunk", "offset": off, **extra}}  # fmt: skip
            frame = self._encode(header, body)
            self.sizer.overhead = len(frame) - len(body)
            with self._lock:
                self._send(frame)
            self.line.upload_wire_bytes += len(frame)
            self.line.compressed_chunks += 1 if extra else 0
            ranges[off] = [end, rid, self._line_free_at + st.slack, len(frame)]
            in_flight[rid] = off

    def _frame_lost(self, st: _FrameUpload, off: int, measure: bool = True) -> None:
        _, rid, _, frame_len = st.ranges.pop(off)
        st.in_flight.pop(rid, None)
        if measure:
            self.sizer.failed(frame_len)
        self.line.frames_failed += 1
        self.line.retries += 1
        st.streak += 1

    def _on_chunk_answer(self, st: _FrameUpload, item: dict[str, Any], size: int, now: float) -> str | None:
        """Account for the agent's answer to a chunk: "refused" (could not decode it: send it again),
        "complete" (the file is whole), else None once the ranges are updated."""
        ranges, in_flight = st.ranges, st.in_flight
        if not item.get("ok") and (item.get("error") or {}).get("type") == "bad_chunk":
            # the agent could not decode it (nothing stored): send it again
            why = item["error"].get("message")
            log.info("board %s: the agent refused a chunk: %s", self.name, why)
            self.line.bad_chunks += 1
            st.coder.refused()
            if item["id"] in in_flight:
                self._frame_lost(st, in_flight[item["id"]])
            return "refused"
        if not item.get("ok"):
            self._unwrap(item)  # a typed error from the agent: raise it
        result = item["result"]
        if result.get("complete"):
            st.acked = size
            return "complete"
        reported = int(result.get("offset", 0))
        if reported > st.acked:
            st.acked, st.last_progress, st.mark = reported, now, self._noise_mark()
        off = in_flight.pop(item["id"], None)
        if off is not None:
            end, rid, deadline, frame_len = ranges[off]
            self._line_ahead_by(deadline - st.slack - now, ranges, in_flight)
            self.sizer.clean(frame_len)
            st.streak = 0
            if result.get("ahead"):
                ranges[off][1] = None
                st.last_progress, st.mark = now, self._noise_mark()
            elif reported < end:  # neither stored nor held: send it again later
                del ranges[off]
            for o in [o for r, o in in_flight.items() if r < rid]:
                self._frame_lost(st, o)  # sent before the one just answered, so lost on the way
        for o in [o for o, r in ranges.items() if r[0] <= st.acked]:
            in_flight.pop(ranges.pop(o)[1], None)
        return None

    def _chunk_codecs(self) -> tuple[str | None, str | None]:
        """The codecs for upload chunks, large and small: the best both sides have, if this
        transport compresses (zdict for small chunks where the agent reads it)."""
        offered = self.hello.get("codecs") or ()
        if not self.compress:
            return None, None
        large = next((c for c in wire.CODECS if c in offered and c != "zdict"), None)
        return large, "zdict" if large and "zdict" in offered else None

    def close(self) -> None:
        """Ask the agent to stop (best effort), then drop the connection."""
        if (
            self.shutdown_on_close
            and self._stream is not None
            and not self._closed.is_set()
            and not self._silent
        ):
            try:
                self.request("shutdown", timeout=2.0, retries=0)
            except (TransportError, RemoteError):
                pass
        self._closed.set()
        self._stream = None
        try:
            self._disconnect()
        except OSError as exc:  # already gone
            log.debug("board %s: disconnect: %s", self.name, exc)

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals
    def _byte_time(self) -> float:
        """Seconds per byte on the line (0 for pipes)."""
        return 0.0

    def _line_ahead_by(self, seconds: float, ranges: dict[int, list[Any]], in_flight: dict[int, int]) -> None:
        """An answer came `seconds` before its chunk should have crossed at the nominal baud: the
        line (a pty, a USB bridge) is faster than modelled, so every later chunk is due that much
        sooner; else a lost tail chunk would wait out the whole modelled backlog."""
        if seconds <= 0:
            return
        self._line_free_at = max(time.monotonic(), self._line_free_at - seconds)
        for off in in_flight.values():
            ranges[off][2] -= seconds

    def _send(self, data: bytes) -> None:
        assert self._stream is not None
        try:
            self._stream.write(data)
        except OSError as exc:
            raise TransportError(f"board {self.name}: cannot write to the agent ({exc})") from None
        self.line.frames_sent += 1
        self.line.bytes_sent += len(data)
        self._line_free_at = max(time.monotonic(), self._line_free_at) + len(data) * self._byte_time()

    def _stalled(
        self, name: str, acked: int, size: int, stalled: float, sent: int, failed: int, mark: tuple[int, ...]
    ) -> TransportError:
        what = f"upload of {name} stalled at {acked:,} of {size:,} bytes for {stalled:.0f} s"
        keep = f"what the board stored (at least {acked:,} bytes) resumes on the next try"
        if self._noise_mark() == mark:  # not one damaged frame seen since the last progress: silence
            return AgentTimeoutError(
                f"board {self.name}: {what}; no answer at all: the agent or the line is down; {keep}"
            )
        return self._too_noisy(what, sent, failed, keep)

    def _encode(self, header: dict[str, Any], body: bytes = b"") -> bytes:
        if not self.framed:
            return wire.encode_line(header, body)
        return wire.encode_frame(header, body, checked=2 in (self.hello.get("frames") or ()))

    def _line_name(self) -> str:
        """The line, for error messages ("at 921600 baud")."""
        return ""

    def _noise_mark(self) -> tuple[int, ...]:
        """Changes when this side saw damaged frames, or the agent said it did (NAKs)."""
        d = self._decoder
        if isinstance(d, wire.FrameDecoder):
            return (d.crc_errors, d.stale_drops, d.dropped_bytes, self._naks)
        return (0, 0, 0, self._naks)

    def _too_noisy(
        self, what: str, sent: int | None = None, failed: int | None = None, keep: str = ""
    ) -> LineTooNoisyError:
        sent = self.line.frames_sent if sent is None else sent
        failed = self.line.frames_failed if failed is None else failed
        agent = self.line.agent
        seen = ""
        if agent.get("crc_errors"):
            bad = agent["crc_errors"] + agent.get("stale_drops", 0)
            seen = f"; the agent saw {bad} damaged of {bad + agent.get('frames', 0)} frames"
        rate = 100.0 * failed / sent if sent else 100.0
        line = self._line_name()
        return LineTooNoisyError(
            f"board {self.name}: line too noisy: {rate:.0f} % of frames failed CRC or were lost "
            f"({failed} of {sent}){' at ' + line if line else ''}{seen} ({what}); "
            "try a lower baud or a shorter cable" + (f"; {keep}" if keep else "")
        )

    def _read_loop(self) -> None:
        decoder = wire.FrameDecoder() if self.framed else wire.LineDecoder()
        self._decoder = decoder
        stream = self._stream
        assert stream is not None
        while not self._closed.is_set():
            try:
                data = stream.read()
            except (OSError, ValueError, TypeError) as exc:  # TypeError: pyserial port closed under us
                log.debug("board %s: read failed: %s", self.name, exc)
                data = b""
            if data == b"":
                self._inbox.put(_EOF)
                return
            for header, payload in decoder.feed(data or b""):
                if header is None:
                    log.warning("board %s: dropped malformed message: %s", self.name, payload)
                    continue
                if header.get("nak") and header.get("id") is None:  # the agent saw a damaged frame
                    self._naks += 1
                    if isinstance(header.get("line"), dict):
                        self.line.agent = dict(header["line"])
                    continue
                self._inbox.put(header)
            if isinstance(decoder, wire.FrameDecoder):
                self.line.crc_errors, self.line.resyncs = decoder.crc_errors, decoder.resyncs

    def _next_item(self, seconds: float) -> dict[str, Any] | None:
        """The next answer from the agent within `seconds`, or None; TransportError at EOF."""
        try:
            item = self._inbox.get(timeout=seconds) if seconds > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return None
        if item is _EOF:
            self._inbox.put(_EOF)  # later requests fail fast too
            why = self._describe_death()
            raise TransportError(
                f"board {self.name}: the agent connection closed" + (f" ({why})" if why else "")
            )
        if item.get("replayed"):
            self.line.replays += 1
        return item

    def _wait(self, req_id: int, seconds: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            item = self._next_item(left)
            if item is None:
                return None
            if item.get("id") == req_id:
                return item
            log.debug("board %s: ignoring stale answer %s", self.name, item.get("id"))

    def _unwrap(self, answer: dict[str, Any]) -> dict[str, Any]:
        if answer.get("ok"):
            return answer.get("result") or {}
        err = answer.get("error") or {}
        kind = str(err.get("type", "unknown"))
        message = str(err.get("message", ""))
        if kind == "protocol_mismatch" or answer.get("v") != self.protocol:
            raise ProtocolMismatchError(f"board {self.name}: {message or 'protocol version differs'}")
        if kind == "busy":
            busy = message.replace("board busy", f"board {self.name} busy", 1)
            raise BoardBusyError(f"{busy}; try again later, or wait for it (--wait)")
        raise RemoteError(kind, f"board {self.name}: {message}")


def _next_gap(ranges: dict[int, list[Any]], acked: int, size: int, chunk: int) -> tuple[int, int] | None:
    """The first stretch at or after `acked` that is neither in flight nor held, at most `chunk` long."""
    cursor = acked
    for off in sorted(ranges):
        end = ranges[off][0]
        if end <= cursor:
            continue
        if off > cursor:
            return cursor, min(off, cursor + chunk)
        cursor = end
    return (cursor, min(size, cursor + chunk)) if cursor < size else None
