"""What a criterion is: a name, the granularities it scores, the statistics it needs, a score function.

Each criterion lives in its own module beside this one and exposes `CRITERION`; the package finds
them all, so adding a criterion is adding one file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from harness.models.adapters import ArchitectureAdapter
from harness.prune.calib import Batch
from harness.prune.criteria.calibration import CalibStats


@dataclass(frozen=True)
class ScoreInput:
    """What a score function may read: the model's adapter, the calibration pass, the batches."""

    adapter: ArchitectureAdapter
    stats: CalibStats
    batches: list[Batch]
    seed: int = 0


# layer: one tensor [layers]; head: per layer [query heads]; channel: per layer [channels]
ScoreFn = Callable[[ScoreInput], torch.Tensor | list[torch.Tensor]]


@dataclass(frozen=True)
class Criterion:
    name: str
    scores: dict[str, ScoreFn]  # granularity -> score function (higher = more important)
    needs_gradients: bool = False  # the calibration pass runs backward too
    needs_head_contrib: bool = False  # the calibration pass records each head's output norm
    default_for: tuple[str, ...] = ()  # granularities where it is the default criterion
    baseline: bool = False  # a floor for comparisons (random), not searched by the tuner
    summary: str = field(default="", compare=False)

    @property
    def granularities(self) -> tuple[str, ...]:
        return tuple(self.scores)
