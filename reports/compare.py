"""Is a run slower, bigger or hungrier than its baseline? A statistical test AND a practical threshold.

Latency: one-sided Mann-Whitney U on all samples (current stochastically greater than baseline)
with p < alpha, and the median slower by more than `latency_pct`. Both must hold, so a huge sample
cannot flag a 0.1% change and a single slow outlier cannot flag anything. Memory and energy are one
number per run: flagged when higher by more than their percentage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from scipy.stats import mannwhitneyu

from reports.suite import Thresholds


@dataclass
class Comparison:
    latency_change_pct: float
    latency_p: float
    memory_change_pct: float | None
    energy_change_pct: float | None
    regressions: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)


def _pct(cur: float, base: float) -> float:
    return (cur / base - 1.0) * 100.0 if base else 0.0


def compare(
    current: list[int],
    baseline: list[int],
    th: Thresholds,
    *,
    memory: tuple[float, float] | None = None,
    energy: tuple[float, float] | None = None,
) -> Comparison:
    """Compare latency samples (and optional (current, baseline) memory / energy) with a baseline."""
    p = float(mannwhitneyu(current, baseline, alternative="greater").pvalue)
    change = _pct(median(current), median(baseline))
    out = Comparison(
        latency_change_pct=change,
        latency_p=p,
        memory_change_pct=_pct(*memory) if memory else None,
        energy_change_pct=_pct(*energy) if energy else None,
    )
    if p < th.alpha and change > th.latency_pct:
        out.regressions.append(f"latency median +{change:.1f}% (Mann-Whitney p={p:.2g})")
    if out.memory_change_pct is not None and out.memory_change_pct > th.memory_pct:
        out.regressions.append(f"peak memory +{out.memory_change_pct:.1f}%")
    if out.energy_change_pct is not None and out.energy_change_pct > th.energy_pct:
        out.regressions.append(f"energy per inference +{out.energy_change_pct:.1f}%")
    return out
