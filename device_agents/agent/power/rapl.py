"""Intel/AMD RAPL (Documentation/power/powercap/powercap.rst): package `energy_uj` counters, summed
over packages and unwrapped at `max_energy_range_uj`."""

from __future__ import annotations

import os
import time
from typing import List, Optional, Tuple

from ..sysfs import listdir, natural_key, read_int
from .base import PowerReader

SOURCE = "rapl"
PRIORITY = 40  # CPU packages only, not the board

Zone = Tuple[str, int]  # (energy_uj path, max range uJ)


class RaplReader(PowerReader):
    source = SOURCE

    def __init__(self, zones: List[Zone]) -> None:
        self.zones = zones
        self.sensor = "rapl:%d package(s)" % len(zones)
        self.interval_s = 0.01
        self._last: Optional[Tuple[float, List[int]]] = None

    def energy_uj(self) -> Optional[List[int]]:
        vals = []
        for path, _ in self.zones:
            v = read_int(path)
            if v is None:
                return None
            vals.append(v)
        return vals

    @staticmethod
    def delta(prev: int, cur: int, max_range: int) -> int:
        """Energy between two counter readings, across at most one wrap."""
        return cur - prev if cur >= prev else cur + max_range - prev

    def read(self) -> Optional[float]:
        now = time.monotonic()
        vals = self.energy_uj()
        if vals is None:
            return None
        last, self._last = self._last, (now, vals)
        if last is None or now <= last[0]:
            return None
        prev = last[1]
        joules = sum(self.delta(prev[i], vals[i], self.zones[i][1]) for i in range(len(vals))) / 1e6
        return joules / (now - last[0])


def probe(sysfs: str) -> List[PowerReader]:
    zones = []
    base = os.path.join(sysfs, "class/powercap")
    for name in sorted(listdir(base), key=natural_key):
        if not name.startswith("intel-rapl:") or name.count(":") != 1:
            continue  # top-level packages only; subzones are parts of them
        energy = os.path.join(base, name, "energy_uj")
        max_range = read_int(os.path.join(base, name, "max_energy_range_uj"))
        if read_int(energy) is not None and max_range:
            zones.append((energy, max_range))
    return [RaplReader(zones)] if zones else []
