"""Gemma 3 through the compile pipeline: a tiny random MQA + GeGLU model with sliding-window layers,
pruned (layers, query heads, FFN channels), compiled as a classifier and as a causal LM for x86_64 and,
under qemu-user, aarch64 and riscv64; hilt-runner's outputs equal PyTorch's (logits <= 1e-4, greedy ids
over 16 steps that run past the sliding window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.compile import CompileOptions, compile_model
from harness.compile.causal import greedy_reference
from harness.models import get_adapter, load_model
from harness.models.manifest import save_pruned
from tests.integration.test_compile_bundles import _check_on
from tests.integration.test_compile_causal_bundle import _runner
from tests.unit.llm_tiny import tiny_causal
from tests.unit.prune_tiny import PAD, tiny_model

ARCHES = [("x86_64", "local"), ("aarch64", "qemu-aarch64"), ("riscv64", "qemu-riscv64")]


def _prune(model: torch.nn.Module) -> torch.nn.Module:
    ad = get_adapter(model)
    ad.remove_layers([0, 1, 2])  # sliding, sliding, global
    shape = ad.attention_shape(0)
    ad.remove_query_heads(0, [list(range(0, shape.heads_per_group, 2))] * shape.num_kv_groups)
    ad.remove_channels(1, list(range(0, ad.num_channels(1), 2)))
    return model.eval()


@pytest.fixture(scope="module")
def gemma_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gemma3") / "lm"
    save_pruned(_prune(tiny_causal("gemma3", 64, layers=4)), path, "causal-lm")
    return path


@pytest.fixture(scope="module")
def gemma_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gemma3") / "cls"
    model = _prune(tiny_model("gemma3_text", layers=4))
    assert model.config.pad_token_id == PAD
    save_pruned(model, path, "sequence-classification")
    return path


@pytest.mark.parametrize(("arch", "profile"), ARCHES)
def test_pruned_gemma3_causal_bundle_generates_pytorchs_tokens(
    gemma_lm: Path, arch: str, profile: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    bundle = compile_model(gemma_lm, profile, CompileOptions(seq_len=8, cache_len=32)).bundle
    causal = bundle.metadata.causal
    assert bundle.metadata.arch == arch and causal is not None
    assert causal.cache == [(1, 8)] * 3  # one KV head per layer
    ref_ids, ref_logits = greedy_reference(load_model(gemma_lm).model, bundle.input_array(), 16)
    dump = tmp_path / "logits.bin"
    code, out = _runner(bundle.directory, "--new-tokens", "16", "--dump-output", str(dump), arch=arch)
    assert code == 0 and out["generated_ids"] == ref_ids, out
    logits = np.fromfile(dump, dtype="<f4").reshape(16, causal.vocab)
    assert float(np.abs(logits - np.stack(ref_logits)).max()) <= 1e-4


@pytest.mark.parametrize(("arch", "profile"), ARCHES)
def test_pruned_gemma3_classifier_bundle_matches_pytorch(
    gemma_classifier: Path, arch: str, profile: str, tmp_path: Path
) -> None:
    bundle = _check_on(arch, profile, gemma_classifier, tmp_path)
    assert bundle.metadata.model_family == "gemma3_text"
