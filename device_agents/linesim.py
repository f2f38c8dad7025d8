"""A serial-line simulator: two pty pairs joined by relay threads that can throttle and damage bytes.

A pty ignores the baud rate and never corrupts data; real lines do both. The relay paces bytes at
ten bit times each (8N1) and can flip or drop chosen bytes of the host-to-board direction
(`LineFaults`), and damage either direction at random per byte (`LineNoise`: bit flips, dropped
bytes, bursts of garbage) from a fixed seed, so upload throughput and fault recovery can be measured
on one machine. Tests and benchmarks use it.
"""

from __future__ import annotations

import logging
import math
import os
import random
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


@dataclass(frozen=True)
class LineNoise:
    """Random damage on one direction, as probabilities per byte."""

    flip: float = 0.0  # one bit of the byte flipped
    drop: float = 0.0  # the byte vanishes
    burst: float = 0.0  # a burst starts here: `burst_len` bytes replaced by garbage
    burst_len: int = 16

    @property
    def quiet(self) -> bool:
        return not (self.flip or self.drop or self.burst)


class _Noiser:
    """Applies a LineNoise to a byte stream: each kind's next event drawn geometrically (fast)."""

    def __init__(self, noise: LineNoise, rng: random.Random, pos: int) -> None:
        self.noise = noise
        self.rng = rng
        self.pos = pos
        self.burst_left = 0
        self.next = {kind: self._after(pos, getattr(noise, kind)) for kind in ("flip", "drop", "burst")}
        self.counts = {"flipped": 0, "dropped": 0, "burst_bytes": 0}

    def _after(self, pos: int, rate: float) -> float:
        if rate <= 0:
            return math.inf
        if rate >= 1:
            return pos
        return pos + int(math.log(1.0 - self.rng.random()) / math.log(1.0 - rate))

    def apply(self, data: bytes) -> bytes:
        start, end = self.pos, self.pos + len(data)
        self.pos = end
        if not self.burst_left and all(n >= end for n in self.next.values()):
            return data
        out = bytearray(data)
        gone: set[int] = set()
        i = 0
        while self.burst_left and i < len(out):  # a burst that began in an earlier read
            out[i] = self.rng.randrange(256)
            self.burst_left -= 1
            self.counts["burst_bytes"] += 1
            i += 1
        for kind in ("burst", "flip", "drop"):
            rate = getattr(self.noise, kind)
            while self.next[kind] < end:
                at = int(self.next[kind]) - start
                if kind == "flip":
                    out[at] ^= 1 << self.rng.randrange(8)
                    self.counts["flipped"] += 1
                elif kind == "drop":
                    gone.add(at)
                    self.counts["dropped"] += 1
                else:
                    n = min(self.noise.burst_len, len(out) - at)
                    for j in range(at, at + n):
                        out[j] = self.rng.randrange(256)
                    self.counts["burst_bytes"] += n
                    self.burst_left = self.noise.burst_len - n
                self.next[kind] = self._after(int(self.next[kind]) + 1, rate)
        if gone:
            return bytes(b for j, b in enumerate(out) if j not in gone)
        return bytes(out)


class PtyRelay:
    """host_path <-> relay <-> board_path. `baud=None` forwards as fast as the ptys allow.

    `noise` damages the host-to-board direction and `noise_to_host` the other one, each from its
    own random stream of `seed`; `set_noise` changes them while the relay runs."""

    def __init__(
        self,
        baud: int | None = None,
        faults: LineFaults | None = None,
        noise: LineNoise | None = None,
        noise_to_host: LineNoise | None = None,
        seed: int = 0,
    ) -> None:
        self.baud = baud
        self.faults = faults or LineFaults()
        self.seed = seed
        self._noisers: dict[str, _Noiser | None] = {"to_board": None, "to_host": None}
        self._drop_next = {"to_board": 0, "to_host": 0}
        self._offsets = {"to_board": 0, "to_host": 0}
        self._noise_counts: dict[str, dict[str, int]] = {}
        self.set_noise(noise, noise_to_host)
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

    def set_noise(self, to_board: LineNoise | None = None, to_host: LineNoise | None = None) -> None:
        """Random damage from now on (None: a clean direction); counts carry on in `noise_damage`."""
        for direction, noise in (("to_board", to_board), ("to_host", to_host)):
            old = self._noisers[direction]
            if old is not None:
                self._fold(direction, old)
            if noise is None or noise.quiet:
                self._noisers[direction] = None
                continue
            rng = random.Random(f"{self.seed}-{direction}-{self._offsets[direction]}")
            self._noisers[direction] = _Noiser(noise, rng, self._offsets[direction])

    def _fold(self, direction: str, noiser: _Noiser) -> None:
        total = self._noise_counts.setdefault(direction, {"flipped": 0, "dropped": 0, "burst_bytes": 0})
        for k, v in noiser.counts.items():
            total[k] += v
        noiser.counts = {k: 0 for k in noiser.counts}

    @property
    def noise_damage(self) -> dict[str, dict[str, int]]:
        """What the random noise did so far, per direction: flipped, dropped, burst_bytes."""
        out: dict[str, dict[str, int]] = {}
        for direction in ("to_board", "to_host"):
            total = dict(self._noise_counts.get(direction, {"flipped": 0, "dropped": 0, "burst_bytes": 0}))
            noiser = self._noisers[direction]
            if noiser is not None:
                for k, v in noiser.counts.items():
                    total[k] += v
            out[direction] = total
        return out

    def drop_next(self, direction: str, nbytes: int) -> None:
        """Lose the next `nbytes` that enter the line in one direction ("to_board" or "to_host")."""
        self._drop_next[direction] += nbytes

    def __enter__(self) -> PtyRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _damage(self, data: bytes, start: int) -> bytes:
        if not self.faults.flip and not self.faults.drop:
            return data
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
            direction = "to_board" if to_board else "to_host"
            if to_board:
                raw = len(data)
                data = self._damage(data, self._from_host)
                self._from_host += raw
            if self._drop_next[direction]:
                n = min(self._drop_next[direction], len(data))
                self._drop_next[direction] -= n
                data = data[n:]
            self._offsets[direction] += len(data)
            noiser = self._noisers[direction]
            if noiser is not None and data:
                data = noiser.apply(data)
            self.forwarded[direction] += len(data)
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
