"""The one calibration pass every criterion scores from: statistics of the *input* of each output
projection (o_proj / c_proj, down_proj / mlp.c_proj), where each head's output and each channel's
activation are separate columns, plus block influence per layer. Gradients and per-head output
contributions are collected only when a criterion needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.models.adapters import ArchitectureAdapter
from harness.prune.calib import Batch, batch_loss

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


def per_head(values: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Sum per-column values over each head's columns."""
    return values.reshape(-1, head_dim).sum(-1)
