"""Output norm: the norm of each head's contribution to the block output, summed over tokens."""

from __future__ import annotations

import torch

from harness.prune.criteria.base import Criterion, ScoreInput


def _heads(x: ScoreInput) -> list[torch.Tensor]:
    return [x.stats.attn[i].contrib for i in range(x.adapter.num_layers())]


CRITERION = Criterion("output_norm", {"head": _heads}, needs_head_contrib=True, summary=__doc__ or "")
