"""Causal LMs for the compile path: prefill and decode as one step function with explicit KV caches.

`CachedStep` runs T new tokens at positions `pos .. pos+T-1` against per-layer K and V cache tensors of
shape [1, kv_heads_of_that_layer, max_len, head_dim] and returns the logits and the updated caches. The
cache write is a `scatter` along the sequence axis (TVM's importer rejects the `index_put` that HF's
static cache lowers to), attention runs over all `max_len` slots with a mask `key <= query position`, so
a prompt right-padded to a prefill bucket leaves only masked junk that later decode steps overwrite.
Prefill is the step with T = the bucket length at pos 0; decode is T = 1. Each layer reads its own head
counts off its weights, so pruned models with removed layers and uneven heads/widths per layer work.

Families: GPT-2 (learned positions, fused c_attn, MHA) and LLaMA (LLaMA, Qwen2, Mistral: RoPE, GQA).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harness.errors import CompileError

log = logging.getLogger(__name__)

CAUSAL_FAMILIES = ("gpt2", "llama", "qwen2", "mistral")


@dataclass(frozen=True)
class CacheLayout:
    """Shapes of the caches a step function takes: per layer (kv_heads, head_dim), and max_len."""

    max_len: int
    layers: tuple[tuple[int, int], ...]

    def empty(self) -> list[torch.Tensor]:
        """Zeroed K and V caches, in the order the step takes them (K0, V0, K1, V1, ...)."""
        return [torch.zeros(1, kv, self.max_len, hd) for kv, hd in self.layers for _ in ("k", "v")]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class CachedStep(nn.Module):
    """(input_ids [1, T], pos [1] int64, K0, V0, K1, V1, ...) -> (logits [1, T, vocab], K0', V0', ...)."""

    def __init__(self, model: nn.Module, max_len: int) -> None:
        super().__init__()
        family = getattr(model.config, "model_type", None)
        if family not in CAUSAL_FAMILIES:
            raise CompileError(
                f"causal-LM compile supports the {', '.join(CAUSAL_FAMILIES)} families, not {family!r}"
            )
        max_pos = getattr(model.config, "max_position_embeddings", None)
        if max_len < 2 or (max_pos is not None and max_len > int(max_pos)):
            raise CompileError(f"cache length {max_len} must be in 2..{max_pos} (the model's positions)")
        window = getattr(model.config, "sliding_window", None)
        if family == "mistral" and window is not None and max_len > int(window):
            raise CompileError(f"cache length {max_len} exceeds Mistral's sliding window {window}")
        self.model = model.eval()
        self.family = family
        self.max_len = int(max_len)
        if family == "gpt2":
            layouts = [(b.attn.split_size // b.attn.head_dim, b.attn.head_dim) for b in model.transformer.h]
        else:
            layouts = []
            for layer in model.model.layers:
                attn = layer.self_attn
                layouts.append((attn.k_proj.out_features // attn.head_dim, attn.head_dim))
        self.layout = CacheLayout(self.max_len, tuple(layouts))

    def _attend(
        self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, caches: tuple,
        positions: torch.Tensor, bias: torch.Tensor, scaling: float, out: list[torch.Tensor],
    ) -> torch.Tensor:  # fmt: skip
        """Write k/v [1, kv, T, hd] into layer i's caches at `positions`; attend q [1, nq, T, hd] to them."""
        kv, hd = self.layout.layers[i]
        nq, t, length = q.shape[1], q.shape[2], self.max_len
        index = positions.view(1, 1, t, 1).expand(1, kv, t, hd)
        k_cache = caches[2 * i].scatter(2, index, k)
        v_cache = caches[2 * i + 1].scatter(2, index, v)
        out += [k_cache, v_cache]
        group = nq // kv
        k_all = k_cache.unsqueeze(2).expand(1, kv, group, length, hd).reshape(1, nq, length, hd)
        v_all = v_cache.unsqueeze(2).expand(1, kv, group, length, hd).reshape(1, nq, length, hd)
        probs = torch.softmax(torch.matmul(q, k_all.transpose(2, 3)) * scaling + bias, dim=-1)
        return torch.matmul(probs, v_all).transpose(1, 2).reshape(1, t, nq * hd)

    def forward(self, input_ids: torch.Tensor, pos: torch.Tensor, *caches: torch.Tensor) -> tuple:
        t = input_ids.shape[1]
        positions = pos + torch.arange(t, dtype=torch.long)  # [T]
        keys = torch.arange(self.max_len, dtype=torch.long)
        visible = keys.unsqueeze(0) <= positions.unsqueeze(1)  # [T, L]
        bias = torch.where(visible, 0.0, torch.finfo(torch.float32).min).view(1, 1, t, self.max_len)
        out: list[torch.Tensor] = []
        if self.family == "gpt2":
            logits = self._gpt2(input_ids, positions, caches, bias, out)
        else:
            logits = self._llama(input_ids, positions, caches, bias, out)
        return (logits, *out)

    def _llama(
        self, input_ids: torch.Tensor, positions: torch.Tensor, caches: tuple, bias: torch.Tensor, out: list
    ) -> torch.Tensor:
        body = self.model.model
        t = input_ids.shape[1]
        h = body.embed_tokens(input_ids)
        cos, sin = body.rotary_emb(h, positions.unsqueeze(0))  # [1, T, head_dim]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        for i, layer in enumerate(body.layers):
            attn = layer.self_attn
            kv, hd = self.layout.layers[i]
            nq = attn.q_proj.out_features // hd
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(1, t, nq, hd).transpose(1, 2)
            k = attn.k_proj(x).view(1, t, kv, hd).transpose(1, 2)
            v = attn.v_proj(x).view(1, t, kv, hd).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            h = h + attn.o_proj(self._attend(i, q, k, v, caches, positions, bias, attn.scaling, out))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.model.lm_head(body.norm(h))

    def _gpt2(
        self, input_ids: torch.Tensor, positions: torch.Tensor, caches: tuple, bias: torch.Tensor, out: list
    ) -> torch.Tensor:
        body = self.model.transformer
        t = input_ids.shape[1]
        h = body.wte(input_ids) + body.wpe(positions.unsqueeze(0))
        for i, block in enumerate(body.h):
            attn = block.attn
            kv, hd = self.layout.layers[i]
            scaling = hd**-0.5 if attn.scale_attn_weights else 1.0
            if attn.scale_attn_by_inverse_layer_idx:
                scaling /= float(attn.layer_idx + 1)
            q, k, v = attn.c_attn(block.ln_1(h)).split(attn.split_size, dim=2)
            q, k, v = (x.view(1, t, kv, hd).transpose(1, 2) for x in (q, k, v))
            h = h + attn.c_proj(self._attend(i, q, k, v, caches, positions, bias, scaling, out))
            h = h + block.mlp(block.ln_2(h))
        return self.model.lm_head(body.ln_f(h))


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
