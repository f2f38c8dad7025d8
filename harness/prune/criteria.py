"""Importance criteria per granularity, computed on calibration batches (higher = more important).

Layers: block influence (1 - cosine of a block's input and output hidden states, ShortGPT) and the
loss increase when the block is skipped. Attention units and FFN channels are scored from
statistics of the *input* of the output projection (o_proj / c_proj, down_proj / mlp.c_proj), where
each head's output and each channel's activation are separate columns:
- taylor: sum |activation x gradient| (first-order Taylor, LLM-Pruner style);
- output_norm (heads): norm of the head's contribution to the block output;
- flap: fluctuation, variance of the activation times the squared norm of its output weights (FLAP);
- wanda (channels): ||X_j|| * sum_i |W_ij| (Wanda on the down projection);
- random: seeded noise, a floor for comparisons.
Head scores are per query head; KV-group scores sum the group's query heads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.models.adapters import ArchitectureAdapter
from harness.prune.calib import Batch, batch_loss, mean_batch_loss

log = logging.getLogger(__name__)


@dataclass
class _ProjStats:
    """Per-input-feature sums over calibration tokens at one output projection."""

    n: int = 0
    s1: torch.Tensor | None = None  # sum x
    s2: torch.Tensor | None = None  # sum x^2
    taylor: torch.Tensor | None = None  # sum |x * dL/dx|
    contrib: torch.Tensor | None = None  # per head: sum over tokens of ||x_h W_h||

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1, x.shape[-1])
        self.n += x.shape[0]
        self.s1 = x.sum(0) if self.s1 is None else self.s1 + x.sum(0)
        self.s2 = (x * x).sum(0) if self.s2 is None else self.s2 + (x * x).sum(0)

    def add_taylor(self, x: torch.Tensor, g: torch.Tensor) -> None:
        t = (x.detach().float() * g.detach().float()).abs().reshape(-1, x.shape[-1]).sum(0)
        self.taylor = t if self.taylor is None else self.taylor + t

    def variance(self) -> torch.Tensor:
        mean = self.s1 / self.n
        return (self.s2 / self.n - mean * mean).clamp_min(0)


@dataclass
class CalibStats:
    """What one calibration pass measured, per current layer."""

    attn: list[_ProjStats] = field(default_factory=list)
    ffn: list[_ProjStats] = field(default_factory=list)
    block_influence: list[float] = field(default_factory=list)
    base_loss: float = 0.0


def collect_stats(
    adapter: ArchitectureAdapter, batches: list[Batch], *, gradients: bool, head_contrib: bool
) -> CalibStats:
    """One pass over the batches with hooks; a backward pass too when a Taylor criterion needs it."""
    model = adapter.model
    n = adapter.num_layers()
    stats = CalibStats(attn=[_ProjStats() for _ in range(n)], ffn=[_ProjStats() for _ in range(n)])
    bi_sum = [0.0] * n
    bi_count = [0] * n
    handles = []

    def proj_hook(st: _ProjStats, layer: int, attn: bool) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            st.add(x)
            if attn and head_contrib:
                hd = adapter.attention_shape(layer).head_dim
                w = adapter.out_proj_weight_by_input(module).detach().float()
                xs = x.detach().float().reshape(-1, x.shape[-1] // hd, hd)
                contrib = torch.einsum("thd,hdo->tho", xs, w.reshape(-1, hd, w.shape[-1])).norm(dim=-1).sum(0)
                st.contrib = contrib if st.contrib is None else st.contrib + contrib
            if gradients and x.requires_grad:
                # the hook holds a detached alias: capturing `x` itself makes a tensor -> hook -> tensor
                # cycle through autograd that Python's GC cannot free (about 260 MB leaked per stage)
                x.register_hook(lambda g, xd=x.detach(): st.add_taylor(xd, g))

        return hook

    def block_hook(layer: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = out[0] if isinstance(out, tuple) else out
            cos = torch.nn.functional.cosine_similarity(h_in.detach().float(), h_out.detach().float(), dim=-1)
            bi_sum[layer] += float((1 - cos).sum())
            bi_count[layer] += cos.numel()

        return hook

    for i in range(n):
        handles.append(adapter.attn_out_proj(i).register_forward_pre_hook(proj_hook(stats.attn[i], i, True)))
        handles.append(adapter.ffn_down_proj(i).register_forward_pre_hook(proj_hook(stats.ffn[i], i, False)))
        handles.append(adapter.layers()[i].register_forward_hook(block_hook(i), with_kwargs=True))
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for b in batches:
            if gradients:
                model.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    loss = batch_loss(model, b)
                    loss.backward()
            else:
                with torch.no_grad():
                    loss = batch_loss(model, b)
            total += float(loss.detach()) * len(b.labels)
            count += len(b.labels)
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    stats.block_influence = [s / max(1, c) for s, c in zip(bi_sum, bi_count, strict=True)]
    stats.base_loss = total / max(1, count)
    return stats


def _per_head(values: torch.Tensor, head_dim: int) -> torch.Tensor:
    return values.reshape(-1, head_dim).sum(-1)


def head_scores(
    adapter: ArchitectureAdapter,
    stats: CalibStats,
    criterion: str,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Per layer, one score per current query head."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(adapter.num_layers()):
        shape = adapter.attention_shape(i)
        st = stats.attn[i]
        if criterion == "taylor":
            s = _per_head(st.taylor, shape.head_dim)
        elif criterion == "output_norm":
            s = st.contrib
        elif criterion == "flap":
            w = adapter.out_proj_weight_by_input(adapter.attn_out_proj(i)).detach().float()
            s = _per_head(st.variance() * (w * w).sum(-1), shape.head_dim)
        elif criterion == "random":
            s = torch.rand(shape.num_heads, generator=g)
        else:
            raise ValueError(f"unknown head criterion {criterion}")
        out.append(s.clone())
    return out


def channel_scores(
    adapter: ArchitectureAdapter, stats: CalibStats, criterion: str, seed: int = 0
) -> list[torch.Tensor]:
    """Per layer, one score per current FFN channel."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(adapter.num_layers()):
        st = stats.ffn[i]
        w = adapter.out_proj_weight_by_input(adapter.ffn_down_proj(i)).detach().float()
        if criterion == "wanda":
            s = st.s2.sqrt() * w.abs().sum(-1)
        elif criterion == "flap":
            s = st.variance() * (w * w).sum(-1)
        elif criterion == "taylor":
            s = st.taylor
        elif criterion == "random":
            s = torch.rand(adapter.num_channels(i), generator=g)
        else:
            raise ValueError(f"unknown channel criterion {criterion}")
        out.append(s.clone())
    return out


