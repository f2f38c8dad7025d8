"""Turn scores into kept indices (per layer or global) and apply one stage's removals."""

from __future__ import annotations

import torch

from harness.models.adapters import ArchitectureAdapter
from harness.prune.schedule import kept_count


def top_k(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k highest scores, sorted ascending (ties broken by lower index)."""
    k = max(1, min(k, len(scores)))
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def keep_per_layer(scores: list[torch.Tensor], ratio: float) -> list[list[int]]:
    return [top_k(s, kept_count(ratio, len(s))) for s in scores]


def keep_global(scores: list[torch.Tensor], ratio: float) -> list[list[int]]:
    """Rank all units of all layers together; every layer keeps at least its best unit."""
    total = sum(len(s) for s in scores)
    k = max(len(scores), kept_count(ratio, total))
    keep: list[set[int]] = [{top_k(s, 1)[0]} for s in scores]
    pool = sorted(
        (
            (float(s[j]), -li, -j, li, j)
            for li, s in enumerate(scores)
            for j in range(len(s))
            if j not in keep[li]
        ),
        reverse=True,
    )
    for _, _, _, li, j in pool[: k - len(scores)]:
        keep[li].add(j)
    return [sorted(x) for x in keep]


def select(scores: list[torch.Tensor], ratio: float, scope: str) -> list[list[int]]:
    return keep_global(scores, ratio) if scope == "global" else keep_per_layer(scores, ratio)


def apply_attention(
    adapter: ArchitectureAdapter, grouped: list[torch.Tensor], ratio: float, scope: str, unit: str
) -> None:
    """Remove attention units. `grouped[i]` is [kv_groups, heads_per_group] per layer.

    MHA: heads. GQA with `kv_group`: whole groups (score = sum of the group's query heads).
    GQA with `query_head`: the same number of query heads in every group of a layer (per layer).
    """
    if adapter.gqa and unit == "query_head":
        for i, g in enumerate(grouped):
            k = kept_count(ratio, g.shape[1])
            adapter.remove_query_heads(i, [top_k(row, k) for row in g])
        return
    keep = select([g.sum(-1) for g in grouped], ratio, scope)
    for i, kept in enumerate(keep):
        adapter.remove_heads(i, kept)


def apply_channels(
    adapter: ArchitectureAdapter, scores: list[torch.Tensor], ratio: float, scope: str
) -> None:
    for i, kept in enumerate(select(scores, ratio, scope)):
        adapter.remove_channels(i, kept)


def apply_layers(adapter: ArchitectureAdapter, scores: torch.Tensor, ratio: float) -> None:
    adapter.remove_layers(top_k(scores, kept_count(ratio, len(scores))))
