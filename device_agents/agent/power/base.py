"""What every power reader shares: the reader interface, the sampler thread and the integrals."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..sysfs import listdir, natural_key, read, read_int

Sample = Tuple[float, float]  # (monotonic seconds, watts)


class PowerReader:
    """One power source; `read()` gives watts now (or None), `interval_s` is the sensor's rate."""

    source = "model"
    interval_s = 0.01
    sensor = ""

    def read(self) -> Optional[float]:
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        return {"source": self.source, "sensor": self.sensor, "interval_s": self.interval_s}

    def close(self) -> None:
        pass


def hwmon_chips(sysfs: str) -> Iterator[Tuple[str, str]]:
    """(directory, chip name) of every hwmon device, in natural order."""
    base = os.path.join(sysfs, "class/hwmon")
    for name in sorted(listdir(base), key=natural_key):
        path = os.path.join(base, name)
        yield path, read(os.path.join(path, "name"), "") or ""


def hwmon_interval(path: str, default_ms: int = 10) -> float:
    """The chip's own update interval (ms in sysfs), clamped to 2..100 ms, in seconds."""
    ms = read_int(os.path.join(path, "update_interval"), default_ms)
    return min(max(ms if ms is not None else default_ms, 2), 100) / 1000.0


def integrate(samples: List[Sample]) -> float:
    """Trapezoid integral of (t, watts) samples: joules."""
    total = 0.0
    for i in range(1, len(samples)):
        (t0, p0), (t1, p1) = samples[i - 1], samples[i]
        total += (t1 - t0) * (p0 + p1) / 2.0
    return total


def mean_power(samples: List[Sample]) -> Optional[float]:
    """Time-weighted mean power of a sample run (falls back to the plain mean)."""
    if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
        return integrate(samples) / (samples[-1][0] - samples[0][0])
    return sum(w for _, w in samples) / len(samples) if samples else None


class PowerSampler(threading.Thread):
    """Samples a reader at its own rate until stopped; keeps (t, watts) pairs."""

    def __init__(self, reader: PowerReader) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.reader = reader
        self.samples: List[Sample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            watts = self.reader.read()
            if watts is not None:
                self.samples.append((time.monotonic(), watts))
            self._stop_event.wait(self.reader.interval_s)

    def stop(self) -> List[Sample]:
        self._stop_event.set()
        self.join()
        watts = self.reader.read()
        if watts is not None:
            self.samples.append((time.monotonic(), watts))
        return self.samples


def measure_window(reader: PowerReader, seconds: float) -> List[Sample]:
    sampler = PowerSampler(reader)
    reader.read()  # prime counters (RAPL needs two readings)
    sampler.start()
    time.sleep(seconds)
    return sampler.stop()