def skip_loss_scores(adapter: ArchitectureAdapter, batches: list[Batch], base_loss: float) -> torch.Tensor:
    """Loss increase when each block alone is made the identity (weights restored afterwards)."""
    scores = []
    for i in range(adapter.num_layers()):
        mods = [adapter.attn_out_proj(i), adapter.ffn_down_proj(i)]
        saved = [
            (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone()) for m in mods
        ]
        adapter.mask_layer(i)
        try:
            scores.append(mean_batch_loss(adapter.model, batches) - base_loss)
        finally:
            with torch.no_grad():
                for m, (w, b) in zip(mods, saved, strict=True):
                    m.weight.copy_(w)
                    if b is not None:
                        m.bias.copy_(b)
    return torch.tensor(scores)


def layer_scores(
    adapter: ArchitectureAdapter, stats: CalibStats, criterion: str, batches: list[Batch], seed: int = 0
) -> torch.Tensor:
    if criterion == "block_influence":
        return torch.tensor(stats.block_influence)
    if criterion == "skip_loss":
        return skip_loss_scores(adapter, batches, stats.base_loss)
    if criterion == "random":
        return torch.rand(adapter.num_layers(), generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"unknown layer criterion {criterion}")


def group_scores(adapter: ArchitectureAdapter, per_head: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, [num_kv_groups, heads_per_group] (MHA: [heads, 1])."""
    return [
        s.reshape(adapter.attention_shape(i).num_kv_groups, adapter.attention_shape(i).heads_per_group)
        for i, s in enumerate(per_head)
    ]
