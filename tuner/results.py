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
    """A model's quality (a classifier's accuracy, a causal LM's perplexity) plus its board
    measurement, in the units the objectives use; causal LMs add their greedy-generation figures."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    accuracy: float | None = None  # classifiers: on the validation split
    perplexity: float | None = None  # causal LMs: on the evaluation text
    ttft_ms: float | None = None  # causal LMs: time to first token (median)
    decode_tokens_per_s: float | None = None  # causal LMs: at the median per-token decode latency
    decode_p90_ms: float | None = None
    generated_ids: list[int] = Field(default_factory=list)  # causal LMs: the greedy sample
    latency_ms: float
    latency_p90_ms: float
    peak_rss_mb: float
    energy_mj: float = 0.0  # 0 when the board gave no energy figure at all
    energy_source: str = "none"
    board: str
    bundle: str
    params: int | None = None
    kernels: str = ""  # how the measured bundle's kernels were made (harness.compile.tune.describe_tuning)

    @property
    def quality(self) -> tuple[str, float]:
        """("accuracy", a) for a classifier, ("perplexity", p) for a causal LM."""
        if self.perplexity is not None:
            return "perplexity", self.perplexity
        return "accuracy", float(self.accuracy if self.accuracy is not None else float("nan"))

    @staticmethod
    def fields_from(record: MeasurementRecord) -> dict[str, Any]:
        """The measurement part, from a record (energy through its one accessor)."""
        g = record.generation
        generation = {} if g is None else {
            "ttft_ms": g.ttft_median_ns / 1e6,
            "decode_tokens_per_s": g.decode_tokens_per_s,
            "decode_p90_ms": g.decode.p90_ns / 1e6 if g.decode else None,
            "generated_ids": g.generated_ids,
        }  # fmt: skip
        return {
            **generation,
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


def quality_score(attrs: dict[str, Any]) -> float:
    """Higher is better: accuracy, or minus perplexity (causal LMs); for picking a best trial."""
    if attrs.get("perplexity") is not None:
        return -float(attrs["perplexity"])
    return float(attrs.get("accuracy") or 0.0)


def quality_text(attrs: dict[str, Any]) -> str:
    """'accuracy 0.953' or 'perplexity 22.41, decode 14.2 tok/s, first token 81 ms'."""
    if attrs.get("perplexity") is None:
        return f"accuracy {float(attrs.get('accuracy') or 0.0):.3f}"
    tps, ttft = attrs.get("decode_tokens_per_s"), attrs.get("ttft_ms")
    speed = f", decode {tps:.1f} tok/s" if tps is not None else ""
    first = f", first token {ttft:.1f} ms" if ttft is not None else ""
    return f"perplexity {float(attrs['perplexity']):.2f}{speed}{first}"


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
