"""GPT-2 family: fused `c_attn` Conv1D (q|k|v blocks), MHA, single-path GELU FFN."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from harness.errors import ModelLoadError
from harness.models.adapters.base import (
    ArchitectureAdapter,
    AttentionShape,
    FamilySpec,
    PruneError,
    StepContext,
    UniformShape,
    head_index,
)


def _slice_conv1d(conv: Conv1D, dim: int, keep: torch.Tensor) -> None:
    """Shrink a Conv1D (weight [nx, nf]) in place: dim 1 = outputs (and bias), dim 0 = inputs."""
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight.index_select(dim, keep).clone())
        if dim == 1:
            conv.bias = nn.Parameter(conv.bias.index_select(0, keep).clone())
            conv.nf = len(keep)
        else:
            conv.nx = len(keep)


class GPT2Adapter(ArchitectureAdapter):
    family = "gpt2"
    gqa = False
    gated_ffn = False
    lora_fan_in_fan_out = True  # Conv1D stores [in, out]

    def _body(self) -> nn.Module:
        return self.model.transformer

    def layers(self) -> nn.ModuleList:
        return self._body().h

    def _set_layers(self, layers: nn.ModuleList) -> None:
        self._body().h = layers

    def attention_shape(self, layer: int) -> AttentionShape:
        attn = self.layers()[layer].attn
        return AttentionShape(
            num_kv_groups=attn.split_size // attn.head_dim, heads_per_group=1, head_dim=attn.head_dim
        )

    def num_channels(self, layer: int) -> int:
        return self.layers()[layer].mlp.c_fc.nf

    def attn_out_proj(self, layer: int) -> nn.Module:
        return self.layers()[layer].attn.c_proj

    def ffn_down_proj(self, layer: int) -> nn.Module:
        return self.layers()[layer].mlp.c_proj

    def out_proj_weight_by_input(self, module: nn.Module) -> torch.Tensor:
        return module.weight  # Conv1D stores [in, out]

    def lora_targets(self) -> list[str]:
        return ["c_attn", "c_proj", "c_fc"]

    def _remove_heads(self, layer: int, keep_heads: list[int], new_heads_per_group: int) -> None:
        raise PruneError("GPT-2 attention is MHA: remove whole heads with remove_heads")

    def _remove_kv(self, layer: int, keep_kv: list[int]) -> None:
        attn = self.layers()[layer].attn
        hd, split = attn.head_dim, attn.split_size
        idx = head_index(keep_kv, hd)
        _slice_conv1d(attn.c_attn, 1, torch.cat([idx, idx + split, idx + 2 * split]))
        _slice_conv1d(attn.c_proj, 0, idx)
        attn.split_size = len(idx)
        attn.num_heads = len(keep_kv)

    def _remove_channels(self, layer: int, keep: list[int]) -> None:
        mlp = self.layers()[layer].mlp
        idx = torch.tensor(keep, dtype=torch.long)
        _slice_conv1d(mlp.c_fc, 1, idx)
        _slice_conv1d(mlp.c_proj, 0, idx)

    # ---- export and the cached causal step ----------------------------------------------
    def uniform_config(self, config: dict[str, Any], shape: UniformShape) -> dict[str, Any]:
        cfg = dict(config)
        if shape.heads != cfg["n_head"]:
            raise ModelLoadError(
                "GPT-2 ties head_dim to hidden_size / n_head, so a model with removed heads has no standard "
                "HF config; save with save_pruned (manifest) instead"
            )
        if cfg.get("scale_attn_by_inverse_layer_idx") and shape.source_indices != tuple(range(shape.layers)):
            raise ModelLoadError("scale_attn_by_inverse_layer_idx depends on layer numbers; use save_pruned")
        cfg.update(n_layer=shape.layers, n_inner=shape.channels)
        return cfg

    def step_embed(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        body = self._body()
        return body.wte(input_ids) + body.wpe(ctx.positions.unsqueeze(0))

    def step_layer(self, layer: int, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        block = self.layers()[layer]
        attn = block.attn
        shape = self.attention_shape(layer)
        t, kv, hd = h.shape[1], shape.num_kv_groups, shape.head_dim
        scaling = hd**-0.5 if attn.scale_attn_weights else 1.0
        if attn.scale_attn_by_inverse_layer_idx:
            scaling /= float(attn.layer_idx + 1)
        q, k, v = attn.c_attn(block.ln_1(h)).split(attn.split_size, dim=2)
        q, k, v = (x.view(1, t, kv, hd).transpose(1, 2) for x in (q, k, v))
        h = h + attn.c_proj(ctx.attend(q, k, v, scaling, None))
        return h + block.mlp(block.ln_2(h))

    def step_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self._body().ln_f(h))


FAMILY = FamilySpec(
    "gpt2",
    {"gpt2": ("GPT2ForSequenceClassification", "GPT2LMHeadModel")},
    GPT2Adapter,
    gguf_architectures=("gpt2",),
)
