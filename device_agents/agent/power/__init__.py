"""Power readers, one module per kind; the list of modules is the registry.

Each module in this package (except `base` and private ones) defines `SOURCE` (the energy source
name records carry), `PRIORITY` (lower is better: the first reader found is the one a bench uses)
and `probe(sysfs_root) -> [PowerReader]`. Adding a power reader is adding one file here; the
source names (`SOURCES`, which the host's record schema uses too) follow from the modules.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import List, Tuple

from .base import PowerReader

_NOT_READERS = ("base",)
FALLBACK_SOURCES = ("model", "none")  # the profile's power model; nothing to go on


def _reader_modules() -> Tuple[ModuleType, ...]:
    """Every reader module in this package (files or a zipapp alike), best first."""
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_READERS:
            continue
        mods.append(importlib.import_module("." + info.name, __name__))
    return tuple(sorted(mods, key=lambda m: (m.PRIORITY, m.__name__)))


READERS = _reader_modules()
SOURCES = tuple(dict.fromkeys(m.SOURCE for m in READERS)) + FALLBACK_SOURCES


def discover_power(sysfs: str = "/sys") -> List[PowerReader]:
    """Every power source the board offers, best first (Jetson rails, INA2xx, INA3221, RAPL)."""
    return [reader for mod in READERS for reader in mod.probe(sysfs)]
