"""Packaged demo weights: fp16 export with its sha256 list, verified install (upcast), refusal on damage,
and the order cache → package → training. Micro models only; the real packages are checked for shape."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from harness.cli.main import main
from harness.data import load_demo_split
from harness.demo import models, package
from harness.demo.configs import TrainConfig, micro_config
from harness.demo.models import DEMO_MODELS, demo_model_dir, provide_demo_model, read_record, train_demo_model
from harness.demo.package import (
    MANIFEST_FILE,
    export_package,
    has_package,
    install_package,
    package_dir,
    read_manifest,
    verify_package,
)
from harness.errors import ModelLoadError
from harness.evaluate import evaluate_classifier

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _micro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Micro demo models, a temp cache, and a temp package root (the real weights stay untouched)."""
    monkeypatch.setenv("HILT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    torch.set_num_threads(1)
    monkeypatch.setattr(models, "MODEL_CONFIGS", {n: (lambda n=n: micro_config(n)) for n in DEMO_MODELS})
    quick = TrainConfig(steps=20, batch_size=16, warmup_steps=2, train_windows=100, eval_windows=40)
    monkeypatch.setattr(models, "TRAIN_CONFIGS", {n: quick for n in DEMO_MODELS})
    root = tmp_path / "weights"
    monkeypatch.setattr(package, "WEIGHTS_ROOT", root)
    return root


def _packaged(name: str, tmp_path: Path) -> Path:
    trained, _ = train_demo_model(name, progress=False, out_dir=tmp_path / f"trained-{name}")
    export_package(name, trained, eval_windows=40)
    return trained


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_export_writes_fp16_with_hashes_and_the_round_trip_accuracy(name: str, tmp_path: Path) -> None:
    trained = _packaged(name, tmp_path)
    pkg = package_dir(name)
    tensors = load_file(str(pkg / "model.safetensors"))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    manifest = read_manifest(pkg)
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "hilt_demo.json"}
    assert verify_package(pkg) == manifest["files"]
    rec = read_record(pkg)
    assert rec.source == "package" and rec.test_windows == 40
    # the recorded fp16 accuracy is what the shipped weights score, measured again here
    model = AutoModelForSequenceClassification.from_pretrained(trained)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    again = evaluate_classifier(model.eval(), load_demo_split("test", 40))
    assert rec.fp16_test_accuracy == pytest.approx(again.accuracy)
    assert rec.dense_accuracy == rec.fp16_test_accuracy


def test_install_upcasts_and_gives_the_fp16_logits(tmp_path: Path) -> None:
    trained = _packaged("demo-gpt2", tmp_path)
    path, how = provide_demo_model("demo-gpt2")
    assert how == "package" and path == demo_model_dir("demo-gpt2")
    installed = load_file(str(path / "model.safetensors"))
    shipped = load_file(str(package_dir("demo-gpt2") / "model.safetensors"))
    assert all(
        installed[k].dtype == torch.float32 and torch.equal(installed[k], shipped[k].float()) for k in shipped
    )
    ids = load_demo_split("calib", 16).input_ids
    a = AutoModelForSequenceClassification.from_pretrained(path).eval()
    b = AutoModelForSequenceClassification.from_pretrained(trained).eval()
    with torch.no_grad():
        la, lb = a(input_ids=ids).logits, b(input_ids=ids).logits
    assert not torch.equal(la, lb) and torch.allclose(la, lb, atol=5e-2)  # fp16-rounded, not retrained
    assert provide_demo_model("demo-gpt2")[1] == "cached"


def test_no_package_means_training_and_force_always_trains(tmp_path: Path) -> None:
    assert not has_package("demo-llama")
    assert provide_demo_model("demo-llama")[1] == "trained"
    _packaged("demo-llama", tmp_path)
    assert provide_demo_model("demo-llama", force=True)[1] == "trained"
    assert read_record(demo_model_dir("demo-llama")).source == "trained"


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "hilt_demo.json"])
def test_a_damaged_package_is_refused_in_one_line(
    victim: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _packaged("demo-gpt2", tmp_path)
    file = package_dir("demo-gpt2") / victim
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256 .* does not match the recorded"):
        install_package("demo-gpt2", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    capsys.readouterr()
    assert main(["demo", "train", "--model", "demo-gpt2"]) == 2
    err = capsys.readouterr().err
    assert "refusing the corrupt demo weights" in err and err.strip().count("\n") == 0
    assert not demo_model_dir("demo-gpt2").exists()


def test_missing_packaged_file_is_refused(tmp_path: Path) -> None:
    _packaged("demo-gpt2", tmp_path)
    (package_dir("demo-gpt2") / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        provide_demo_model("demo-gpt2")


def test_cli_force_retrain_compares_with_the_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _packaged("demo-llama", tmp_path)
    capsys.readouterr()
    assert main(["demo", "train", "--model", "demo-llama", "--force", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    # same seed, same recipe, same machine: the retrain reproduces the packaged weights bit for bit
    assert "(+0.00 pp)" in out and "bit-identical to the packaged ones" in out
    assert main(["demo", "train", "--model", "demo-llama", "--package"]) == 0
    out = capsys.readouterr().out
    assert "after the fp16 round trip" in out and "test acc (fp16)" in out


# ---- the weights committed in the repository -------------------------------------------------------------


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_committed_packages_are_complete_and_meet_the_accuracy_bar(name: str) -> None:
    pkg = REPO / "harness" / "demo" / "weights" / name
    if not (pkg / MANIFEST_FILE).is_file():
        pytest.skip(f"{name} is not packaged in this checkout")
    verify_package(pkg)
    rec = read_record(pkg)
    assert rec.source == "package" and rec.name == name and rec.test_windows == 4000
    assert rec.fp16_test_accuracy is not None and rec.fp16_test_accuracy >= 0.93
    assert abs(rec.fp16_test_accuracy - rec.test_accuracy) < 0.005
    assert (
        json.loads((pkg / "config.json").read_text())["num_hidden_layers" if "llama" in name else "n_layer"]
        == 8
    )
    assert (pkg / "model.safetensors").stat().st_size < 8_000_000


def test_committed_weights_are_not_git_ignored() -> None:
    """hatch's wheel takes every file under harness/ that git does not ignore: the weights must be there."""
    paths = [f"harness/demo/weights/{n}/model.safetensors" for n in DEMO_MODELS]
    proc = subprocess.run(
        ["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.stdout.strip() == "", f"git ignores {proc.stdout.split()}"
