"""Which model families hilt can load and prune, and the HF classes behind each task."""

from __future__ import annotations

from typing import Literal

Family = Literal["gpt2", "llama", "qwen2", "mistral"]
Task = Literal["sequence-classification", "causal-lm"]

SUPPORTED_FAMILIES: tuple[str, ...] = ("gpt2", "llama", "qwen2", "mistral")
TASKS: tuple[str, ...] = ("sequence-classification", "causal-lm")

# model_type -> (sequence-classification class name, causal-LM class name)
_CLASSES: dict[str, tuple[str, str]] = {
    "gpt2": ("GPT2ForSequenceClassification", "GPT2LMHeadModel"),
    "llama": ("LlamaForSequenceClassification", "LlamaForCausalLM"),
    "qwen2": ("Qwen2ForSequenceClassification", "Qwen2ForCausalLM"),
    "mistral": ("MistralForSequenceClassification", "MistralForCausalLM"),
}


def model_class(family: str, task: str) -> type:
    """The transformers class that builds `family` with the head for `task`."""
    import transformers

    seq_cls, causal = _CLASSES[family]
    return getattr(transformers, seq_cls if task == "sequence-classification" else causal)


def task_from_architectures(family: str, architectures: list[str] | None) -> Task | None:
    """Read the task from a config's `architectures` list; None when it names no head we know."""
    seq_cls, causal = _CLASSES[family]
    for arch in architectures or []:
        if arch == seq_cls or arch.endswith("ForSequenceClassification"):
            return "sequence-classification"
        if arch == causal or arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
            return "causal-lm"
    return None
