"""Manifest round trip (non-uniform widths), its errors, and export to a plain HF dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from harness.errors import ModelLoadError
from harness.models import get_adapter, load_model
from harness.models.manifest import MANIFEST_FILE, WEIGHTS_FILE, build_manifest, export_hf, save_pruned
from tests.unit.prune_tiny import FAMILIES, logits, tiny_model, tokens


def _prune_unevenly(model) -> None:
    ad = get_adapter(model)
    shape = ad.attention_shape(0)
    if shape.heads_per_group > 1:
        ad.remove_query_heads(0, [[shape.heads_per_group - 1]] * shape.num_kv_groups)
    ad.remove_heads(1, [shape.num_kv_groups - 1])
    ad.remove_channels(0, [2, 3, 9])
    ad.remove_channels(2, list(range(0, ad.num_channels(2), 2)))
    ad.remove_layers([0, 2, 3])


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_exact_with_non_uniform_widths(family: str, tmp_path: Path) -> None:
    model, ids = tiny_model(family, layers=4), tokens()
    _prune_unevenly(model)
    manifest = save_pruned(model, tmp_path / "p", "sequence-classification")
    assert not manifest.is_uniform()
    assert [m.source_index for m in manifest.layers] == [0, 2, 3]
    loaded = load_model(tmp_path / "p")
    assert loaded.family == family and loaded.task == "sequence-classification"
    assert float((logits(model, ids) - logits(loaded.model, ids)).abs().max()) <= 1e-6
    # the loaded model can be pruned further and saved again with the same original indices
    again = build_manifest(loaded.model, "sequence-classification")
    assert again == manifest


def test_causal_lm_round_trip_with_tied_embeddings(tmp_path: Path) -> None:
    model, ids = tiny_model("gpt2", task="causal-lm"), tokens()
    get_adapter(model).remove_channels(1, [0, 1, 2])
    save_pruned(model, tmp_path / "p", "causal-lm")
    loaded = load_model(tmp_path / "p")
    assert loaded.task == "causal-lm"
    assert torch.equal(logits(model, ids), logits(loaded.model, ids))


def test_no_pickle_written(tmp_path: Path) -> None:
    model = tiny_model("llama")
    get_adapter(model).remove_layers([1])
    save_pruned(model, tmp_path / "p", "sequence-classification")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(
        ["config.json", MANIFEST_FILE, WEIGHTS_FILE]
    )


def test_manifest_errors(tmp_path: Path) -> None:
    model = tiny_model("llama")
    get_adapter(model).remove_channels(0, [0, 1])
    out = tmp_path / "p"
    save_pruned(model, out, "sequence-classification")
    good = json.loads((out / MANIFEST_FILE).read_text())

    bad = dict(good, version=7)
    (out / MANIFEST_FILE).write_text(json.dumps(bad))
    with pytest.raises(ModelLoadError, match="invalid pruning manifest at version"):
        load_model(out)

    bad = json.loads(json.dumps(good))
    bad["layers"][0]["q_heads"] = [0, 1, 4]  # unequal query heads per KV group
    (out / MANIFEST_FILE).write_text(json.dumps(bad))
    with pytest.raises(ModelLoadError, match="unequal numbers of query heads"):
        load_model(out)

    bad = json.loads(json.dumps(good))
    bad["layers"][0]["source_index"] = 9
    (out / MANIFEST_FILE).write_text(json.dumps(bad))
    with pytest.raises(ModelLoadError, match="layer 9 does not exist"):
        load_model(out)

    (out / MANIFEST_FILE).write_text(json.dumps(good))
    state = load_file(str(out / WEIGHTS_FILE))
    state["model.layers.0.mlp.down_proj.weight"] = torch.zeros(32, 5)
    save_file(state, str(out / WEIGHTS_FILE))
    with pytest.raises(ModelLoadError, match="weights do not match the pruning manifest"):
        load_model(out)

    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        load_model(out)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_export_uniform_to_plain_hf(family: str, tmp_path: Path) -> None:
    model, ids = tiny_model(family, layers=3), tokens()
    ad = get_adapter(model)
    for i in range(3):
        ad.remove_channels(i, list(range(0, ad.num_channels(i), 2)))
        if family != "gpt2":
            ad.remove_heads(i, [0])
    ad.remove_layers([0, 2])
    export_hf(model, tmp_path / "hf", "sequence-classification")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert float((logits(model, ids) - logits(plain, ids)).abs().max()) <= 1e-6
    assert float((logits(model, ids) - logits(load_model(tmp_path / "hf").model, ids)).abs().max()) <= 1e-6


def test_export_refuses_non_uniform_and_gpt2_heads(tmp_path: Path) -> None:
    model = tiny_model("llama")
    get_adapter(model).remove_channels(0, [0])
    with pytest.raises(ModelLoadError, match="per-layer widths differ"):
        export_hf(model, tmp_path / "a", "sequence-classification")
    model = tiny_model("gpt2")
    ad = get_adapter(model)
    for i in range(3):
        ad.remove_heads(i, [0, 1])
    with pytest.raises(ModelLoadError, match="GPT-2 ties head_dim"):
        export_hf(model, tmp_path / "b", "sequence-classification")
