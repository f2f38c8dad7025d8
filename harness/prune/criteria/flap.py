"""FLAP fluctuation: variance of an input column times the squared norm of its output weights."""

from __future__ import annotations

import torch

from harness.prune.criteria.base import Criterion, ScoreInput
from harness.prune.criteria.calibration import per_head


def _heads(x: ScoreInput) -> list[torch.Tensor]:
    ad, out = x.adapter, []
    for i in range(ad.num_layers()):
        w = ad.out_proj_weight_by_input(ad.attn_out_proj(i)).detach().float()
        out.append(per_head(x.stats.attn[i].variance() * (w * w).sum(-1), ad.attention_shape(i).head_dim))
    return out


def _channels(x: ScoreInput) -> list[torch.Tensor]:
    ad, out = x.adapter, []
    for i in range(ad.num_layers()):
        w = ad.out_proj_weight_by_input(ad.ffn_down_proj(i)).detach().float()
        out.append(x.stats.ffn[i].variance() * (w * w).sum(-1))
    return out


CRITERION = Criterion("flap", {"head": _heads, "channel": _channels}, summary=__doc__ or "")
