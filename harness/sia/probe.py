"""What the empirical SIA test needs from a model: units, criterion scores, loss under removal.

`Probe` is the interface; `ModelProbe` implements it for any model with an architecture adapter by
*masking* (zeroing a unit's output-projection slice, which the pruning engine proves equal to
removal) and restoring the weights afterwards. Keeping the interface this small lets tests check
the metrics on constructed models whose independence is known exactly.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harness.models.adapters import ArchitectureAdapter, get_adapter
from harness.prune.calib import Batch, mean_batch_loss, task_of
from harness.prune.criteria import (
    channel_scores,
    collect_stats,
    group_scores,
    head_scores,
    layer_scores,
    needs,
)
from harness.prune.recovery import recover
from harness.prune.schedule import Recovery
from harness.prune.weights import saved_weights


@dataclass(frozen=True)
class Unit:
    """One removable component: a layer, a head / KV group, or a group of FFN channels."""

    layer: int
    index: int  # head / KV-group index or channel-group index inside the layer; layer index for layers
    channels: tuple[int, ...] = ()  # current channel indices, for channel groups

    @property
    def label(self) -> str:
        return (
            f"L{self.layer}"
            if not self.channels and self.index == self.layer
            else f"L{self.layer}.{self.index}"
        )


def chance_loss_of(model: nn.Module) -> float | None:
    """The loss of uniform guessing: ln(classes) for a classifier, ln(vocabulary) for a causal LM."""
    cfg = model.config
    n = cfg.num_labels if task_of(model) == "sequence-classification" else cfg.vocab_size
    return math.log(n) if n and n > 1 else None


class Probe(abc.ABC):
    """A model seen through one granularity: its units, their scores, and the loss with some removed."""

    forward_passes: int = 0

    @abc.abstractmethod
    def units(self) -> list[Unit]: ...

    @abc.abstractmethod
    def scores(self) -> np.ndarray:
        """Criterion score per unit (higher = more important), in `units()` order."""

    @abc.abstractmethod
    def loss(self, removed: Sequence[int] = ()) -> float:
        """Mean calibration loss with the listed units (indices into `units()`) removed."""

    @abc.abstractmethod
    def pruned(self, removed: Sequence[int], recovery_steps: int) -> Probe:
        """A new probe on a copy with those units removed (and briefly recovered); unit order kept."""

    @abc.abstractmethod
    def surviving(self, removed: Sequence[int]) -> list[int]:
        """Indices into `units()` that still exist in `pruned(removed, ...)`, in its unit order."""

    def chance_loss(self) -> float | None:
        """The loss of a model that learned nothing (uniform prediction); None when unknown."""
        return None


class ModelProbe(Probe):
    """Probe a transformer through its adapter with masked removals on calibration batches."""

    def __init__(
        self,
        model: nn.Module,
        granularity: str,
        criterion: str,
        batches: list[Batch],
        *,
        channel_groups: int = 8,
        seed: int = 0,
        recovery_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        _units: list[Unit] | None = None,
    ) -> None:
        self.model = model
        self.adapter: ArchitectureAdapter = get_adapter(model)
        self.granularity = granularity
        self.criterion = criterion
        self.batches = batches
        self.channel_groups = channel_groups
        self.seed = seed
        self.recovery_data = recovery_data
        self.forward_passes = 0
        self._units = _units if _units is not None else self._enumerate()

    # ---- units -------------------------------------------------------------------------
    def _enumerate(self) -> list[Unit]:
        a = self.adapter
        if self.granularity == "layer":
            return [Unit(layer=i, index=i) for i in range(a.num_layers())]
        if self.granularity == "head":
            return [
                Unit(layer=i, index=g)
                for i in range(a.num_layers())
                for g in range(a.attention_shape(i).num_kv_groups)
            ]
        if self.granularity == "channel":
            g = torch.Generator().manual_seed(self.seed)
            units = []
            for i in range(a.num_layers()):
                perm = torch.randperm(a.num_channels(i), generator=g).tolist()
                k = min(self.channel_groups, len(perm))
                for j in range(k):
                    units.append(Unit(layer=i, index=j, channels=tuple(sorted(perm[j::k]))))
            return units
        raise ValueError(f"unknown granularity {self.granularity!r}")

    def units(self) -> list[Unit]:
        return list(self._units)

    def chance_loss(self) -> float | None:
        return chance_loss_of(self.model)

    # ---- scores ------------------------------------------------------------------------
    def scores(self) -> np.ndarray:
        a = self.adapter
        gradients, head_contrib = needs([self.criterion])
        stats = collect_stats(a, self.batches, gradients=gradients, head_contrib=head_contrib)
        self.forward_passes += len(self.batches) * (2 if gradients else 1)
        if self.granularity == "layer":
            s = layer_scores(a, stats, self.criterion, self.batches, seed=self.seed)
            if self.criterion == "skip_loss":
                self.forward_passes += len(self.batches) * a.num_layers()
            return np.array([float(s[u.layer]) for u in self._units])
        if self.granularity == "head":
            per_group = [
                g.sum(-1) for g in group_scores(a, head_scores(a, stats, self.criterion, seed=self.seed))
            ]
            return np.array([float(per_group[u.layer][u.index]) for u in self._units])
        per_channel = channel_scores(a, stats, self.criterion, seed=self.seed)
        return np.array([float(per_channel[u.layer][list(u.channels)].sum()) for u in self._units])

    # ---- removal by masking ------------------------------------------------------------
    def _touched(self, removed: Sequence[int]) -> list[nn.Module]:
        layers = sorted({self._units[i].layer for i in removed})
        mods: list[nn.Module] = []
        for layer in layers:
            if self.granularity in ("layer", "head"):
                mods.append(self.adapter.attn_out_proj(layer))
            if self.granularity in ("layer", "channel"):
                mods.append(self.adapter.ffn_down_proj(layer))
        return mods

    @contextmanager
    def _masked(self, removed: Sequence[int]) -> Iterator[None]:
        with saved_weights(self._touched(removed)):
            self._apply_masks(removed)
            yield

    def _apply_masks(self, removed: Sequence[int]) -> None:
        by_layer: dict[int, list[Unit]] = {}
        for i in removed:
            by_layer.setdefault(self._units[i].layer, []).append(self._units[i])
        for layer, units in by_layer.items():
            if self.granularity == "layer":
                self.adapter.mask_layer(layer)
            elif self.granularity == "head":
                self.adapter.mask_heads(layer, [u.index for u in units])
            else:
                self.adapter.mask_channels(layer, [c for u in units for c in u.channels])

    def loss(self, removed: Sequence[int] = ()) -> float:
        self.forward_passes += len(self.batches)
        if not removed:
            return mean_batch_loss(self.model, self.batches)
        with self._masked(removed):
            return mean_batch_loss(self.model, self.batches)

    # ---- physical removal for rank stability ---------------------------------------------
    def surviving(self, removed: Sequence[int]) -> list[int]:
        gone = set(removed)
        return [i for i in range(len(self._units)) if i not in gone]

    def pruned(self, removed: Sequence[int], recovery_steps: int) -> ModelProbe:
        model = copy.deepcopy(self.model)
        adapter = get_adapter(model)
        gone = set(removed)
        keep_idx = self.surviving(removed)
        new_units: list[Unit] = []
        if self.granularity == "layer":
            keep_layers = [self._units[i].layer for i in keep_idx]
            adapter.remove_layers(keep_layers)
            new_units = [Unit(layer=j, index=j) for j in range(len(keep_layers))]
        else:
            for layer in range(adapter.num_layers()):
                in_layer = [i for i, u in enumerate(self._units) if u.layer == layer]
                kept = [i for i in in_layer if i not in gone]
                if self.granularity == "head":
                    adapter.remove_heads(layer, [self._units[i].index for i in kept])
                    new_units += [Unit(layer=layer, index=j) for j in range(len(kept))]
                else:
                    keep_ch = sorted(c for i in kept for c in self._units[i].channels)
                    adapter.remove_channels(layer, keep_ch)
                    pos = {c: j for j, c in enumerate(keep_ch)}
                    new_units += [
                        Unit(
                            layer=layer,
                            index=self._units[i].index,
                            channels=tuple(pos[c] for c in self._units[i].channels),
                        )
                        for i in kept
                    ]
        if recovery_steps > 0 and self.recovery_data is not None:
            ids, labels = self.recovery_data
            model, _ = recover(
                model, Recovery(steps=recovery_steps, rank=8, alpha=16.0, lr=1e-3), ids, labels, self.seed
            )
            self.forward_passes += 2 * recovery_steps
        probe = ModelProbe(
            model,
            self.granularity,
            self.criterion,
            self.batches,
            channel_groups=self.channel_groups,
            seed=self.seed,
            recovery_data=self.recovery_data,
            _units=new_units,
        )
        return probe
