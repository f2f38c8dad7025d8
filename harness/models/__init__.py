"""Model loading and architecture adapters (GPT-2, LLaMA, Qwen2, Mistral)."""

from harness.models.adapters import ArchitectureAdapter, AttentionShape, PruneError, get_adapter
from harness.models.families import SUPPORTED_FAMILIES
from harness.models.loading import LoadedModel, load_model

__all__ = [
    "SUPPORTED_FAMILIES",
    "ArchitectureAdapter",
    "AttentionShape",
    "LoadedModel",
    "PruneError",
    "get_adapter",
    "load_model",
]
