"""Loading a user's HF checkpoint dir: every family and head, and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.errors import ModelLoadError, UnsupportedFamilyError
from harness.models import get_adapter, load_model
from tests.unit.prune_tiny import FAMILIES, logits, tiny_model, tokens

CASES = [(f, "sequence-classification") for f in FAMILIES] + [
    (f, "causal-lm") for f in ("gpt2", "llama", "qwen2")
]


@pytest.mark.parametrize(("family", "task"), CASES)
def test_loads_every_family_and_head(family: str, task: str, tmp_path: Path) -> None:
    model, ids = tiny_model(family, task=task), tokens()
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert (loaded.family, loaded.task, loaded.source) == (family, task, tmp_path)
    assert torch.equal(logits(model, ids), logits(loaded.model, ids))
    assert get_adapter(loaded.model).family == family


def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelLoadError, match="is not a directory"):
        load_model(tmp_path / "file")


def test_missing_or_bad_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(tmp_path)


def test_unsupported_family_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(
        UnsupportedFamilyError, match=r"'bert' is not supported; supported families: gemma3_text, gpt2, llama"
    ):
        load_model(tmp_path)


def test_weights_not_matching_config(tmp_path: Path) -> None:
    tiny_model("llama").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ModelLoadError, match=r"weights do not match config.json \(\d+ tensors\), e.g. model.layers"
    ):
        load_model(tmp_path)


def test_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    tiny_model("gpt2").save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    state = load_file(str(path))
    state.pop("transformer.h.1.mlp.c_fc.weight")
    save_file(state, str(path))
    with pytest.raises(ModelLoadError, match="tensor transformer.h.1.mlp.c_fc.weight is missing"):
        load_model(tmp_path)
    state["extra.weight"] = torch.zeros(2)
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(32, 48)
    save_file(state, str(path))
    with pytest.raises(ModelLoadError, match="unexpected tensor extra.weight"):
        load_model(tmp_path)


def test_no_weights_or_only_pickle(tmp_path: Path) -> None:
    tiny_model("gpt2").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        load_model(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_model(tmp_path)


def test_corrupt_weights(tmp_path: Path) -> None:
    tiny_model("gpt2").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_model(tmp_path)


def test_sharded_checkpoint(tmp_path: Path) -> None:
    model, ids = tiny_model("qwen2"), tokens()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert torch.equal(logits(model, ids), logits(load_model(tmp_path).model, ids))
