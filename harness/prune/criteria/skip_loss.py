"""Skip loss: the calibration-loss increase when a block alone is made the identity."""

from __future__ import annotations

import torch

from harness.prune.calib import mean_batch_loss
from harness.prune.criteria.base import Criterion, ScoreInput
from harness.prune.weights import saved_weights


def _layers(x: ScoreInput) -> torch.Tensor:
    ad = x.adapter
    scores = []
    for i in range(ad.num_layers()):
        with saved_weights([ad.attn_out_proj(i), ad.ffn_down_proj(i)]):
            ad.mask_layer(i)
            scores.append(mean_batch_loss(ad.model, x.batches) - x.stats.base_loss)
    return torch.tensor(scores)


CRITERION = Criterion("skip_loss", {"layer": _layers}, summary=__doc__ or "")
