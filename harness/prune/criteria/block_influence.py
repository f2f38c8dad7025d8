"""Block influence (ShortGPT): 1 - cosine of a block's input and output hidden states."""

from __future__ import annotations

import torch

from harness.prune.criteria.base import Criterion, ScoreInput


def _layers(x: ScoreInput) -> torch.Tensor:
    return torch.tensor(x.stats.block_influence)


CRITERION = Criterion("block_influence", {"layer": _layers}, default_for=("layer",), summary=__doc__ or "")
