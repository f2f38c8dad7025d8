"""Tiny causal LMs and a tiny GGUF file written with the `gguf` package (no real model in tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

EOT = "<|endoftext|>"
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "e r"]


def byte_vocab() -> list[str]:
    """Byte-level BPE tokens: the 256 byte symbols, the merged tokens, and an end-of-text token."""
    tokens = list(bytes_to_unicode().values())
    tokens += ["".join(m.split(" ")) for m in MERGES]
    return [*tokens, EOT]


def tiny_llama_lm(vocab: int, tied: bool = True, seed: int = 0, kv_heads: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
        initializer_range=0.2,
        bos_token_id=vocab - 1,
        eos_token_id=vocab - 1,
    )
    return LlamaForCausalLM(cfg).eval()


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (its convert script's `permute`; transformers reverses it on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_byte_tokenizer(w, tokens: list[str]) -> None:  # noqa: ANN001 - a gguf.GGUFWriter
    """The byte-level BPE tokenizer's GGUF keys, as llama.cpp's converter writes them (the last token
    is the end-of-text control token, serving as BOS and EOS)."""
    import gguf

    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL])
    w.add_token_merges(MERGES)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)


def write_llama_gguf(
    path: Path, model: LlamaForCausalLM, architecture: str = "llama", name: str = "tiny-llama"
) -> Path:
    """Write a LLaMA-family `model` (and the byte-level tokenizer) as an F32 GGUF the way llama.cpp's
    converter does (q/k rows permuted for architecture "llama", as transformers expects)."""
    import gguf

    cfg = model.config
    tokens = byte_vocab()
    assert len(tokens) == cfg.vocab_size
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_pre("smollm")
    _add_byte_tokenizer(w, tokens)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }  # fmt: skip
    heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            for kind in ("weight", "bias"):
                key = f"model.layers.{i}.{hf}.{kind}"
                if key not in sd:
                    continue
                t = sd[key]
                if architecture == "llama" and gg in heads:  # llama.cpp permutes llama q/k rows
                    t = _permute(t, heads[gg])
                w.add_tensor(f"blk.{i}.{gg}.{kind}", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def byte_tokenizer():  # noqa: ANN201 - a transformers GPT2Tokenizer (byte-level BPE, ~260 tokens)
    from transformers import GPT2Tokenizer

    tokens = byte_vocab()
    tok = GPT2Tokenizer(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=[tuple(m.split(" ")) for m in MERGES],
        unk_token=EOT,
        bos_token=EOT,
        eos_token=EOT,
    )
    return tok


def tiny_causal(  # noqa: ANN201
    family: str, vocab: int, seed: int = 0, layers: int = 3, kv_heads: int | None = None
):
    """A tiny random causal LM of one family (llama: GQA 2:1 and tied embeddings; qwen2: biases;
    gemma3: multi-query, like the 270M model). `kv_heads` overrides the family's default."""
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab, n_layer=layers, n_embd=32, n_head=4, n_inner=48, n_positions=64,
            bos_token_id=vocab - 1, eos_token_id=vocab - 1, initializer_range=0.2,
        )  # fmt: skip
        return GPT2LMHeadModel(cfg).eval()
    kw = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=kv_heads or 2, max_position_embeddings=64,
        initializer_range=0.2, bos_token_id=vocab - 1, eos_token_id=vocab - 1, tie_word_embeddings=True,
    )  # fmt: skip
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kw)).eval()
    if family == "mistral":
        from transformers import MistralConfig, MistralForCausalLM

        return MistralForCausalLM(MistralConfig(head_dim=8, sliding_window=64, **kw)).eval()
    if family == "gemma3":  # multi-query (1 KV head unless kv_heads says otherwise), 6-token windows
        from transformers import Gemma3ForCausalLM

        from tests.unit.prune_tiny import gemma3_config

        for key in ("num_attention_heads", "num_key_value_heads"):
            kw.pop(key)
        model = Gemma3ForCausalLM(gemma3_config(kv_heads=kv_heads or 1, **kw)).eval()
        with torch.no_grad():  # Gemma's norms are zero-centred (scale 1 + w): make them matter
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.normal_(0, 0.2)
        return model
    return LlamaForCausalLM(LlamaConfig(**kw)).eval()


def pruned_uneven(family: str = "llama", vocab: int = 64):  # noqa: ANN201
    """A tiny causal LM pruned unevenly: a layer removed, one KV group gone in one layer only, and
    different FFN widths per layer (what a cascade leaves)."""
    from harness.models import get_adapter

    model = tiny_causal(family, vocab, layers=3)
    ad = get_adapter(model)
    ad.remove_layers([0, 2])
    ad.remove_heads(0, [1])  # layer 0: 1 KV group (2 query heads); layer 1 keeps 2 groups
    ad.remove_channels(0, list(range(0, 48, 2)))
    ad.remove_channels(1, list(range(40)))
    return model.eval()


def save_tiny_lm(directory: Path, family: str = "llama", **kw: object) -> Path:
    """A tiny causal LM with its byte-level tokenizer saved to `directory` (what an import writes)."""
    tok = byte_tokenizer()
    model = tiny_causal(family, len(tok), **kw)  # type: ignore[arg-type]
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def tiny_gpt2_for_gguf(vocab: int, seed: int = 0):  # noqa: ANN201
    """A tiny GPT-2 of the shapes transformers assumes reading a GPT-2 GGUF (FFN 4x, 1024 positions)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab, n_layer=2, n_embd=32, n_head=4, n_positions=1024, initializer_range=0.2
    )
    return GPT2LMHeadModel(cfg).eval()


def write_gpt2_gguf(path: Path, model) -> Path:  # noqa: ANN001 - a GPT2LMHeadModel
    """Write a GPT-2 (and the byte-level tokenizer) as an F32 GGUF the way llama.cpp's converter does."""
    import gguf

    cfg, tokens = model.config, byte_vocab()
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_name("tiny-gpt2")
    w.add_context_length(cfg.n_positions)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(4 * cfg.n_embd)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    _add_byte_tokenizer(w, tokens)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["transformer.wte.weight"])
    w.add_tensor("position_embd.weight", sd["transformer.wpe.weight"])
    for kind in ("weight", "bias"):
        w.add_tensor(f"output_norm.{kind}", sd[f"transformer.ln_f.{kind}"])
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        for hf, gg in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm")):
            for kind in ("weight", "bias"):
                w.add_tensor(f"blk.{i}.{gg}.{kind}", sd[f"{p}{hf}.{kind}"])
        for hf, gg in (("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"), ("mlp.c_fc", "ffn_up"),
                       ("mlp.c_proj", "ffn_down")):  # fmt: skip
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(sd[f"{p}{hf}.weight"].T))  # Conv1D
            w.add_tensor(f"blk.{i}.{gg}.bias", sd[f"{p}{hf}.bias"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
