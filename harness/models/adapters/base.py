"""The adapter interface: where a family keeps its layers, heads, KV groups and FFN channels.

Adapters physically remove components (smaller Linear/Conv1D weights, fixed per-module attributes)
and can also zero them, which is the reference the removal is tested against. Each decoder layer
carries a `LayerSource` recording which original components it still holds; the pruning manifest
is read from those records, so any sequence of removals can be rebuilt from the base config.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.errors import HiltError

SOURCE_ATTR = "hilt_source"
BASE_CONFIG_ATTR = "hilt_base_config"


class PruneError(HiltError):
    """A removal request is impossible (empty layer, GQA groups of unequal size, bad index)."""


@dataclass
class LayerSource:
    """Original indices a decoder layer still holds: its own index, query heads, KV heads, FFN channels."""

    index: int
    q_heads: list[int]
    kv_heads: list[int]
    channels: list[int]
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FamilySpec:
    """One model family: the HF model types it covers, their classes per task, its adapter, and the
    GGUF `general.architecture` names that import as it.

    Each adapter module beside this one exposes `FAMILY`; the package finds them, so adding a family
    is adding one file. Everything else a layer needs to know about a family (LoRA targets and their
    layout, config keys for export, the pieces of the cached decode step) is the adapter's.
    """

    name: str
    # model_type -> (sequence-classification class name, causal-LM class name) in transformers
    classes: dict[str, tuple[str, str]]
    adapter: type[ArchitectureAdapter]
    gguf_architectures: tuple[str, ...] = ()

    @property
    def model_types(self) -> tuple[str, ...]:
        return tuple(self.classes)


@dataclass(frozen=True)
class AttentionShape:
    """Current attention layout of one layer; MHA is `heads_per_group == 1` with one KV head per head."""

    num_kv_groups: int
    heads_per_group: int
    head_dim: int

    @property
    def num_heads(self) -> int:
        return self.num_kv_groups * self.heads_per_group


# (q [1, nq, T, hd], k [1, kv, T, hd], v [1, kv, T, hd], scaling, sliding window or None) -> [1, T, nq*hd]:
# the cached step's attention (cache write + masked softmax), handed to each family's layer.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, "int | None"], torch.Tensor]


@dataclass
class StepContext:
    """What one cached step gives a family's layers: the new tokens' positions, the attention over
    the caches, and a per-step memo for tensors every layer shares (rotary tables)."""

    positions: torch.Tensor  # [T] int64
    attend: Attend
    shared: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """`make()` the first time `key` is asked for in this step, the same value afterwards."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]


@dataclass(frozen=True)
class UniformShape:
    """A pruned model whose remaining layers all have the same widths (what a plain HF config says)."""

    layers: int
    heads: int
    kv_heads: int
    channels: int
    source_indices: tuple[int, ...]


def _check_keep(keep: Sequence[int], total: int, what: str) -> list[int]:
    keep = sorted(int(k) for k in keep)
    if not keep:
        raise PruneError(f"cannot remove every {what}: at least one must remain")
    if len(set(keep)) != len(keep) or keep[0] < 0 or keep[-1] >= total:
        raise PruneError(f"{what} indices {keep} are not distinct indices in range 0..{total - 1}")
    return keep


