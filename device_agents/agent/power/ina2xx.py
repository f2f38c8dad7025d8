"""hwmon INA219/INA226 family (Documentation/hwmon/ina2xx.rst): `power1_input` in microwatts."""

from __future__ import annotations

import os
from typing import List, Optional

from ..sysfs import read_int
from .base import PowerReader, hwmon_chips, hwmon_interval

SOURCE = "hwmon"
PRIORITY = 20  # after a Jetson's total-input rail, before per-rail INA3221 sums
CHIPS = ("ina209", "ina219", "ina220", "ina226", "ina230", "ina231", "ina233", "ina238", "ina260")


class Ina2xxReader(PowerReader):
    source = SOURCE

    def __init__(self, path: str, chip: str) -> None:
        self.path = os.path.join(path, "power1_input")
        self.sensor = "%s:%s" % (chip, os.path.basename(path))
        self.interval_s = hwmon_interval(path)

    def read(self) -> Optional[float]:
        uw = read_int(self.path)
        return None if uw is None else uw / 1e6


def probe(sysfs: str) -> List[PowerReader]:
    return [
        Ina2xxReader(path, chip)
        for path, chip in hwmon_chips(sysfs)
        if chip in CHIPS and os.path.exists(os.path.join(path, "power1_input"))
    ]
