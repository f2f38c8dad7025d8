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
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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

log = logging.getLogger(__name__)

_EOF = object()


def agent_pyz() -> Path:
    """The agent as one file to ship: `agent-<sha16>.pyz` under the hilt cache, packed once per content."""
    return Path(pack.build_pyz(str(cache_root() / "agent-pyz")))


# Requests the host may safely resend after a lost frame (they change nothing twice).
IDEMPOTENT = frozenset({"hello", "has", "put", "install"})


@dataclass
class Stream:
    """A byte stream to the agent: `read` blocks briefly and returns b"" at EOF, None when idle."""

    read: Callable[[], bytes | None]
    write: Callable[[bytes], None]


class Transport:
    """Request/response with the agent over a Stream; subclasses provide `_connect` and `_disconnect`."""

    kind = "base"
    framed = False
    chunk_size = 4 << 20
    grace_s = 5.0  # transit allowance on top of the agent-side timeout
    retries = 0  # resends of idempotent requests after a timeout
    hello_timeout_s = 30.0
    shutdown_on_close = True  # an agent started for this session ends with it

    def __init__(self, name: str, protocol: int = wire.PROTOCOL_VERSION) -> None:
        self.name = name
        self.protocol = protocol
        self._ids = itertools.count(1)
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
        """Send one request and wait for its answer; typed agent errors raise RemoteError."""
        if self._stream is None:
            raise TransportError(f"board {self.name}: transport is not open")
        req_id = next(self._ids)
        header = {"v": self.protocol, "id": req_id, "type": type_, "timeout": timeout, "args": args or {}}
        data = wire.encode_frame(header, body) if self.framed else wire.encode_line(header, body)
        tries = 1 + (self.retries if retries is None else retries) * (type_ in IDEMPOTENT)
        for attempt in range(tries):
            with self._lock:
                self._send(data)
            answer = self._wait(req_id, timeout + self.grace_s + len(data) * self._byte_time())
            if answer is not None:
                return self._unwrap(answer)
            log.info("board %s: no answer to %s (try %d/%d)", self.name, type_, attempt + 1, tries)
        self._silent = True
        raise AgentTimeoutError(
            f"board {self.name}: no answer to '{type_}' within {timeout + self.grace_s:.1f} s; "
            "the agent or the line is down"
        )

    def upload(self, path: Path | str) -> str:
        """Store a file in the agent's cache (chunked, resumable); returns its sha256."""
        path = Path(path)
        sha = wire.sha256_file(str(path))
        size = path.stat().st_size
        state = self.request("put", {"sha256": sha, "op": "begin"}, timeout=10.0, retries=3)
        offset = int(state["offset"])
        if state.get("complete"):
            return sha
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
        self.request("put", {"sha256": sha, "op": "commit"}, timeout=60.0, retries=3)
        return sha

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

    def _send(self, data: bytes) -> None:
        assert self._stream is not None
        try:
            self._stream.write(data)
        except OSError as exc:
            raise TransportError(f"board {self.name}: cannot write to the agent ({exc})") from None

    def _read_loop(self) -> None:
        decoder = wire.FrameDecoder() if self.framed else wire.LineDecoder()
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
                self._inbox.put(header)

    def _wait(self, req_id: int, seconds: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self._inbox.get(timeout=left)
            except queue.Empty:
                return None
            if item is _EOF:
                self._inbox.put(_EOF)  # later requests fail fast too
                why = self._describe_death()
                raise TransportError(
                    f"board {self.name}: the agent connection closed" + (f" ({why})" if why else "")
                )
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
