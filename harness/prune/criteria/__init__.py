"""Importance criteria per granularity (higher = more important), found as plug-ins.

Every module of this package that defines `CRITERION` (a `base.Criterion`) is one criterion; the
lists below — which criteria score which granularity, the defaults, which need gradients — are
derived from them. Head scores are per query head; `group_scores` sums them per KV group.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from harness.models.adapters import ArchitectureAdapter
from harness.prune.calib import Batch
from harness.prune.criteria.base import Criterion, ScoreInput
from harness.prune.criteria.calibration import CalibStats, collect_stats

GRANULARITIES = ("layer", "head", "channel")
_NOT_CRITERIA = {"base", "calibration"}


def _discover() -> dict[str, Criterion]:
    found: dict[str, Criterion] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _NOT_CRITERIA or info.name.startswith("_"):
            continue
        crit = getattr(importlib.import_module(f"{__name__}.{info.name}"), "CRITERION", None)
        if isinstance(crit, Criterion):
            found[crit.name] = crit
    return found


REGISTRY: dict[str, Criterion] = _discover()


def _order(g: str) -> tuple[str, ...]:
    """Default first, then by name, baselines last: a stable order for choice lists."""
    names = [c for c in REGISTRY.values() if g in c.scores]
    names.sort(key=lambda c: (g not in c.default_for, c.baseline, c.name))
    return tuple(c.name for c in names)


CRITERIA: dict[str, tuple[str, ...]] = {g: _order(g) for g in GRANULARITIES}
DEFAULT_CRITERION: dict[str, str] = {g: CRITERIA[g][0] for g in GRANULARITIES}
SEARCHABLE: dict[str, tuple[str, ...]] = {
    g: tuple(n for n in CRITERIA[g] if not REGISTRY[n].baseline) for g in GRANULARITIES
}


def get_criterion(name: str, granularity: str) -> Criterion:
    crit = REGISTRY.get(name)
    if crit is None or granularity not in crit.scores:
        raise ValueError(f"unknown {granularity} criterion {name}")
    return crit


def needs(names: list[str]) -> tuple[bool, bool]:
    """(gradients, head contributions): what one calibration pass must collect for these criteria."""
    crits = [REGISTRY[n] for n in names if n in REGISTRY]
    return any(c.needs_gradients for c in crits), any(c.needs_head_contrib for c in crits)


def _score(granularity: str, criterion: str, x: ScoreInput) -> torch.Tensor | list[torch.Tensor]:
    return get_criterion(criterion, granularity).scores[granularity](x)


def layer_scores(
    adapter: ArchitectureAdapter, stats: CalibStats, criterion: str, batches: list[Batch], seed: int = 0
) -> torch.Tensor:
    """One score per current layer."""
    out = _score("layer", criterion, ScoreInput(adapter, stats, batches, seed))
    assert isinstance(out, torch.Tensor)
    return out


def head_scores(
    adapter: ArchitectureAdapter, stats: CalibStats, criterion: str, seed: int = 0
) -> list[torch.Tensor]:
    """Per layer, one score per current query head."""
    return [s.clone() for s in _score("head", criterion, ScoreInput(adapter, stats, [], seed))]


def channel_scores(
    adapter: ArchitectureAdapter, stats: CalibStats, criterion: str, seed: int = 0
) -> list[torch.Tensor]:
    """Per layer, one score per current FFN channel."""
    return [s.clone() for s in _score("channel", criterion, ScoreInput(adapter, stats, [], seed))]


def group_scores(adapter: ArchitectureAdapter, per_head: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, [num_kv_groups, heads_per_group] (MHA: [heads, 1])."""
    return [
        s.reshape(adapter.attention_shape(i).num_kv_groups, adapter.attention_shape(i).heads_per_group)
        for i, s in enumerate(per_head)
    ]


__all__ = [
    "CRITERIA",
    "DEFAULT_CRITERION",
    "REGISTRY",
    "SEARCHABLE",
    "CalibStats",
    "Criterion",
    "ScoreInput",
    "channel_scores",
    "collect_stats",
    "get_criterion",
    "group_scores",
    "head_scores",
    "layer_scores",
    "needs",
]
