"""hwmon INA3221 (Documentation/hwmon/ina3221.rst): no power file; P = bus mV (`inN_input`) x mA
(`currN_input`), summed over the enabled channels. A chip with a Jetson total rail is `jetson.py`'s."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from ..sysfs import read, read_int
from .base import PowerReader, hwmon_chips, hwmon_interval

SOURCE = "hwmon"
PRIORITY = 30
JETSON_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")

Channel = Tuple[int, str]  # (index, label)


class Ina3221Reader(PowerReader):
    source = SOURCE

    def __init__(self, path: str, channels: List[Channel], source: str = SOURCE) -> None:
        self.base = path
        self.channels = channels
        self.source = source
        self.sensor = "ina3221:%s[%s]" % (os.path.basename(path), ",".join(lbl for _, lbl in channels))
        self.interval_s = hwmon_interval(path)

    def read(self) -> Optional[float]:
        total = 0.0
        for idx, _ in self.channels:
            mv = read_int(os.path.join(self.base, "in%d_input" % idx))
            ma = read_int(os.path.join(self.base, "curr%d_input" % idx))
            if mv is None or ma is None:
                return None
            total += mv * ma / 1e6
        return total


def channels(path: str) -> List[Channel]:
    """The enabled, current-measuring channels of one chip, with their labels."""
    out = []
    for idx in (1, 2, 3):
        if not os.path.exists(os.path.join(path, "curr%d_input" % idx)):
            continue
        if read(os.path.join(path, "in%d_enable" % idx), "1") == "0":
            continue
        out.append((idx, read(os.path.join(path, "in%d_label" % idx), "ch%d" % idx) or "ch%d" % idx))
    return out


def total_rails(chans: List[Channel]) -> List[Channel]:
    return [c for c in chans if c[1] in JETSON_TOTAL_RAILS]


def probe(sysfs: str) -> List[PowerReader]:
    found: List[PowerReader] = []
    for path, chip in hwmon_chips(sysfs):
        if chip != "ina3221":
            continue
        chans = channels(path)
        if chans and not total_rails(chans):
            found.append(Ina3221Reader(path, chans))
    return found
