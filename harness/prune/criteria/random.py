"""Seeded noise: a floor every real criterion must beat."""

from __future__ import annotations

import torch

from harness.prune.criteria.base import Criterion, ScoreInput


def _gen(x: ScoreInput) -> torch.Generator:
    return torch.Generator().manual_seed(x.seed)


def _layers(x: ScoreInput) -> torch.Tensor:
    return torch.rand(x.adapter.num_layers(), generator=_gen(x))


def _heads(x: ScoreInput) -> list[torch.Tensor]:
    g = _gen(x)
    return [
        torch.rand(x.adapter.attention_shape(i).num_heads, generator=g) for i in range(x.adapter.num_layers())
    ]


def _channels(x: ScoreInput) -> list[torch.Tensor]:
    g = _gen(x)
    return [torch.rand(x.adapter.num_channels(i), generator=g) for i in range(x.adapter.num_layers())]


CRITERION = Criterion(
    "random", {"layer": _layers, "head": _heads, "channel": _channels}, baseline=True, summary=__doc__ or ""
)
