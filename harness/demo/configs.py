"""Architectures and training settings of the two demo models (same size, different attention/FFN).

demo-gpt2: MHA + GELU, 8 layers, width 192, 4 heads, FFN 768 (about 3.6 M parameters).
demo-llama: GQA (8 query heads on 2 KV heads, so 4 query heads per KV head) + SwiGLU 640 (about 3.7 M).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GPT2Config, LlamaConfig, PretrainedConfig

from harness.data.simulator import class_names
from harness.data.tokenizer import PAD_ID, VOCAB_SIZE

MAX_POSITIONS = 128


@dataclass(frozen=True)
class TrainConfig:
    """Seeded training recipe (AdamW, linear warm-up then cosine decay)."""

    steps: int = 900
    batch_size: int = 32
    lr: float = 2.5e-3
    weight_decay: float = 0.01
    warmup_steps: int = 60
    grad_clip: float = 1.0
    seed: int = 1234
    train_windows: int | None = None  # None: the split's default size
    eval_windows: int | None = None  # test/val windows to score on; None: the splits' default sizes


def _labels() -> dict:
    names = class_names()
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
        "problem_type": "single_label_classification",
    }


def gpt2_config(n_layer: int = 8, n_embd: int = 192, n_head: int = 4, n_inner: int = 768) -> GPT2Config:
    return GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=MAX_POSITIONS,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        n_inner=n_inner,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=PAD_ID,
        bos_token_id=None,
        eos_token_id=None,
        **_labels(),
    )


def llama_config(
    layers: int = 8, hidden: int = 192, heads: int = 8, kv_heads: int = 2, intermediate: int = 640
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        hidden_act="silu",
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        attention_dropout=0.0,
        pad_token_id=PAD_ID,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
        **_labels(),
    )


def micro_config(name: str) -> PretrainedConfig:
    """A tiny model of the same family, for tests that must train in seconds."""
    if name == "demo-gpt2":
        return gpt2_config(n_layer=2, n_embd=32, n_head=2, n_inner=64)
    return llama_config(layers=2, hidden=32, heads=4, kv_heads=1, intermediate=64)


MODEL_CONFIGS = {"demo-gpt2": gpt2_config, "demo-llama": llama_config}
TRAIN_CONFIGS = {"demo-gpt2": TrainConfig(), "demo-llama": TrainConfig()}
