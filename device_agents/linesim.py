"""A serial-line simulator: two pty pairs joined by relay threads that can throttle and damage bytes.

A pty ignores the baud rate and never corrupts data; real lines do both. The relay paces bytes at
ten bit times each (8N1) and can flip or drop chosen bytes of the host-to-board direction, so
upload throughput and fault recovery can be measured on one machine. Tests and benchmarks use it.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class LineFaults:
    """Damage on the host-to-board direction, by absolute byte offset of that stream."""

    flip: set[int] = field(default_factory=set)  # XOR 0xFF at these offsets
    drop: list[tuple[int, int]] = field(default_factory=list)  # (start, length) runs that vanish


class PtyRelay:
    """host_path <-> relay <-> board_path. `baud=None` forwards as fast as the ptys allow."""

    def __init__(self, baud: int | None = None, faults: LineFaults | None = None) -> None:
        self.baud = baud
        self.faults = faults or LineFaults()
        self._host_master, self._host_slave = os.openpty()
        self._board_master, self._board_slave = os.openpty()
        for fd in (self._host_slave, self._board_slave):
            tty.setraw(fd)
        for fd in (self._host_master, self._board_master):
            os.set_blocking(fd, False)
        self.host_path = os.ttyname(self._host_slave)
        self.board_path = os.ttyname(self._board_slave)
        self.forwarded = {"to_board": 0, "to_host": 0}
        self._from_host = 0  # raw bytes read from the host side: the offsets faults refer to
        self.damaged = {"flipped": 0, "dropped": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pty-relay", daemon=True)

    def start(self) -> PtyRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self._host_master, self._host_slave, self._board_master, self._board_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _damage(self, data: bytes, start: int) -> bytes:
        out = bytearray()
        for i, b in enumerate(data):
            pos = start + i
            if any(s <= pos < s + n for s, n in self.faults.drop):
                self.damaged["dropped"] += 1
                continue
            if pos in self.faults.flip:
                self.damaged["flipped"] += 1
                b ^= 0xFF
            out.append(b)
        return bytes(out)

    def _run(self) -> None:
        pumps = [
            threading.Thread(
                target=self._pump, args=(self._host_master, self._board_master, True), daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(self._board_master, self._host_master, False), daemon=True
            ),
        ]
        for p in pumps:
            p.start()
        for p in pumps:
            p.join()

    def _pump(self, src: int, dst: int, to_board: bool) -> None:
        """One direction of the line: bytes are stamped on arrival and delivered when their last bit
        would have arrived at the line rate (a UART with a FIFO), so late wake-ups are not lost time."""
        pending: deque[tuple[float, bytes]] = deque()
        busy_until = 0.0
        byte_s = 10.0 / self.baud if self.baud else 0.0
        while not self._stop.is_set():
            timeout = 0.1
            if pending:
                arrival, data = pending[0]
                due = max(busy_until, arrival) + len(data) * byte_s
                now = time.monotonic()
                if due <= now:
                    self._write(dst, data)
                    busy_until = due
                    pending.popleft()
                    continue
                timeout = due - now
            ready, _, _ = select.select([src], [], [], timeout)
            if not ready:
                continue
            try:
                data = os.read(src, 256 if self.baud else 1 << 16)
            except BlockingIOError:
                continue
            except OSError:  # the far end closed its slave; keep serving
                time.sleep(0.01)
                continue
            if not data:
                continue
            stamp = time.monotonic()
            if to_board:
                raw = len(data)
                data = self._damage(data, self._from_host)
                self._from_host += raw
                self.forwarded["to_board"] += len(data)
            else:
                self.forwarded["to_host"] += len(data)
            if data:
                pending.append((stamp, data))

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                select.select([], [fd], [], 0.1)
                continue
            except OSError as exc:
                log.debug("relay write failed: %s", exc)
                return
            view = view[n:]
