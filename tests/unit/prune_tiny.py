"""Tiny random models of every supported family, shared by the models/prune tests."""

from __future__ import annotations

import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    MistralConfig,
    MistralForSequenceClassification,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

VOCAB = 40
PAD = 39
SEQ = 12
FAMILIES = ("gpt2", "llama", "qwen2", "mistral", "gemma3_text")


def tiny_config(family: str, layers: int = 3):
    common = dict(vocab_size=VOCAB, pad_token_id=PAD, num_labels=3, initializer_range=0.2)
    if family == "gpt2":
        return GPT2Config(
            n_layer=layers,
            n_embd=32,
            n_head=4,
            n_inner=48,
            n_positions=32,
            bos_token_id=0,
            eos_token_id=0,
            **common,
        )
    kw = dict(
        hidden_size=32, intermediate_size=40, num_hidden_layers=layers, max_position_embeddings=32, **common
    )
    if family == "llama":
        return LlamaConfig(num_attention_heads=8, num_key_value_heads=2, **kw)  # 4 query heads per KV group
    if family == "qwen2":
        return Qwen2Config(num_attention_heads=4, num_key_value_heads=2, **kw)  # q/k/v biases
    if family == "mistral":
        return MistralConfig(num_attention_heads=6, num_key_value_heads=3, head_dim=4, **kw)
    if family == "gemma3_text":  # GQA 2:1 here (as Gemma 3 4B); the 270M model's MQA has its own tests
        return gemma3_config(kv_heads=2, **kw)
    raise ValueError(family)


def gemma3_config(kv_heads: int = 1, **kw: object):  # noqa: ANN201 - a transformers Gemma3TextConfig
    """A tiny Gemma 3 text config: q/k norms, pre/post norms, GeGLU, and a 6-token sliding window in the
    first two of every three layers (the rest global), each kind with its own rotary base."""
    from transformers import Gemma3TextConfig

    layers = int(kw.pop("num_hidden_layers", 3))  # type: ignore[call-overload]
    kw.setdefault("hidden_size", 32)
    kw.setdefault("intermediate_size", 48)
    kw.setdefault("max_position_embeddings", 64)
    types = ["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(layers)]
    return Gemma3TextConfig(
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=8,
        sliding_window=6, layer_types=types, query_pre_attn_scalar=8, **kw,
    )  # fmt: skip


def tiny_model(family: str, task: str = "sequence-classification", layers: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_config(family, layers)
    classes = {
        ("gpt2", "sequence-classification"): GPT2ForSequenceClassification,
        ("gpt2", "causal-lm"): GPT2LMHeadModel,
        ("llama", "sequence-classification"): LlamaForSequenceClassification,
        ("llama", "causal-lm"): LlamaForCausalLM,
        ("qwen2", "sequence-classification"): Qwen2ForSequenceClassification,
        ("qwen2", "causal-lm"): Qwen2ForCausalLM,
        ("mistral", "sequence-classification"): MistralForSequenceClassification,
        ("gemma3_text", "sequence-classification"): Gemma3TextForSequenceClassification,
        ("gemma3_text", "causal-lm"): Gemma3ForCausalLM,
    }
    model = classes[(family, task)](cfg)
    with torch.no_grad():  # biases (and Gemma's zero-centred norms) start at zero; make them matter
        for name, p in model.named_parameters():
            if name.endswith("bias") or (family == "gemma3_text" and "norm" in name):
                p.normal_(0, 0.2)
    return model.eval()


def tokens(n: int = 4, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB - 1, (n, seq), generator=g)


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits


def write_tiny_task(root) -> dict:  # noqa: ANN001 - a pathlib.Path
    """A saved tiny GPT-2 classifier plus calib/val .npz files: what the tuner tests tune on."""
    import numpy as np

    tiny_model("gpt2", layers=3).save_pretrained(root / "tiny")
    for name, seed in (("calib", 1), ("val", 2)):
        np.savez(
            root / f"{name}.npz",
            input_ids=tokens(n=64, seed=seed).numpy(),
            labels=(torch.arange(64) % 3).numpy(),
        )
    return {"root": root, "model": root / "tiny", "calib": root / "calib.npz", "val": root / "val.npz"}
