"""The pruning manifest: base config + what each remaining layer keeps; save, load, export.

A pruned model is saved as `config.json` (the dense base config, for people and tools),
`pruning_manifest.json` and `model.safetensors`. Loading builds the dense model from the base
config, removes what the manifest says is gone, then loads the weights strictly. Per-layer
widths may differ, which stock `from_pretrained` cannot express; when they do not, `export_hf`
writes a plain HF directory instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model
from torch import nn

from harness.errors import ModelLoadError
from harness.models.adapters import ArchitectureAdapter, PruneError, UniformShape, get_adapter
from harness.models.adapters.base import BASE_CONFIG_ATTR
from harness.models.families import SUPPORTED_FAMILIES, model_class

log = logging.getLogger(__name__)

MANIFEST_FILE = "pruning_manifest.json"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_VERSION = 1


class LayerManifest(BaseModel):
    """One remaining decoder layer: its index in the base model and the original components it keeps."""

    source_index: int = Field(ge=0)
    q_heads: list[int]
    kv_heads: list[int]
    channels: list[int]


class PruningManifest(BaseModel):
    version: Literal[1] = MANIFEST_VERSION
    family: str
    task: Literal["sequence-classification", "causal-lm"]
    base_config: dict[str, Any]
    layers: list[LayerManifest]

    def is_uniform(self) -> bool:
        """Same head, KV-head and channel counts in every remaining layer."""
        shapes = {(len(m.q_heads), len(m.kv_heads), len(m.channels)) for m in self.layers}
        return len(shapes) <= 1


def build_manifest(model: nn.Module, task: str) -> PruningManifest:
    """Read the manifest off a (possibly pruned) model's per-layer source records."""
    adapter = get_adapter(model)
    layers = []
    for i in range(adapter.num_layers()):
        src = adapter.source(i)
        layers.append(
            LayerManifest(
                source_index=src.index,
                q_heads=list(src.q_heads),
                kv_heads=list(src.kv_heads),
                channels=list(src.channels),
            )
        )
    base = json.loads(json.dumps(getattr(model, BASE_CONFIG_ATTR)))  # as it will read back from disk
    return PruningManifest(family=adapter.family, task=task, base_config=base, layers=layers)


def _config_from_dict(base: dict[str, Any]):  # noqa: ANN202 - a transformers PretrainedConfig
    from transformers import CONFIG_MAPPING

    model_type = base.get("model_type")
    if model_type not in SUPPORTED_FAMILIES:
        raise ModelLoadError(
            f"manifest base config has model_type {model_type!r}; supported: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return CONFIG_MAPPING[model_type].from_dict(base)


def apply_manifest(adapter: ArchitectureAdapter, manifest: PruningManifest) -> None:
    """Remove from a dense model everything the manifest says is gone (validating every index)."""
    try:
        for entry in manifest.layers:
            i = entry.source_index
            if i >= adapter.num_layers():
                raise PruneError(f"layer {i} does not exist in the base model")
            shape = adapter.attention_shape(i)
            per = shape.heads_per_group
            if adapter.gqa:
                by_group: dict[int, list[int]] = {}
                for h in entry.q_heads:
                    by_group.setdefault(h // per, []).append(h % per)
                if sorted(by_group) != sorted(entry.kv_heads):
                    raise PruneError(
                        f"layer {i}: query heads {entry.q_heads} do not match KV heads {entry.kv_heads}"
                    )
                counts = {len(v) for v in by_group.values()}
                if len(counts) != 1:
                    raise PruneError(f"layer {i}: KV groups keep unequal numbers of query heads")
                n = counts.pop()
                default = list(range(n))
                keep = [by_group.get(g, default) for g in range(shape.num_kv_groups)]
                adapter.remove_query_heads(i, keep)
                adapter.remove_heads(i, list(entry.kv_heads))
            else:
                if entry.q_heads != entry.kv_heads:
                    raise PruneError(f"layer {i}: MHA layer needs q_heads == kv_heads")
                adapter.remove_heads(i, list(entry.kv_heads))
            adapter.remove_channels(i, list(entry.channels))
        adapter.remove_layers([entry.source_index for entry in manifest.layers])
    except PruneError as exc:
        raise ModelLoadError(f"pruning manifest does not fit its base config: {exc}") from exc


def save_pruned(model: nn.Module, out_dir: str | Path, task: str) -> PruningManifest:
    """Write config.json (base), pruning_manifest.json and model.safetensors into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(model, task)
    (out / "config.json").write_text(json.dumps(manifest.base_config, indent=2, sort_keys=True) + "\n")
    (out / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    st_save_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt", "hilt": "pruned"})
    return manifest


def read_manifest(path: str | Path) -> PruningManifest:
    path = Path(path)
    try:
        return PruningManifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelLoadError(
            f"{path}: invalid pruning manifest at {where or 'top level'}: {first['msg']}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read pruning manifest: {exc}") from exc


def build_from_manifest(manifest: PruningManifest) -> nn.Module:
    """The pruned architecture (random weights) described by a manifest."""
    config = _config_from_dict(manifest.base_config)
    model = model_class(config.model_type, manifest.task)(config)
    setattr(model, BASE_CONFIG_ATTR, dict(manifest.base_config))
    apply_manifest(get_adapter(model), manifest)
    return model


def load_pruned(directory: str | Path) -> tuple[nn.Module, PruningManifest]:
    """Load a pruned directory written by `save_pruned` (outputs equal those before saving)."""
    directory = Path(directory)
    manifest = read_manifest(directory / MANIFEST_FILE)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{directory}: pruned model has no {WEIGHTS_FILE}")
    model = build_from_manifest(manifest)
    try:
        st_load_model(model, str(weights), strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0][:300]
        raise ModelLoadError(f"{directory}: weights do not match the pruning manifest: {msg}") from exc
    model.eval()
    return model, manifest


def export_hf(model: nn.Module, out_dir: str | Path, task: str) -> Path:
    """Write a standard HF directory (`from_pretrained` loads it) when every layer has the same shape."""
    manifest = build_manifest(model, task)
    if not manifest.is_uniform():
        raise ModelLoadError("per-layer widths differ; save with save_pruned (manifest) instead of export_hf")
    first = manifest.layers[0]
    cfg = dict(manifest.base_config)
    if isinstance(cfg.get("layer_types"), list):
        cfg["layer_types"] = [cfg["layer_types"][m.source_index] for m in manifest.layers]
    shape = UniformShape(
        layers=len(manifest.layers),
        heads=len(first.q_heads),
        kv_heads=len(first.kv_heads),
        channels=len(first.channels),
        source_indices=tuple(m.source_index for m in manifest.layers),
    )
    cfg = get_adapter(model).uniform_config(cfg, shape)
    config = _config_from_dict(cfg)
    plain = model_class(config.model_type, task)(config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise ModelLoadError(
            f"export failed: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}"
        )
    out = Path(out_dir)
    plain.save_pretrained(out)
    log.info("exported uniform pruned model to %s", out)
    return out


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


__all__ = [
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "LayerManifest",
    "PruningManifest",
    "apply_manifest",
    "build_from_manifest",
    "build_manifest",
    "count_parameters",
    "export_hf",
    "load_pruned",
    "read_manifest",
    "save_pruned",
]
