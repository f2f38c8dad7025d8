"""The wire format shared by the host and the agent (one definition for both sides; the file and
tree hashes are `hilt_base.hashing`, which the agent's zipapp packs).

Wire formats (both carry a JSON header and an optional binary body):
- lines (local pipes, SSH): one JSON object per line; if it has `body_len`, exactly that many raw
  bytes follow the newline.
- frames (serial): MAGIC | u32 length | payload | u32 CRC32(length + payload), payload =
  JSON header, NUL, body. Frames over MAX_FRAME, with a bad CRC, or left incomplete for too long
  are dropped and the reader resynchronises on the next MAGIC.
  Checked frames (MAGIC2) add a u32 CRC32 of the length right after it: a length damaged on a noisy
  line is refused at once instead of swallowing the frames behind it. Every reader takes both; a
  host sends checked frames once the agent's hello lists frame kind 2 in `frames`, and the agent
  answers in checked frames once it has seen one.

Every request carries `v` (protocol version), `id`, `type` and `timeout` (seconds); every answer
carries the same `id` and either `ok: true, result` or `ok: false, error: {type, message}`.

Compressed chunks: a `put` chunk may carry `z` (a codec from the agent's hello `codecs`), `n` (its
length uncompressed) and `crc` (CRC32 of the uncompressed bytes); its `offset` still counts
uncompressed bytes, so resuming works as before. A host sends them only to an agent whose hello
lists the codec (an older agent never sees one); a chunk that does not decode to `n` bytes with
that CRC is refused as `bad_chunk` and sent again.
"""

from __future__ import annotations

import binascii
import json
import struct
import time
import zlib
from typing import Any, Dict, List, Optional, Tuple

try:  # optional in a Python build; a board without it just does not offer the codec
    import lzma
except ImportError:  # pragma: no cover - every interpreter hilt is tested with has it
    lzma = None  # type: ignore[assignment]

PROTOCOL_VERSION = 1
AGENT_VERSION = "0.3.0"
MAGIC = b"HLT\x01"
MAGIC2 = b"HLT\x02"  # checked frame: the length has its own CRC
FRAME_KINDS = (1, 2)
MAX_FRAME = 1 << 20  # payload cap for serial frames (bytes)
MAX_LINE = 1 << 20  # cap on one JSON header line
MAX_BODY = 64 << 20  # cap on one binary body in lines mode
FRAME_STALE_S = 1.0  # an incomplete frame with no progress for this long is dropped
RUNNER_NAME = "hilt-runner"
READY_MARKER = ("\r\nHILT_AGENT_READY protocol=%d\r\n" % PROTOCOL_VERSION).encode("ascii")
KINDS = ("bundle", "runtime")
# chunk codecs, best ratio first (lzma: raw LZMA2, 1 MiB dictionary, so a small board decodes a
# chunk in little memory; per chunk, so each one decodes on its own and resuming works as before)
# zdict: zlib primed with the DICT_SPAN file bytes before the chunk (which the agent has stored by
# the time it decodes it): small chunks on a noisy line compress about as well as whole files
CODECS = ("lzma", "zdict", "zlib") if lzma is not None else ("zdict", "zlib")
DICT_SPAN = 32 << 10  # zlib's window: the most of a preset dictionary it uses
MAX_CHUNK_RAW = 4 << 20  # cap on one chunk's uncompressed length (a bad `n` cannot make us allocate more)
_LZMA_DICT = 1 << 20
SHA_HEX = frozenset("0123456789abcdef")

Header = Dict[str, Any]
Message = Tuple[Optional[Header], Any]  # (header, body) or (None, error text)


class AgentFailure(Exception):
    """A typed error answered to the host; the agent keeps serving."""

    def __init__(self, type_: str, message: str) -> None:
        Exception.__init__(self, message)
        self.type = type_
        self.message = message


def error_answer(req_id: Any, type_: str, message: str) -> Header:
    return {"v": PROTOCOL_VERSION, "id": req_id, "ok": False, "error": {"type": type_, "message": message}}


# --------------------------------------------------------------------------- codecs


def encode_line(header: Header, body: bytes = b"") -> bytes:
    """One lines-mode message: JSON line, then `body_len` raw bytes if there is a body."""
    header = dict(header)
    if body:
        header["body_len"] = len(body)
    else:
        header.pop("body_len", None)
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + bytes(body)


