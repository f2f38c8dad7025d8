"""Wanda on the down projection: ||X_j|| * sum_i |W_ij| per FFN channel."""

from __future__ import annotations

import torch

from harness.prune.criteria.base import Criterion, ScoreInput


def _channels(x: ScoreInput) -> list[torch.Tensor]:
    ad, out = x.adapter, []
    for i in range(ad.num_layers()):
        w = ad.out_proj_weight_by_input(ad.ffn_down_proj(i)).detach().float()
        out.append(x.stats.ffn[i].s2.sqrt() * w.abs().sum(-1))
    return out


CRITERION = Criterion("wanda", {"channel": _channels}, default_for=("channel",), summary=__doc__ or "")
