"""NVIDIA Jetson power rails: the INA3221 channel labelled as the board's total input (VDD_IN ...)."""

from __future__ import annotations

from typing import List

from .base import PowerReader, hwmon_chips
from .ina3221 import Ina3221Reader, channels, total_rails

SOURCE = "jetson"
PRIORITY = 10  # the whole board's input: the best figure there is


def probe(sysfs: str) -> List[PowerReader]:
    found: List[PowerReader] = []
    for path, chip in hwmon_chips(sysfs):
        if chip != "ina3221":
            continue
        rails = total_rails(channels(path))
        if rails:
            found.append(Ina3221Reader(path, rails[:1], source=SOURCE))
    return found
