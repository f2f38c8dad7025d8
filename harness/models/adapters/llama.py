"""LLaMA family (LLaMA, Qwen2, Mistral): separate q/k/v/o with GQA, SwiGLU gate/up/down, optional biases."""

from __future__ import annotations

import torch
from torch import nn

from harness.models.adapters.base import (
    ArchitectureAdapter,
    AttentionShape,
    FamilySpec,
    head_index,
    slice_linear,
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


FAMILY = FamilySpec(
    "llama",
    {
        "llama": ("LlamaForSequenceClassification", "LlamaForCausalLM"),
        "qwen2": ("Qwen2ForSequenceClassification", "Qwen2ForCausalLM"),
        "mistral": ("MistralForSequenceClassification", "MistralForCausalLM"),
    },
    LlamaAdapter,
)
