"""Gemma 3 (multi-query attention, GeGLU, q/k norms, pre/post norms, scaled embeddings, sliding-window
layers between global ones) as a family of one file: prune, reload, cascade, and the cached step against
HF's own decode, on tiny random configs made here (the real model is an opt-in import)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.compile.causal import CachedStep, greedy_reference
from harness.models import get_adapter, load_model
from harness.models.families import GGUF_ARCHITECTURES, SUPPORTED_FAMILIES
from harness.models.manifest import count_parameters, export_hf, load_pruned, save_pruned
from harness.prune.cascade import validate_for_model
from harness.prune.schedule import parse_schedule
from harness.sia.structural import structural_verdict
from tests.unit.llm_tiny import byte_tokenizer, tiny_causal
from tests.unit.test_compile_causal import torch_greedy
from tests.unit.test_prune_causal import prune_on_a_log_text

VOCAB = 64


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _mqa_pruned() -> torch.nn.Module:
    """Layers, query heads inside the one KV head, and FFN channels removed, unevenly per layer."""
    model = tiny_causal("gemma3", VOCAB, layers=4)  # sliding, sliding, global, sliding
    ad = get_adapter(model)
    ad.remove_layers([0, 2, 3])  # keeps a global layer between two sliding ones
    ad.remove_query_heads(0, [[1, 3]])  # MQA: the only unit left is the query head
    ad.remove_channels(1, list(range(0, 48, 3)))
    ad.remove_channels(2, list(range(40)))
    return model.eval()


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def test_gemma3_is_found_from_its_one_file() -> None:
    assert "gemma3_text" in SUPPORTED_FAMILIES and "gemma3" in GGUF_ARCHITECTURES
    ad = get_adapter(tiny_causal("gemma3", VOCAB))
    assert (ad.family, ad.gqa, ad.gated_ffn, ad.lora_fan_in_fan_out) == ("gemma3_text", True, True, False)
    verdict = structural_verdict(ad.model)
    assert verdict.attention == "coupled" and verdict.ffn == "gated"
    assert "MQA — 4 query heads share each of 1 K/V heads" in verdict.reasons[0]


def test_mqa_prune_counts_and_reload_keep_the_outputs(tmp_path: Path) -> None:
    dense = tiny_causal("gemma3", VOCAB, layers=4)
    model = _mqa_pruned()
    ad = get_adapter(model)
    assert [ad.attention_shape(i).num_heads for i in range(3)] == [2, 4, 4]
    assert [ad.num_channels(i) for i in range(3)] == [48, 16, 40]
    assert [layer.self_attn.layer_type for layer in ad.layers()] == [
        "sliding_attention", "full_attention", "sliding_attention",
    ]  # fmt: skip
    assert model.config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    assert count_parameters(model) < count_parameters(dense)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    save_pruned(model, tmp_path / "p", "causal-lm")
    reloaded, manifest = load_pruned(tmp_path / "p")
    assert manifest.family == "gemma3_text" and [m.source_index for m in manifest.layers] == [0, 2, 3]
    assert float((_logits(model, ids) - _logits(reloaded, ids)).abs().max()) < 1e-5


def test_a_uniformly_pruned_gemma3_exports_as_a_plain_hf_directory(tmp_path: Path) -> None:
    model = tiny_causal("gemma3", VOCAB, layers=3)
    ad = get_adapter(model)
    ad.remove_layers([1, 2])
    for i in range(2):
        ad.remove_query_heads(i, [[0, 2]])
        ad.remove_channels(i, list(range(24)))
    out = export_hf(model, tmp_path / "hf", "causal-lm")
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (2, 2, 1)
    assert cfg["intermediate_size"] == 24 and cfg["layer_types"] == ["sliding_attention", "full_attention"]
    plain = load_model(out).model
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    assert float((_logits(model, ids) - _logits(plain, ids)).abs().max()) < 1e-5


def test_one_kv_head_warning_names_the_query_head_unit() -> None:
    def sched(**target: object) -> object:
        return parse_schedule({"version": 1, "stages": [{"granularity": "head", "ratio": 0.5, **target}]})

    model = tiny_causal("gemma3", VOCAB)
    assert validate_for_model(model, sched()) == [
        "stage 0: head ratio 0.5 (kv_group) removes nothing: every layer has 1 KV groups and "
        "round(0.5 x that) keeps them all (one KV head per layer: prune query heads inside it with "
        '"attention_unit": "query_head", 4 per group now)'
    ]
    assert validate_for_model(model, sched(attention_unit="query_head")) == []


@pytest.mark.parametrize("variant", ["dense", "pruned"])
def test_prefill_and_16_decode_steps_match_hf_past_the_sliding_window(variant: str) -> None:
    """5 prompt + 16 new tokens run past the 6-token window of the sliding layers."""
    model = tiny_causal("gemma3", VOCAB) if variant == "dense" else _mqa_pruned()
    prompt = np.random.default_rng(0).integers(0, VOCAB, (1, 5))
    ref_ids, ref_logits = greedy_reference(model, prompt, 16)
    step = CachedStep(model, max_len=32)
    assert step.layout.layers == tuple((1, 8) for _ in step.layout.layers)  # one KV head per layer
    ids, logits = torch_greedy(step, prompt, bucket=8, new=16)
    assert ids == ref_ids
    assert max(float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits, strict=True)) <= 1e-4


def test_final_logit_softcapping_is_applied_as_hf_does() -> None:
    model = tiny_causal("gemma3", VOCAB)
    model.config.final_logit_softcapping = 0.5  # tiny: every logit is squashed
    prompt = np.random.default_rng(1).integers(0, VOCAB, (1, 4))
    ref_ids, ref_logits = greedy_reference(model, prompt, 4)
    ids, logits = torch_greedy(CachedStep(model, max_len=16), prompt, bucket=4, new=4)
    assert ids == ref_ids and max(float(np.abs(logits[0]).max()), 0) <= 0.5
    assert max(float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits, strict=True)) <= 1e-5


def test_cascade_on_gemma3_prunes_layers_query_heads_and_channels(tmp_path: Path) -> None:
    """`hilt prune`'s job on an MQA + GeGLU model: every granularity removes something, and the
    saved result reloads with its perplexity."""
    tok = byte_tokenizer()
    src = tmp_path / "lm"
    tiny_causal("gemma3", len(tok), layers=4).save_pretrained(src)
    tok.save_pretrained(src)
    rec = {"steps": 2, "batch_size": 4, "lr": 0.01}
    log = prune_on_a_log_text(
        src,
        tmp_path,
        {"granularity": "layer", "ratio": 0.75, "recovery": rec},
        {"granularity": "head", "ratio": 0.5, "attention_unit": "query_head", "recovery": rec},
        {"granularity": "channel", "ratio": 0.5, "criterion": "wanda", "recovery": rec},
    )
    assert log.warnings == [] and log.final_perplexity is not None
    ad = get_adapter(load_model(tmp_path / "out").model)
    assert ad.num_layers() == 3
    assert [ad.attention_shape(i).num_heads for i in range(3)] == [2, 2, 2]
    assert [ad.num_channels(i) for i in range(3)] == [24, 24, 24]
