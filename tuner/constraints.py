"""Constraint values for a schedule and a measurement: SIA horizon, memory budget, latency SLO.

Every value follows Optuna's sign convention (> 0 violated), scaled so 0.1 means "10% over".
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.prune.schedule import Stage

CONSTRAINT_NAMES = ("sia_horizon", "memory_budget", "latency_slo")


@dataclass(frozen=True)
class Limits:
    memory_budget_mb: float
    latency_slo_ms: float | None = None


def stage_sia_violation(stage: Stage, horizons: dict[str, float]) -> tuple[float, str | None]:
    """How far a stage removes beyond its granularity's predictable horizon (max over its targets)."""
    worst, why = -1.0, None
    for t in stage.targets:
        removed = 1.0 - t.ratio
        horizon = horizons.get(t.granularity)
        if horizon is None:
            continue
        v = removed - horizon
        if v > worst:
            worst = v
            if v > 1e-9:
                why = f"{t.granularity}: removes {removed:.0%} but SIA's predictable horizon is {horizon:.0%}"
    return worst, why


def measured_violations(latency_ms: float, peak_rss_mb: float, limits: Limits) -> tuple[float, float]:
    memory = peak_rss_mb / limits.memory_budget_mb - 1.0
    latency = -1.0 if limits.latency_slo_ms is None else latency_ms / limits.latency_slo_ms - 1.0
    return memory, latency
