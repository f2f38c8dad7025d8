"""Objectives and constraints of a tuning study, read from a trial's persisted user attributes.

Objectives are measured, never estimated: accuracy on the validation split, latency and peak
memory from the board's measurement record, energy only when asked (a modelled energy figure is
reported, not optimised, unless the user says so). Constraints follow Optuna's convention: a value
> 0 is a violation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from harness.errors import ConfigError

DIRECTIONS = {
    "accuracy": "maximize",
    "latency": "minimize",
    "memory": "minimize",
    "energy": "minimize",
    "perplexity": "minimize",  # causal LMs
    "decode": "maximize",  # causal LMs: decode tokens/s
    "ttft": "minimize",  # causal LMs: time to first token
}
ATTR = {
    "accuracy": "accuracy",
    "latency": "latency_ms",
    "memory": "peak_rss_mb",
    "energy": "energy_mj",
    "perplexity": "perplexity",
    "decode": "decode_tokens_per_s",
    "ttft": "ttft_ms",
}
CAUSAL_ONLY = ("perplexity", "decode", "ttft")
CLASSIFIER_PARETO = ("accuracy", "latency", "memory")
CAUSAL_PARETO = ("perplexity", "decode", "ttft", "memory")


@dataclass(frozen=True)
class ObjectiveSpec:
    names: tuple[str, ...] = ("accuracy", "latency", "memory")
    latency_stat: str = "p50"  # p50 | p90

    def __post_init__(self) -> None:
        bad = [n for n in self.names if n not in DIRECTIONS]
        if bad or not self.names:
            raise ConfigError(
                f"unknown objective {bad[0] if bad else '(none)'}; use: {', '.join(DIRECTIONS)}"
            )
        if self.latency_stat not in ("p50", "p90"):
            raise ConfigError(f"latency statistic must be p50 or p90, got {self.latency_stat!r}")

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[n] for n in self.names]

    def for_task(self, task: str) -> ObjectiveSpec:
        """The same choice for the model's task: a causal LM's pareto is perplexity, decode
        tokens/s, time to first token and memory; objectives of the other task are refused."""
        causal = task == "causal-lm"
        names = self.names
        if causal and names[:3] == CLASSIFIER_PARETO:
            names = CAUSAL_PARETO + names[3:]
        wrong = [n for n in names if n == "accuracy"] if causal else [n for n in names if n in CAUSAL_ONLY]
        if wrong:
            what = "a causal LM has no accuracy; use perplexity" if causal else "they are for causal LMs"
            raise ConfigError(f"objective {wrong[0]} does not fit this {task} model: {what}")
        return ObjectiveSpec(names=names, latency_stat=self.latency_stat)

    def values(self, attrs: dict) -> list[float]:
        return [float(attrs[ATTR[n]]) for n in self.names]


def parse_objectives(objective: str, energy: bool, latency_stat: str) -> ObjectiveSpec:
    """`pareto` (accuracy, latency, memory [+ energy]) or one named objective."""
    if objective == "pareto":
        names = ("accuracy", "latency", "memory") + (("energy",) if energy else ())
    else:
        names = (objective,)
    return ObjectiveSpec(names=names, latency_stat=latency_stat)


CONSTRAINTS = ("sia", "memory", "latency")


def record_constraints(trial: optuna.Trial, violations: Sequence[float]) -> None:
    """SIA horizon, memory budget and latency SLO violations (> 0 = violated), set on the trial where
    every sampler reads them (Optuna 5's `Trial.set_constraint`) and kept as one user attr for reports."""
    trial.set_user_attr("constraints", [float(v) for v in violations])
    for name, value in zip(CONSTRAINTS, violations, strict=True):
        trial.set_constraint(name, value)
