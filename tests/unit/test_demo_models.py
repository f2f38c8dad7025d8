"""Demo model configs, the training loop (micro models only), HF round-trip, caching and records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from harness.data import load_demo_split
from harness.demo import configs, models, package
from harness.demo.configs import TrainConfig, gpt2_config, llama_config, micro_config
from harness.demo.models import (
    DEMO_MODELS,
    demo_model_dir,
    ensure_demo_model,
    read_record,
)
from harness.demo.train import lr_at, train_classifier
from harness.errors import DataError, ModelLoadError
from harness.evaluate import evaluate_classifier


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path))
    torch.set_num_threads(1)
    return tmp_path


@pytest.fixture
def _micro(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Demo names map to micro configs and a short recipe, so the full pipeline runs in seconds."""
    monkeypatch.setattr(models, "MODEL_CONFIGS", {n: (lambda n=n: micro_config(n)) for n in DEMO_MODELS})
    quick = TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup_steps=5, train_windows=200, eval_windows=50)
    monkeypatch.setattr(models, "TRAIN_CONFIGS", {n: quick for n in DEMO_MODELS})
    monkeypatch.setattr(package, "WEIGHTS_ROOT", tmp_path / "no-packaged-weights")  # train, don't install


def _params(cfg) -> int:
    return sum(p.numel() for p in AutoModelForSequenceClassification.from_config(cfg).parameters())


def test_full_demo_architectures_meet_the_brief() -> None:
    g, ll = gpt2_config(), llama_config()
    pg, pl = _params(g), _params(ll)
    assert 3e6 <= pg <= 6e6 and 3e6 <= pl <= 6e6 and abs(pg - pl) / pg < 0.1
    assert 6 <= g.n_layer <= 12 and 6 <= ll.num_hidden_layers <= 12
    assert g.activation_function.startswith("gelu") and g.n_inner > g.n_embd
    assert ll.num_attention_heads // ll.num_key_value_heads == 4 and ll.hidden_act == "silu"
    assert g.pad_token_id == ll.pad_token_id == 0 and g.num_labels == ll.num_labels == 10


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.5) and lr_at(100, cfg) == pytest.approx(0.0)


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_hf_round_trip_gives_identical_logits(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(micro_config(name)).eval()
    ids = load_demo_split("calib", 8).input_ids
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert type(again) is type(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_micro_training_learns_the_task_and_is_seeded() -> None:
    train = load_demo_split("train", 1200)
    val = load_demo_split("val", 300)
    cfg = TrainConfig(steps=150, batch_size=32, lr=3e-3, warmup_steps=10, seed=7)
    result = train_classifier(micro_config("demo-gpt2"), train, cfg, progress=False)
    acc = evaluate_classifier(result.model, val).accuracy
    assert acc > 0.6, f"micro model reached only {acc:.2%} (chance 10%)"
    short = TrainConfig(steps=5, batch_size=8, seed=3)
    a = train_classifier(micro_config("demo-llama"), train, short, progress=False).model
    b = train_classifier(micro_config("demo-llama"), train, short, progress=False).model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.usefixtures("_micro")
def test_ensure_trains_once_then_reuses_the_cache(_cache: Path) -> None:
    path = ensure_demo_model("demo-llama", progress=False)
    assert path == demo_model_dir("demo-llama") and path.is_relative_to(_cache)
    rec = read_record(path)
    assert rec.name == "demo-llama" and rec.steps == 40 and rec.test_windows == 50
    assert sum(map(sum, rec.test_confusion)) == 50 and len(rec.test_per_class_accuracy) == 10
    assert 0.0 <= rec.test_accuracy <= 1.0 and rec.train_seconds > 0
    loaded = AutoModelForSequenceClassification.from_pretrained(path)
    assert type(loaded).__name__ == "LlamaForSequenceClassification"
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    ensure_demo_model("demo-llama", progress=False)
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    ensure_demo_model("demo-llama", force=True, progress=False)
    assert (path / "model.safetensors").stat().st_mtime_ns != stamp
    assert not path.with_name("demo-llama.partial").exists()


@pytest.mark.usefixtures("_micro")
def test_incomplete_model_dir_is_retrained() -> None:
    d = demo_model_dir("demo-gpt2")
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    ensure_demo_model("demo-gpt2", progress=False)
    assert read_record(d).name == "demo-gpt2"


def test_unknown_demo_name() -> None:
    with pytest.raises(ModelLoadError, match="unknown demo model 'demo-bert'"):
        demo_model_dir("demo-bert")


def test_training_config_defaults_are_the_recorded_recipe() -> None:
    assert configs.TRAIN_CONFIGS["demo-gpt2"].batch_size == 32


@pytest.mark.parametrize(
    ("content", "exc", "match"),
    [
        (None, ModelLoadError, "has no hilt_demo.json"),
        ("{not json", DataError, "not valid JSON"),
        (json.dumps({"version": 99}), DataError, "version 99"),
        (json.dumps({"version": 1, "name": "x"}), DataError, "malformed"),
    ],
)
def test_bad_records(tmp_path: Path, content: str | None, exc: type, match: str) -> None:
    if content is not None:
        (tmp_path / "hilt_demo.json").write_text(content)
    with pytest.raises(exc, match=match):
        read_record(tmp_path)
