"""First-order Taylor (LLM-Pruner style): sum over calibration tokens of |activation x gradient|."""

from __future__ import annotations

import torch

from harness.prune.criteria.base import Criterion, ScoreInput
from harness.prune.criteria.calibration import per_head


def _heads(x: ScoreInput) -> list[torch.Tensor]:
    ad = x.adapter
    return [per_head(x.stats.attn[i].taylor, ad.attention_shape(i).head_dim) for i in range(ad.num_layers())]


def _channels(x: ScoreInput) -> list[torch.Tensor]:
    return [x.stats.ffn[i].taylor for i in range(x.adapter.num_layers())]


CRITERION = Criterion(
    "taylor", {"head": _heads, "channel": _channels}, needs_gradients=True, default_for=("head",),
    summary=__doc__ or "",
)  # fmt: skip
