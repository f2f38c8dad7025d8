"""Causal LMs for the compile path: prefill and decode as one step function with explicit KV caches.

`CachedStep` runs T new tokens at positions `pos .. pos+T-1` against per-layer K and V cache tensors of
shape [1, kv_heads_of_that_layer, max_len, head_dim] and returns the logits and the updated caches. The
cache write is a `scatter` along the sequence axis (TVM's importer rejects the `index_put` that HF's
static cache lowers to), attention runs over all `max_len` slots with a mask `key <= query position`
(and `key > query position - window` in a sliding-window layer), so a prompt right-padded to a prefill
bucket leaves only masked junk that later decode steps overwrite. Prefill is the step with T = the
bucket length at pos 0; decode is T = 1. Each layer reads its own head counts off its weights, so
pruned models with removed layers and uneven heads/widths per layer work.

What differs between families (embeddings and positions, how q/k/v are projected and normed, the
MLP, the final norm) is the family adapter's `step_embed` / `step_layer` / `step_logits`
(harness.models.adapters); this module owns only the caches and the attention over them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harness.errors import CompileError, HiltError
from harness.models.adapters import StepContext, get_adapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheLayout:
    """Shapes of the caches a step function takes: per layer (kv_heads, head_dim), and max_len."""

    max_len: int
    layers: tuple[tuple[int, int], ...]

    def empty(self) -> list[torch.Tensor]:
        """Zeroed K and V caches, in the order the step takes them (K0, V0, K1, V1, ...)."""
        return [torch.zeros(1, kv, self.max_len, hd) for kv, hd in self.layers for _ in ("k", "v")]


class CachedStep(nn.Module):
    """(input_ids [1, T], pos [1] int64, K0, V0, K1, V1, ...) -> (logits [1, T, vocab], K0', V0', ...)."""

    def __init__(self, model: nn.Module, max_len: int) -> None:
        super().__init__()
        try:
            adapter = get_adapter(model)
        except HiltError as exc:
            raise CompileError(f"causal-LM compile: {exc}") from exc
        max_pos = getattr(model.config, "max_position_embeddings", None)
        if max_len < 2 or (max_pos is not None and max_len > int(max_pos)):
            raise CompileError(f"cache length {max_len} must be in 2..{max_pos} (the model's positions)")
        try:
            adapter.check_step(max_len)
        except HiltError as exc:
            raise CompileError(str(exc)) from exc
        self.model = model.eval()
        self.adapter = adapter
        self.max_len = int(max_len)
        shapes = [adapter.attention_shape(i) for i in range(adapter.num_layers())]
        self.layout = CacheLayout(self.max_len, tuple((s.num_kv_groups, s.head_dim) for s in shapes))

    def _attend(
        self, i: int, caches: tuple, positions: torch.Tensor, out: list[torch.Tensor], masks: dict,
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, window: int | None,
    ) -> torch.Tensor:  # fmt: skip
        """Write k/v [1, kv, T, hd] into layer i's caches at `positions`; attend q [1, nq, T, hd] to them."""
        kv, hd = self.layout.layers[i]
        nq, t, length = q.shape[1], q.shape[2], self.max_len  # q heads h = kv head h // group, as HF's
        index = positions.view(1, 1, t, 1).expand(1, kv, t, hd)
        k_cache = caches[2 * i].scatter(2, index, k)
        v_cache = caches[2 * i + 1].scatter(2, index, v)
        out += [k_cache, v_cache]
        group = nq // kv
        # the query heads sharing a K/V head (GQA) attend as one [group * T] block of rows against the
        # cache itself: expanding the cache to every query head copied it `group` times per layer and step
        q_rows = q.reshape(1, kv, group * t, hd)
        if window not in masks:  # one mask per distinct window in a step, shared by its layers
            masks[window] = self._mask_bias(positions, window)
        bias = masks[window].view(1, 1, 1, t, length)
        scores = torch.matmul(q_rows, k_cache.transpose(2, 3)).view(1, kv, group, t, length) * scaling + bias
        probs = torch.softmax(scores, dim=-1).view(1, kv, group * t, length)
        return torch.matmul(probs, v_cache).view(1, nq, t, hd).transpose(1, 2).reshape(1, t, nq * hd)

    def _mask_bias(self, positions: torch.Tensor, window: int | None) -> torch.Tensor:
        """[1, 1, T, L] additive mask: a key is visible at or before the query (and, in a sliding
        window layer, less than `window` positions back, as HF's sliding-window mask)."""
        keys = torch.arange(self.max_len, dtype=torch.long)
        visible = keys.unsqueeze(0) <= positions.unsqueeze(1)  # [T, L]
        if window is not None and window < self.max_len:
            visible = visible & (keys.unsqueeze(0) > positions.unsqueeze(1) - int(window))
        t = positions.shape[0]
        return torch.where(visible, 0.0, torch.finfo(torch.float32).min).view(1, 1, t, self.max_len)

    def forward(self, input_ids: torch.Tensor, pos: torch.Tensor, *caches: torch.Tensor) -> tuple:
        positions = pos + torch.arange(input_ids.shape[1], dtype=torch.long)  # [T]
        out: list[torch.Tensor] = []
        masks: dict[int | None, torch.Tensor] = {}
        ctx = StepContext(positions=positions, attend=None)  # type: ignore[arg-type]
        h = self.adapter.step_embed(input_ids, ctx)
        for i in range(len(self.layout.layers)):
            ctx.attend = functools.partial(self._attend, i, caches, positions, out, masks)
            h = self.adapter.step_layer(i, h, ctx)
        return (self.adapter.step_logits(h), *out)


def greedy_reference(
    model: nn.Module, prompt: np.ndarray, new_tokens: int
) -> tuple[list[int], list[np.ndarray]]:
    """HF's greedy decode with its own KV cache: generated ids, and the logits each was picked from."""
    ids = torch.from_numpy(np.array(prompt, dtype=np.int64))
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        cache, step_logits = out.cache, [out.logits[0, -1].float().numpy()]
        generated = []
        for i in range(new_tokens):
            generated.append(int(np.argmax(step_logits[-1])))
            if i == new_tokens - 1:
                break
            out = model(input_ids=torch.tensor([generated[-1:]]), cache=cache, use_cache=True)
            cache = out.cache
            step_logits.append(out.logits[0, -1].float().numpy())
    return generated, step_logits


def check_prompt(prompt_len: int, bucket: int, max_len: int, new_tokens: int = 0) -> None:
    """A prompt must fit its prefill bucket, and prompt + new tokens the cache."""
    if prompt_len < 1:
        raise CompileError("the prompt is empty: a causal LM needs at least one token")
    if prompt_len > bucket:
        raise CompileError(f"prompt of {prompt_len} tokens is longer than the bundle allows ({bucket})")
    if prompt_len + new_tokens > max_len:
        raise CompileError(
            f"prompt {prompt_len} + {new_tokens} new tokens exceeds the KV cache of {max_len} positions"
        )