def decode_header(raw: bytes) -> Header:
    """A message's JSON header; ValueError (bad UTF-8 included) unless it is one JSON object."""
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("not a JSON object")
    return header


class LineDecoder:
    """Incremental lines-mode parser: feed bytes, get (header, body) pairs or (None, error)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pending: Optional[Header] = None  # header waiting for its body

    def feed(self, data: bytes, now: Optional[float] = None) -> List[Message]:
        self.buf += data
        out: List[Message] = []
        while True:
            if self.pending is not None:
                need = self.pending.pop("body_len")
                if len(self.buf) < need:
                    self.pending["body_len"] = need
                    break
                body = bytes(self.buf[:need])
                del self.buf[:need]
                out.append((self.pending, body))
                self.pending = None
                continue
            idx = self.buf.find(b"\n")
            if idx < 0:
                if len(self.buf) > MAX_LINE:
                    self.buf.clear()
                    out.append((None, "line longer than %d bytes dropped" % MAX_LINE))
                break
            line = bytes(self.buf[:idx])
            del self.buf[: idx + 1]
            if not line.strip():
                continue
            try:
                header = decode_header(line)
            except ValueError as exc:
                out.append((None, "malformed JSON line: %s" % exc))
                continue
            blen = header.get("body_len", 0)
            if not isinstance(blen, int) or blen < 0 or blen > MAX_BODY:
                out.append((None, "bad body_len %r" % (blen,)))
                continue
            if blen:
                self.pending = header
            else:
                header.pop("body_len", None)
                out.append((header, b""))
        return out


def _crc(data: bytes) -> bytes:
    return struct.pack(">I", binascii.crc32(data) & 0xFFFFFFFF)


def encode_frame(header: Header, body: bytes = b"", checked: bool = False) -> bytes:
    """One serial frame: MAGIC, length, JSON header + NUL + body, CRC32 over length and payload.

    `checked`: MAGIC2, length, CRC32 of the length, payload, CRC32 over all after the magic."""
    payload = json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\0" + bytes(body)
    if len(payload) > MAX_FRAME:
        raise ValueError("frame payload %d bytes exceeds cap %d" % (len(payload), MAX_FRAME))
    length = struct.pack(">I", len(payload))
    if checked:
        head = length + _crc(length)
        return MAGIC2 + head + payload + _crc(head + payload)
    return MAGIC + length + payload + _crc(length + payload)


class FrameDecoder:
    """Incremental frame parser with resynchronisation; counts what it had to throw away."""

    def __init__(self, max_frame: int = MAX_FRAME, stale_s: float = FRAME_STALE_S) -> None:
        self.buf = bytearray()
        self.max_frame = max_frame
        self.stale_s = stale_s
        self.dropped_bytes = 0
        self.crc_errors = 0
        self.stale_drops = 0
        self.frames = 0  # good frames decoded
        self.checked_seen = False  # a checked frame (MAGIC2) arrived: the peer reads them too
        self.resyncs = 0  # times the reader lost the frame boundary and had to hunt for MAGIC
        self._in_sync = True
        self._progress_at = time.monotonic()

    def _skip(self, n: int) -> None:
        del self.buf[:n]
        self.dropped_bytes += n
        if self._in_sync:
            self._in_sync = False
            self.resyncs += 1

    def stats(self) -> Dict[str, int]:
        """What this reader saw: good frames, CRC failures, resyncs, stale drops, bytes thrown away."""
        return {
            "frames": self.frames,
            "crc_errors": self.crc_errors,
            "resyncs": self.resyncs,
            "stale_drops": self.stale_drops,
            "dropped_bytes": self.dropped_bytes,
        }

    def feed(self, data: bytes, now: Optional[float] = None) -> List[Message]:
        now = time.monotonic() if now is None else now
        if data:
            self.buf += data
            self._progress_at = now
        out: List[Message] = []
        while True:
            idx = self.buf.find(MAGIC[:3])
            if idx < 0:
                keep = len(MAGIC) - 1
                if len(self.buf) > keep:
                    self._skip(len(self.buf) - keep)
                break
            if idx:
                self._skip(idx)
            if len(self.buf) < 4:
                break
            kind = self.buf[3]
            if kind not in FRAME_KINDS:
                self._skip(1)
                continue
            head = 8 if kind == 1 else 12
            if len(self.buf) < head:
                break
            (length,) = struct.unpack(">I", bytes(self.buf[4:8]))
            if kind == 2 and _crc(bytes(self.buf[4:8])) != bytes(self.buf[8:12]):
                self.crc_errors += 1  # a damaged length: drop it now, do not wait for that many bytes
                self._skip(1)
                continue
            if length > self.max_frame or length == 0:
                self._skip(1)
                continue
            total = head + length + 4
            if len(self.buf) < total:
                if now - self._progress_at > self.stale_s:
                    self.stale_drops += 1
                    self._skip(1)
                    continue
                break
            if _crc(bytes(self.buf[4 : head + length])) != bytes(self.buf[head + length : total]):
                self.crc_errors += 1
                self._skip(1)
                continue
            payload = bytes(self.buf[head : head + length])
            del self.buf[:total]
            if kind == 2:
                self.checked_seen = True
            self.frames += 1
            self._in_sync = True
            sep = payload.find(b"\0")
            head, body = (payload, b"") if sep < 0 else (payload[:sep], payload[sep + 1 :])
            try:
                header = decode_header(head)
            except ValueError as exc:
                out.append((None, "malformed frame header: %s" % exc))
                continue
            out.append((header, body))
        return out


# --------------------------------------------------------------------------- chunk codecs


def _lzma_filters(preset: Optional[int]) -> List[Dict[str, Any]]:
    spec: Dict[str, Any] = {"id": lzma.FILTER_LZMA2, "dict_size": _LZMA_DICT}
    if preset is not None:
        spec["preset"] = preset
    return [spec]


def compress_chunk(codec: str, raw: bytes, before: bytes = b"") -> bytes:
    """One chunk compressed with `codec` (one of CODECS); `before`: for zdict, the file bytes
    just before the chunk (at most DICT_SPAN of them are used)."""
    if codec == "zdict" and before:
        comp = zlib.compressobj(9, zdict=before[-DICT_SPAN:])
        return comp.compress(raw) + comp.flush()
    if codec in ("zlib", "zdict"):
        return zlib.compress(raw, 6)
    if codec == "lzma" and lzma is not None:
        return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters(6))
    raise ValueError("unknown chunk codec %r" % (codec,))


def check_chunk_args(codec: Any, size: Any, crc: Any) -> None:
    """Refuse a compressed chunk's header that no decoder could satisfy (`bad_request`)."""
    if codec not in CODECS:
        raise AgentFailure("bad_request", "unknown chunk codec %r; this agent reads %s" % (codec, CODECS))
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_CHUNK_RAW:
        raise AgentFailure("bad_request", "compressed chunk needs 'n', its length, 0..%d" % MAX_CHUNK_RAW)
    if not isinstance(crc, int) or isinstance(crc, bool):
        raise AgentFailure("bad_request", "compressed chunk needs 'crc', CRC32 of its bytes")


