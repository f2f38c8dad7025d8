"""What a trial (and the study's dense baseline) measured, typed; Optuna stores it as user attrs.

Everything that reads a trial's results (the study, the CLI table, the deployment report, metrics)
goes through `TrialResult.from_user_attrs`, so a renamed or missing field is one validation error,
not a KeyError in a template.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from device_agents.records import MeasurementRecord


class Measured(BaseModel):
    """A model's accuracy plus its board measurement, in the units the objectives use."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    accuracy: float
    latency_ms: float
    latency_p90_ms: float
    peak_rss_mb: float
    energy_mj: float = 0.0  # 0 when the board gave no energy figure at all
    energy_source: str = "none"
    board: str
    bundle: str
    params: int | None = None
    kernels: str = ""  # how the measured bundle's kernels were made (harness.compile.tune.describe_tuning)

    @staticmethod
    def fields_from(record: MeasurementRecord) -> dict[str, Any]:
        """The measurement part, from a record (energy through its one accessor)."""
        return {
            "latency_ms": record.summary.median_ns / 1e6,
            "latency_p90_ms": record.summary.p90_ns / 1e6,
            "peak_rss_mb": record.peak_rss_kb / 1024.0,
            "energy_mj": 1000.0 * (record.energy.per_inference_j or 0.0),
            "energy_source": record.energy.source,
            "board": record.board,
            "bundle": record.artifact,
        }

    def to_user_attrs(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_user_attrs(cls, attrs: dict[str, Any]) -> Any:
        return cls.model_validate(attrs)


class DenseResult(Measured):
    """The unpruned model: the baseline every trial is compared with."""


class TrialResult(Measured):
    """One finished trial."""

    lease_wait_s: float = 0.0
    pruned_dir: str | None = None
    compression: float = 1.0
    constraints: list[float] = Field(default_factory=list)  # SIA, memory, latency (<= 0 is feasible)
    step_seconds: dict[str, float] = Field(default_factory=dict)
    cache: dict[str, int] = Field(default_factory=dict)  # this trial's prune/compile cache hits, misses