class ArchitectureAdapter(abc.ABC):
    """Enumerates and removes the prunable components of one model (in place)."""

    family: str
    gqa: bool  # query heads share K/V (attention pruning unit is the KV group)
    gated_ffn: bool  # FFN channels are coupled through a gate product (SwiGLU)
    lora_fan_in_fan_out: bool = False  # the adapted modules store weights [in, out] (Conv1D)

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        if not hasattr(model, BASE_CONFIG_ATTR):  # the dense config, before any removal
            setattr(model, BASE_CONFIG_ATTR, model.config.to_dict())
        for i, layer in enumerate(self.layers()):
            if not hasattr(layer, SOURCE_ATTR):
                shape = self.attention_shape(i)
                setattr(
                    layer,
                    SOURCE_ATTR,
                    LayerSource(
                        index=i,
                        q_heads=list(range(shape.num_heads)),
                        kv_heads=list(range(shape.num_kv_groups)),
                        channels=list(range(self.num_channels(i))),
                    ),
                )

    # ---- where things live -------------------------------------------------------------
    @abc.abstractmethod
    def layers(self) -> nn.ModuleList:
        """The decoder blocks, in order."""

    @abc.abstractmethod
    def _set_layers(self, layers: nn.ModuleList) -> None: ...

    @abc.abstractmethod
    def attention_shape(self, layer: int) -> AttentionShape: ...

    @abc.abstractmethod
    def num_channels(self, layer: int) -> int: ...

    @abc.abstractmethod
    def attn_out_proj(self, layer: int) -> nn.Module:
        """The module whose input is the concatenated per-head attention output."""

    @abc.abstractmethod
    def ffn_down_proj(self, layer: int) -> nn.Module:
        """The module whose input is the FFN's channel activations."""

    @abc.abstractmethod
    def out_proj_weight_by_input(self, module: nn.Module) -> torch.Tensor:
        """The weight of an output projection as [in_features, out_features] (a view)."""

    @abc.abstractmethod
    def lora_targets(self) -> list[str]:
        """Module name suffixes that LoRA adapts (every remaining linear map of the blocks)."""

    @abc.abstractmethod
    def _remove_heads(self, layer: int, keep_heads: list[int], new_heads_per_group: int) -> None: ...

    @abc.abstractmethod
    def _remove_kv(self, layer: int, keep_kv: list[int]) -> None: ...

    @abc.abstractmethod
    def _remove_channels(self, layer: int, keep: list[int]) -> None: ...

    # ---- export and the cached causal step (harness.models.manifest, harness.compile.causal) ----
    @abc.abstractmethod
    def uniform_config(self, config: dict[str, Any], shape: UniformShape) -> dict[str, Any]:
        """The plain HF config of this model with every layer at `shape`; a ModelLoadError where the
        family's config cannot say it (the caller then saves with the pruning manifest instead)."""

    @abc.abstractmethod
    def step_embed(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Hidden states [1, T, hidden] of the new tokens at `ctx.positions`."""

    @abc.abstractmethod
    def step_layer(self, layer: int, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """One decoder block over the new tokens; attention goes through `ctx.attend`."""

    @abc.abstractmethod
    def step_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm and output projection: logits [1, T, vocab]."""

    def check_step(self, max_len: int) -> None:  # noqa: B027 - most families serve any step
        """Refuse a cached step (of `max_len` positions) this family's model cannot run as compiled:
        raise a HiltError saying why."""

    # ---- shared logic ------------------------------------------------------------------
    def num_layers(self) -> int:
        return len(self.layers())

    def source(self, layer: int) -> LayerSource:
        return getattr(self.layers()[layer], SOURCE_ATTR)

    def remove_layers(self, keep: Sequence[int]) -> None:
        """Keep only the listed decoder layers (current indices) and renumber the rest."""
        keep = _check_keep(keep, self.num_layers(), "layer")
        old = self.layers()
        self._set_layers(nn.ModuleList([old[i] for i in keep]))
        cfg = self.model.config
        if isinstance(getattr(cfg, "layer_types", None), list | tuple):
            cfg.layer_types = [cfg.layer_types[i] for i in keep]
        cfg.num_hidden_layers = len(keep)
        for new_idx, layer in enumerate(self.layers()):
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_idx

    def remove_attention(self, layer: int, keep_groups: Sequence[int], keep_in_group: Sequence[int]) -> None:
        """Keep KV groups `keep_groups` and, inside every kept group, query positions `keep_in_group`.

        Using the same positions count in every group keeps shapes `repeat_kv` can handle. For MHA
        each head is its own group, so `keep_in_group` must be `[0]`.
        """
        shape = self.attention_shape(layer)
        groups = _check_keep(keep_groups, shape.num_kv_groups, "KV group" if self.gqa else "head")
        inner = _check_keep(keep_in_group, shape.heads_per_group, "query head per group")
        if len(inner) < shape.heads_per_group:
            self.remove_query_heads(layer, [inner] * shape.num_kv_groups)
        if len(groups) < shape.num_kv_groups:
            self._remove_kv(layer, groups)
            src = self.source(layer)
            per = len(inner)
            src.q_heads = [src.q_heads[g * per + p] for g in groups for p in range(per)]
            src.kv_heads = [src.kv_heads[g] for g in groups]

    def remove_query_heads(self, layer: int, keep_per_group: Sequence[Sequence[int]]) -> None:
        """Inside each KV group keep the listed query positions; every group must keep the same count."""
        shape = self.attention_shape(layer)
        if len(keep_per_group) != shape.num_kv_groups:
            raise PruneError(
                f"need one list of query heads per KV group ({shape.num_kv_groups}) in layer {layer}"
            )
        counts = {len(k) for k in keep_per_group}
        if len(counts) != 1:
            raise PruneError(
                f"layer {layer}: every KV group must keep the same number of query heads, "
                f"got {sorted(counts)}"
            )
        heads: list[int] = []
        for g, keep in enumerate(keep_per_group):
            inner = _check_keep(keep, shape.heads_per_group, "query head per group")
            heads += [g * shape.heads_per_group + p for p in inner]
        self._remove_heads(layer, heads, counts.pop())
        src = self.source(layer)
        src.q_heads = [src.q_heads[h] for h in heads]

    def remove_heads(self, layer: int, keep: Sequence[int]) -> None:
        """MHA: keep the listed heads. GQA: keep the listed KV groups (with all their query heads)."""
        shape = self.attention_shape(layer)
        self.remove_attention(layer, keep, list(range(shape.heads_per_group)))

    def remove_channels(self, layer: int, keep: Sequence[int]) -> None:
        """Keep the listed FFN channels of one layer."""
        keep = _check_keep(keep, self.num_channels(layer), "FFN channel")
        if len(keep) == self.num_channels(layer):
            return
        self._remove_channels(layer, keep)
        src = self.source(layer)
        src.channels = [src.channels[c] for c in keep]

    # ---- masking (the reference removal must match) ------------------------------------
    @torch.no_grad()
    def mask_query_heads(self, layer: int, heads: Sequence[int]) -> None:
        """Zero the contribution of query heads (current indices) to the layer's output."""
        hd = self.attention_shape(layer).head_dim
        w = self.out_proj_weight_by_input(self.attn_out_proj(layer))
        for h in heads:
            w[h * hd : (h + 1) * hd, :] = 0

    @torch.no_grad()
    def mask_heads(self, layer: int, units: Sequence[int]) -> None:
        """Zero heads (MHA) or whole KV groups (GQA), the same units `remove_heads` takes."""
        per = self.attention_shape(layer).heads_per_group
        self.mask_query_heads(layer, [g * per + p for g in units for p in range(per)])

    @torch.no_grad()
    def mask_channels(self, layer: int, channels: Sequence[int]) -> None:
        w = self.out_proj_weight_by_input(self.ffn_down_proj(layer))
        w[list(channels), :] = 0

    @torch.no_grad()
    def mask_layer(self, layer: int) -> None:
        """Make a pre-norm block the identity: zero both residual branches' output maps and biases."""
        for module in (self.attn_out_proj(layer), self.ffn_down_proj(layer)):
            module.weight.zero_()
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()


def slice_linear(linear: nn.Linear, dim: int, keep: torch.Tensor) -> None:
    """Shrink an nn.Linear in place: dim 0 = output rows (and bias), dim 1 = input columns."""
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.index_select(dim, keep).clone())
        if dim == 0:
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias.index_select(0, keep).clone())
            linear.out_features = len(keep)
        else:
            linear.in_features = len(keep)


def standard_uniform_config(config: dict[str, Any], shape: UniformShape) -> dict[str, Any]:
    """`uniform_config` for the HF configs that name layers, heads, KV heads and FFN width the
    LLaMA way (num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size)."""
    cfg = dict(config)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    cfg.update(
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        intermediate_size=shape.channels,
        head_dim=head_dim,
    )
    return cfg


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """RoPE's rotation of the two halves of the head dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def head_index(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    """Row/column indices covered by a list of heads."""
    return torch.tensor([h * head_dim + d for h in heads for d in range(head_dim)], dtype=torch.long)
