"""Weight formats by name, found by listing `harness/quant/formats/` (adding a format is one file)."""

from __future__ import annotations

import importlib
import pkgutil

from harness.quant import formats as _formats_pkg
from harness.quant.base import WeightFormat, WeightFormatError


def _discover() -> dict[str, WeightFormat]:
    found: dict[str, WeightFormat] = {}
    for info in sorted(pkgutil.iter_modules(_formats_pkg.__path__), key=lambda m: m.name):
        fmt = getattr(importlib.import_module(f"{_formats_pkg.__name__}.{info.name}"), "FORMAT", None)
        if isinstance(fmt, WeightFormat):
            found[fmt.name] = fmt
    return dict(sorted(found.items(), key=lambda kv: -kv[1].bits))


FORMATS: dict[str, WeightFormat] = _discover()


def weight_format(name: str) -> WeightFormat:
    """The format called `name`; one line naming the known ones otherwise."""
    if name not in FORMATS:
        raise WeightFormatError(f"unknown weight format {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]
