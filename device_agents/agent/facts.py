"""Board facts (CPU, memory, governors, frequencies, temperatures) from procfs and sysfs."""

from __future__ import annotations

import os
import platform
from typing import Any, Dict, List, Optional, Tuple

from .sysfs import listdir, natural_key, read, read_int


class Facts:
    """Board facts read from procfs/sysfs; the roots are parameters so tests can fake them."""

    def __init__(self, sysfs: str = "/sys", procfs: str = "/proc") -> None:
        self.sysfs = sysfs
        self.procfs = procfs

    def cpu_dirs(self) -> List[Tuple[int, str]]:
        base = os.path.join(self.sysfs, "devices/system/cpu")
        names = [n for n in listdir(base) if n.startswith("cpu") and n[3:].isdigit()]
        return [(int(n[3:]), os.path.join(base, n)) for n in sorted(names, key=natural_key)]

    def governors(self) -> Dict[str, Optional[str]]:
        out = {}
        for i, d in self.cpu_dirs():
            gov = read(os.path.join(d, "cpufreq/scaling_governor"))
            if gov is not None:
                out[str(i)] = gov
        return out

    def freqs_khz(self) -> Dict[str, Dict[str, Optional[int]]]:
        out = {}
        for i, d in self.cpu_dirs():
            cur = read_int(os.path.join(d, "cpufreq/scaling_cur_freq"))
            mx = read_int(os.path.join(d, "cpufreq/cpuinfo_max_freq"))
            if cur is not None:
                out[str(i)] = {"cur": cur, "max": mx}
        return out

    def temps_c(self) -> Dict[str, float]:
        base = os.path.join(self.sysfs, "class/thermal")
        out: Dict[str, float] = {}
        for name in sorted(listdir(base), key=natural_key):
            if not name.startswith("thermal_zone"):
                continue
            milli = read_int(os.path.join(base, name, "temp"))
            if milli is None:
                continue
            label = read(os.path.join(base, name, "type")) or name
            key = label if label not in out else "%s.%s" % (label, name)
            out[key] = milli / 1000.0
        return out

    def cpu_model(self) -> str:
        text = read(os.path.join(self.procfs, "cpuinfo"), "") or ""
        fields: Dict[str, str] = {}
        for line in text.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                fields.setdefault(k.strip().lower(), v.strip())
        for key in ("model name", "model", "uarch", "hardware", "cpu model", "isa"):
            if fields.get(key):
                return fields[key]
        return platform.processor() or platform.machine()

    def memory_mb(self) -> Dict[str, Optional[int]]:
        text = read(os.path.join(self.procfs, "meminfo"), "") or ""
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("MemTotal:", "MemAvailable:"):
                out[parts[0][:-1]] = int(parts[1]) // 1024
        return {"total": out.get("MemTotal"), "available": out.get("MemAvailable")}

    def os_name(self) -> str:
        text = read("/etc/os-release", "") or ""
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
        return platform.system()

    def snapshot(self) -> Dict[str, Any]:
        return {"governors": self.governors(), "freqs_khz": self.freqs_khz(), "temps_c": self.temps_c()}


def throttle_check(
    before: Dict[str, Any], after: Dict[str, Any], temp_limit: float
) -> Tuple[bool, List[str]]:
    """A run is suspect if it got hot, or a core ran well below its own frequency before the run."""
    reasons = []
    hot = [k for k, t in after.get("temps_c", {}).items() if t >= temp_limit]
    if hot:
        reasons.append("temperature >= %.0f C on %s" % (temp_limit, ", ".join(hot)))
    for cpu, fa in after.get("freqs_khz", {}).items():
        fb = before.get("freqs_khz", {}).get(cpu)
        if fb and fa.get("cur") and fb.get("cur") and fa["cur"] < 0.85 * fb["cur"]:
            reasons.append("cpu%s frequency fell %d -> %d kHz" % (cpu, fb["cur"], fa["cur"]))
        elif fa.get("max") and fa.get("cur") and fa["cur"] < 0.5 * fa["max"]:
            gov = after.get("governors", {}).get(cpu)
            if gov == "performance":
                reasons.append("cpu%s at %d of %d kHz under 'performance'" % (cpu, fa["cur"], fa["max"]))
    return bool(reasons), reasons
