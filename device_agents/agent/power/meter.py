"""External power meter on a serial port, hilt meter line protocol v1 (see `parse_meter_line`).

A meter is never found in sysfs: the bench request names it (`meter: {device, baud}`).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ..rawtty import set_raw
from .base import PowerReader

SOURCE = "meter"
PRIORITY = 90


class MeterReader(PowerReader):
    source = SOURCE

    def __init__(self, device: str, baud: int = 115200) -> None:
        self.device = device
        self.sensor = "meter:%s" % device
        self.interval_s = 0.005
        self.fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        set_raw(self.fd, baud)
        self.buf = b""
        self.latest: Optional[float] = None

    def read(self) -> Optional[float]:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data:
                break
            self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            watts = parse_meter_line(line.decode("ascii", "replace"))
            if watts is not None:
                self.latest = watts
        return self.latest

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def parse_meter_line(line: str) -> Optional[float]:
    """hilt meter line protocol v1: one reading per ASCII line, at the meter's own rate.

    A line is either a bare number (watts) or space-separated `key=value` pairs with keys
    W, mW (power) or V, mV and A, mA (power = V x A). Blank lines and lines starting with
    '#' are ignored; anything unparsable is skipped. Returns watts or None.
    """
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    try:
        return float(line)
    except ValueError:
        pass
    vals: Dict[str, float] = {}
    for part in line.replace(",", " ").split():
        if "=" not in part:
            continue
        k, v = part.split("=", 1)
        try:
            vals[k.strip()] = float(v)
        except ValueError:
            return None
    if "W" in vals:
        return vals["W"]
    if "mW" in vals:
        return vals["mW"] / 1000.0
    volts = vals.get("V", vals["mV"] / 1000.0 if "mV" in vals else None)
    amps = vals.get("A", vals["mA"] / 1000.0 if "mA" in vals else None)
    if volts is None or amps is None:
        return None
    return volts * amps


def probe(sysfs: str) -> List[PowerReader]:
    return []  # configured per request, not discovered


def open_reader(config: Dict[str, Any]) -> PowerReader:
    """The meter a bench request names: `{"device": path, "baud": int}`."""
    return MeterReader(str(config["device"]), int(config.get("baud", 115200)))
