"""Which model families hilt can load and prune, and the HF classes behind each task (read off the
adapter modules' `FAMILY` specs)."""

from __future__ import annotations

from typing import Literal

import transformers

from harness.models.adapters import FAMILIES

Family = str
Task = Literal["sequence-classification", "causal-lm"]

SUPPORTED_FAMILIES: tuple[str, ...] = tuple(FAMILIES)
TASKS: tuple[str, ...] = ("sequence-classification", "causal-lm")
# GGUF `general.architecture` values hilt imports (each family names its own)
GGUF_ARCHITECTURES: tuple[str, ...] = tuple(
    sorted({arch for spec in FAMILIES.values() for arch in spec.gguf_architectures})
)


def model_class(family: str, task: str) -> type:
    """The transformers class that builds `family` with the head for `task`."""
    seq_cls, causal = FAMILIES[family].classes[family]
    return getattr(transformers, seq_cls if task == "sequence-classification" else causal)


def task_from_architectures(family: str, architectures: list[str] | None) -> Task | None:
    """Read the task from a config's `architectures` list; None when it names no head we know."""
    seq_cls, causal = FAMILIES[family].classes[family]
    for arch in architectures or []:
        if arch == seq_cls or arch.endswith("ForSequenceClassification"):
            return "sequence-classification"
        if arch == causal or arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
            return "causal-lm"
    return None
