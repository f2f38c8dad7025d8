"""Seeded demo splits of the bearing-fault task, with held-out seeds and held-out speed bands.

Window i of a split is drawn from its own generator seeded by (simulator version, split seed, i), so any
prefix of a split is reproducible on its own and no two splits share a random stream. Labels cycle
through the 10 classes (i mod 10), so every prefix is balanced. Train and calib draw shaft speeds from
10-60 Hz minus the held-out bands; val and test draw only from the held-out bands, so the reported
accuracy is on speeds and seeds the model never saw.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from harness.data.cache import cache_root
from harness.data.simulator import class_fault, class_names, draw_params, simulate
from harness.data.tokenizer import tokenise_window
from harness.errors import DataError

log = logging.getLogger(__name__)

SIM_VERSION = 1
SPEED_RANGE_HZ = (10.0, 60.0)
HELD_OUT_BANDS_HZ: tuple[tuple[float, float], ...] = ((18.0, 21.0), (33.0, 36.0), (48.0, 51.0))
SNR_RANGE_DB = (0.0, 14.0)
SplitName = Literal["train", "val", "test", "calib"]


@dataclass(frozen=True)
class SplitSpec:
    """How one split is drawn."""

    seed: int
    held_out_speeds: bool
    default_n: int


SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec(seed=101, held_out_speeds=False, default_n=24_000),
    "val": SplitSpec(seed=202, held_out_speeds=True, default_n=1_000),
    "test": SplitSpec(seed=303, held_out_speeds=True, default_n=4_000),
    "calib": SplitSpec(seed=404, held_out_speeds=False, default_n=512),
}


def _train_intervals() -> list[tuple[float, float]]:
    out, lo = [], SPEED_RANGE_HZ[0]
    for a, b in HELD_OUT_BANDS_HZ:
        out.append((lo, a))
        lo = b
    out.append((lo, SPEED_RANGE_HZ[1]))
    return out


def draw_speed(rng: np.random.Generator, held_out: bool) -> float:
    """Uniform shaft speed over the held-out bands, or over the rest of 10-60 Hz."""
    intervals = list(HELD_OUT_BANDS_HZ) if held_out else _train_intervals()
    widths = np.array([b - a for a, b in intervals])
    u = rng.uniform(0.0, widths.sum())
    k = int(np.searchsorted(np.cumsum(widths), u, side="right"))
    k = min(k, len(intervals) - 1)
    return float(intervals[k][0] + u - (np.cumsum(widths)[k] - widths[k]))


def in_held_out_band(speed_hz: float) -> bool:
    return any(a <= speed_hz <= b for a, b in HELD_OUT_BANDS_HZ)


def _spec(split: str) -> SplitSpec:
    if split not in SPLITS:
        raise DataError(f"unknown demo split {split!r}; choose one of {', '.join(SPLITS)}")
    return SPLITS[split]


def generate_split(split: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate and tokenise a split: (token ids int64 [n, 66], labels int64 [n], speeds float64 [n])."""
    spec = _spec(split)
    n = spec.default_n if n is None else n
    if n <= 0:
        raise DataError(f"a split needs at least one window, got n={n}")
    tokens, labels, speeds = [], np.arange(n, dtype=np.int64) % len(class_names()), np.empty(n)
    for i in range(n):
        rng = np.random.default_rng([SIM_VERSION, spec.seed, i])
        kind, severity = class_fault(int(labels[i]))
        speed = draw_speed(rng, spec.held_out_speeds)
        snr = rng.uniform(*SNR_RANGE_DB)
        params = draw_params(kind, severity, speed, snr, rng)
        tokens.append(tokenise_window(simulate(params, rng), speed))
        speeds[i] = speed
    return np.stack(tokens), labels, speeds


def split_cache_path(split: str, n: int) -> Path:
    return cache_root() / "data" / f"bearing-v{SIM_VERSION}-{split}-{n}.npz"


def load_split_arrays(split: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and labels of a split, generated once and cached as .npz (no pickle)."""
    spec = _spec(split)
    n = spec.default_n if n is None else n
    path = split_cache_path(split, n)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("version") == SIM_VERSION and z["input_ids"].shape[0] == n:
                    return z["input_ids"], z["labels"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable demo data cache %s: %s", path, exc)
    log.info("generating demo split %s (%d windows)", split, n)
    ids, labels, _ = generate_split(split, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    meta = json.dumps({"version": SIM_VERSION, "split": split, "n": n})
    np.savez(tmp, input_ids=ids, labels=labels, meta=np.array(meta))
    tmp.replace(path)
    return ids, labels
