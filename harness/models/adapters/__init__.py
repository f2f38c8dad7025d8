"""Architecture adapters, one module per family (each exposes `FAMILY`), chosen from the config."""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from harness.errors import UnsupportedFamilyError
from harness.models.adapters.base import (
    ArchitectureAdapter,
    AttentionShape,
    FamilySpec,
    LayerSource,
    PruneError,
    StepContext,
    UniformShape,
)


def _discover() -> dict[str, FamilySpec]:
    """model_type -> its family, from every adapter module of this package."""
    found: dict[str, FamilySpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
        if isinstance(spec, FamilySpec):
            found.update({model_type: spec for model_type in spec.model_types})
    return found


FAMILIES: dict[str, FamilySpec] = _discover()

__all__ = [
    "FAMILIES",
    "ArchitectureAdapter",
    "AttentionShape",
    "FamilySpec",
    "LayerSource",
    "PruneError",
    "StepContext",
    "UniformShape",
    "get_adapter",
]


def get_adapter(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for a loaded HF model (its config's `model_type` picks the family)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = FAMILIES.get(str(model_type))
    if spec is None:
        raise UnsupportedFamilyError(
            f"model family {model_type!r} is not supported; supported families: {', '.join(FAMILIES)}"
        )
    return (
        spec.adapter(model) if spec.adapter.family == model_type else spec.adapter(model, family=model_type)
    )
