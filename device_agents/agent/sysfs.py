"""Tolerant readers for procfs/sysfs files: a missing or odd file is a default, never an exception."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple


def read(path: str, default: Optional[str] = None) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return default


def read_int(path: str, default: Optional[int] = None) -> Optional[int]:
    text = read(path)
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def listdir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def natural_key(name: str) -> Tuple[str, int]:
    """Sort key that puts cpu2 before cpu10 and hwmon2 before hwmon10."""
    digits = "".join(c for c in name if c.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else -1)