def decompress_chunk(codec: Any, data: bytes, size: Any, crc: Any, before: bytes = b"") -> bytes:
    """The chunk's uncompressed bytes; AgentFailure `bad_chunk` unless they are exactly `size` bytes
    with CRC32 `crc` (a decoder never produces more than `size` + 1 bytes). `before`: as given to
    compress_chunk (zdict)."""
    check_chunk_args(codec, size, crc)
    try:
        if codec == "zdict" and before:
            dec: Any = zlib.decompressobj(zdict=before[-DICT_SPAN:])
        elif codec in ("zlib", "zdict"):
            dec = zlib.decompressobj()
        else:
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma_filters(None))
        raw = dec.decompress(data, size + 1)
        done = dec.eof
    except Exception as exc:  # noqa: BLE001 - zlib.error, lzma.LZMAError, ...: any decoder failure
        raise AgentFailure(
            "bad_chunk", "%s chunk does not decompress (%s); send it again" % (codec, exc)
        ) from None
    if len(raw) != size or not done:
        raise AgentFailure(
            "bad_chunk",
            "%s chunk decompressed to %s bytes, not %d; send it again"
            % (codec, len(raw) if len(raw) <= size else "more than %d" % size, size),
        )
    if binascii.crc32(raw) & 0xFFFFFFFF != crc:
        raise AgentFailure("bad_chunk", "%s chunk's CRC32 does not match; send it again" % codec)
    return raw


# --------------------------------------------------------------------------- hashes


def is_sha(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= SHA_HEX
