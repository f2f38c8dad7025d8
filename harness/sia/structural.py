"""Structural verdict: which granularities the architecture itself couples, and why, in words."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from harness.models.adapters import get_adapter

GATED_ACTS = {"silu", "swish", "gelu_pytorch_tanh_gated"}


@dataclass
class StructuralVerdict:
    """What the config alone says about independence of heads, FFN channels and layers."""

    family: str
    attention: str  # "independent" | "coupled"
    ffn: str  # "single-path" | "gated"
    coupled: list[str] = field(default_factory=list)  # granularities structurally coupled
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "family": self.family,
            "attention": self.attention,
            "ffn": self.ffn,
            "coupled": list(self.coupled),
            "reasons": list(self.reasons),
            "notes": list(self.notes),
        }


def structural_verdict(model: nn.Module) -> StructuralVerdict:
    """Read independence off the architecture: MHA vs GQA/MQA attention, single-path vs gated FFN."""
    adapter = get_adapter(model)
    cfg = model.config
    n_heads = adapter.attention_shape(0).num_heads
    n_kv = adapter.attention_shape(0).num_kv_groups
    verdict = StructuralVerdict(family=adapter.family, attention="independent", ffn="single-path")
    if adapter.gqa and n_kv < n_heads:
        kind = "MQA" if n_kv == 1 else "GQA"
        verdict.attention = "coupled"
        verdict.coupled.append("head")
        verdict.reasons.append(
            f"head: {kind} — {n_heads // n_kv} query heads share each of {n_kv} K/V heads, so removing "
            "one query head changes what its K/V projection is worth to the others; the unit is the KV group"
        )
    else:
        verdict.reasons.append(
            f"head: MHA — each of {n_heads} heads has its own Q/K/V and writes its own slice of the "
            "output projection's input"
        )
    act = getattr(cfg, "activation_function", None) or getattr(cfg, "hidden_act", "?")
    if adapter.gated_ffn:
        verdict.ffn = "gated"
        verdict.coupled.append("channel")
        verdict.reasons.append(
            f"channel: gated FFN ({act}(gate) × up) — each channel is a product of two projections, so "
            "its contribution is multiplicative rather than a single path"
        )
    else:
        verdict.reasons.append(
            f"channel: single-path FFN ({act}) — each channel is one column in, one row out"
        )
    verdict.notes.append(
        "layer: every family couples layers through the residual stream; only the empirical test can say "
        "whether single-layer scores add up"
    )
    if getattr(cfg, "tie_word_embeddings", False) and type(model).__name__.endswith("ForCausalLM"):
        verdict.notes.append("embeddings are tied to the LM head: they are never pruned")
    return verdict
