"""Architecture adapters: one per family, chosen from the model's config."""

from __future__ import annotations

from torch import nn

from harness.errors import UnsupportedFamilyError
from harness.models.adapters.base import (
    ArchitectureAdapter,
    AttentionShape,
    LayerSource,
    PruneError,
)
from harness.models.adapters.gpt2 import GPT2Adapter
from harness.models.adapters.llama import LlamaAdapter
from harness.models.families import SUPPORTED_FAMILIES

__all__ = ["ArchitectureAdapter", "AttentionShape", "LayerSource", "PruneError", "get_adapter"]


def get_adapter(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for a loaded HF model (its config's `model_type` picks the family)."""
    family = getattr(getattr(model, "config", None), "model_type", None)
    if family == "gpt2":
        return GPT2Adapter(model)
    if family in ("llama", "qwen2", "mistral"):
        return LlamaAdapter(model, family=family)
    raise UnsupportedFamilyError(
        f"model family {family!r} is not supported; supported families: {', '.join(SUPPORTED_FAMILIES)}"
    )
