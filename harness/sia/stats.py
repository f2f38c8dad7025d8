"""Rank statistics with bootstrap confidence intervals, so a verdict is not a coin flip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% bootstrap interval (nan where it is undefined)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if np.isnan(v) else round(float(v), 4)) for k, v in vars(self).items()}

    def __str__(self) -> str:
        if np.isnan(self.value):
            return "n/a"
        return f"{self.value:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.kendalltau(x, y).statistic)


def _bootstrap(fn, arrays: tuple[np.ndarray, ...], n_boot: int, seed: int) -> Estimate:  # noqa: ANN001
    value = fn(*arrays)
    n = len(arrays[0])
    if np.isnan(value) or n < 3:
        return Estimate(value, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = fn(*(a[idx] for a in arrays))
        if not np.isnan(v):
            draws.append(v)
    if not draws:
        return Estimate(value, float("nan"), float("nan"))
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(value, float(low), float(high))


def bootstrap_ci(fn, arrays: tuple[np.ndarray, ...], n_boot: int = 1000, seed: int = 0) -> Estimate:  # noqa: ANN001
    """Any statistic `fn(*arrays)` with its 95% bootstrap interval (resampling rows together)."""
    return _bootstrap(fn, tuple(np.asarray(a, float) for a in arrays), n_boot, seed)


def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Estimate:
    return _bootstrap(_spearman, (np.asarray(x, float), np.asarray(y, float)), n_boot, seed)


def kendall_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Estimate:
    return _bootstrap(_kendall, (np.asarray(x, float), np.asarray(y, float)), n_boot, seed)


def median_ci(x: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Estimate:
    x = np.asarray(x, float)
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    return _bootstrap(lambda a: float(np.median(a)), (x,), n_boot, seed)
