"""LLaMA family (LLaMA, Qwen2, Mistral): separate q/k/v/o with GQA, SwiGLU gate/up/down, optional biases."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.models.adapters.base import (
    ArchitectureAdapter,
    AttentionShape,
    FamilySpec,
    StepContext,
    UniformShape,
    head_index,
    rotate_half,
    slice_linear,
    standard_uniform_config,
)


class LlamaAdapter(ArchitectureAdapter):
    family = "llama"
    gqa = True
    gated_ffn = True

    def __init__(self, model: nn.Module, family: str = "llama") -> None:
        self.family = family
        super().__init__(model)

    def _body(self) -> nn.Module:
        return self.model.model

    def layers(self) -> nn.ModuleList:
        return self._body().layers

    def _set_layers(self, layers: nn.ModuleList) -> None:
        self._body().layers = layers

    def attention_shape(self, layer: int) -> AttentionShape:
        attn = self.layers()[layer].self_attn
        kv = attn.k_proj.out_features // attn.head_dim
        return AttentionShape(
            num_kv_groups=kv, heads_per_group=attn.num_key_value_groups, head_dim=attn.head_dim
        )

    def num_channels(self, layer: int) -> int:
        return self.layers()[layer].mlp.down_proj.in_features

    def attn_out_proj(self, layer: int) -> nn.Module:
        return self.layers()[layer].self_attn.o_proj

    def ffn_down_proj(self, layer: int) -> nn.Module:
        return self.layers()[layer].mlp.down_proj

    def out_proj_weight_by_input(self, module: nn.Module) -> torch.Tensor:
        return module.weight.t()  # Linear stores [out, in]

    def lora_targets(self) -> list[str]:
        return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    def _remove_heads(self, layer: int, keep_heads: list[int], new_heads_per_group: int) -> None:
        attn = self.layers()[layer].self_attn
        idx = head_index(keep_heads, attn.head_dim)
        slice_linear(attn.q_proj, 0, idx)
        slice_linear(attn.o_proj, 1, idx)
        attn.num_key_value_groups = new_heads_per_group

    def _remove_kv(self, layer: int, keep_kv: list[int]) -> None:
        attn = self.layers()[layer].self_attn
        per, hd = attn.num_key_value_groups, attn.head_dim
        q_heads = [g * per + p for g in keep_kv for p in range(per)]
        slice_linear(attn.q_proj, 0, head_index(q_heads, hd))
        slice_linear(attn.o_proj, 1, head_index(q_heads, hd))
        kv_idx = head_index(keep_kv, hd)
        slice_linear(attn.k_proj, 0, kv_idx)
        slice_linear(attn.v_proj, 0, kv_idx)

    def _remove_channels(self, layer: int, keep: list[int]) -> None:
        mlp = self.layers()[layer].mlp
        idx = torch.tensor(keep, dtype=torch.long)
        slice_linear(mlp.gate_proj, 0, idx)
        slice_linear(mlp.up_proj, 0, idx)
        slice_linear(mlp.down_proj, 1, idx)
        mlp.intermediate_size = len(keep)

    # ---- export and the cached causal step ----------------------------------------------
    def uniform_config(self, config: dict[str, Any], shape: UniformShape) -> dict[str, Any]:
        return standard_uniform_config(config, shape)

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of a layer: Qwen2 sets it per layer type, Mistral for every layer."""
        attn = self.layers()[layer].self_attn
        if hasattr(attn, "sliding_window"):
            return attn.sliding_window
        window = getattr(self.model.config, "sliding_window", None)
        return int(window) if self.family == "mistral" and window is not None else None

    def step_embed(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._body().embed_tokens(input_ids)

    def _rotary(self, h: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self._body().rotary_emb(h, ctx.positions.unsqueeze(0))  # [1, T, head_dim]
        return cos.unsqueeze(1), sin.unsqueeze(1)

    def project_qkv(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [1, nq, T, hd], k and v [1, kv, T, hd] of a layer's normed input (before positions)."""
        attn, shape, t = self.layers()[layer].self_attn, self.attention_shape(layer), x.shape[1]
        heads = (shape.num_heads, shape.num_kv_groups, shape.num_kv_groups)
        projs = (attn.q_proj, attn.k_proj, attn.v_proj)
        q, k, v = (p(x).view(1, t, n, shape.head_dim) for p, n in zip(projs, heads, strict=True))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def step_layer(self, layer: int, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        block = self.layers()[layer]
        attn = block.self_attn
        cos, sin = ctx.once("rope", lambda: self._rotary(h, ctx))
        q, k, v = self.project_qkv(layer, block.input_layernorm(h))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        h = h + attn.o_proj(ctx.attend(q, k, v, attn.scaling, self.layer_window(layer)))
        return h + block.mlp(block.post_attention_layernorm(h))

    def step_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self._body().norm(h))


FAMILY = FamilySpec(
    "llama",
    {
        "llama": ("LlamaForSequenceClassification", "LlamaForCausalLM"),
        "qwen2": ("Qwen2ForSequenceClassification", "Qwen2ForCausalLM"),
        "mistral": ("MistralForSequenceClassification", "MistralForCausalLM"),
    },
    LlamaAdapter,
    gguf_architectures=("llama", "qwen2"),  # Mistral GGUFs say "llama" (llama.cpp writes them so)
)
