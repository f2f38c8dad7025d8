"""`hilt demo train` / `hilt demo run` through the real CLI entry point (micro models in a temp cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.cli.main import main
from harness.demo import models, package
from harness.demo.configs import TrainConfig, micro_config
from harness.demo.models import DEMO_MODELS, demo_model_dir


@pytest.fixture(autouse=True)
def _micro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    torch.set_num_threads(1)
    monkeypatch.setattr(models, "MODEL_CONFIGS", {n: (lambda n=n: micro_config(n)) for n in DEMO_MODELS})
    quick = TrainConfig(steps=20, batch_size=16, warmup_steps=2, train_windows=100, eval_windows=30)
    monkeypatch.setattr(models, "TRAIN_CONFIGS", {n: quick for n in DEMO_MODELS})
    monkeypatch.setattr(package, "WEIGHTS_ROOT", tmp_path / "no-packaged-weights")  # train, don't install


def test_train_then_run_prints_accuracy_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "train", "--model", "all", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for name in DEMO_MODELS:
        assert name in out and demo_model_dir(name).is_dir()
    assert "test acc" in out and "per-class test accuracy" in out and "ball-1.4" in out
    stamp = (demo_model_dir("demo-gpt2") / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "run", "--trials", "0", "--no-emulated"]) == 0  # models only: tuning is integration
    out = capsys.readouterr().out
    assert "demo-gpt2" in out and "demo-llama" in out and "normal" in out
    assert (demo_model_dir("demo-gpt2") / "model.safetensors").stat().st_mtime_ns == stamp


def test_force_retrains_only_the_named_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "train", "--model", "demo-llama"]) == 0
    assert not demo_model_dir("demo-gpt2").exists()
    stamp = (demo_model_dir("demo-llama") / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "train", "--model", "demo-llama", "--force"]) == 0
    assert (demo_model_dir("demo-llama") / "model.safetensors").stat().st_mtime_ns != stamp
    assert "demo-llama" in capsys.readouterr().out


def test_unknown_model_is_one_red_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "train", "--model", "demo-bert"]) == 2
    err = capsys.readouterr().err
    assert "unknown demo model 'demo-bert'" in err and err.strip().count("\n") == 0


def test_corrupt_record_is_one_red_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "train", "--model", "demo-gpt2"]) == 0
    (demo_model_dir("demo-gpt2") / "hilt_demo.json").write_text("{broken")
    capsys.readouterr()
    assert main(["demo", "train", "--model", "demo-gpt2"]) == 2
    err = capsys.readouterr().err
    assert "not valid JSON" in err and err.strip().count("\n") == 0
