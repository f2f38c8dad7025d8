"""The demo models: where they live, and training them once (cached) when they are missing.

Each is a standard HF directory (config.json + model.safetensors) that
`AutoModelForSequenceClassification.from_pretrained` loads, plus `hilt_demo.json`: how it was trained and
its dense accuracy on the held-out test split.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers

from harness.data import load_demo_split
from harness.data.cache import cache_root
from harness.demo.configs import MODEL_CONFIGS, TRAIN_CONFIGS, TrainConfig
from harness.demo.train import train_classifier
from harness.errors import DataError, ModelLoadError
from harness.evaluate import EvalResult, evaluate_classifier

log = logging.getLogger(__name__)

DEMO_MODELS = ("demo-gpt2", "demo-llama")
RECORD_FILE = "hilt_demo.json"
RECORD_VERSION = 1

__all__ = [
    "DEMO_MODELS",
    "cache_root",
    "demo_model_dir",
    "ensure_demo_model",
    "provide_demo_model",
    "read_record",
    "DemoRecord",
]


@dataclass
class DemoRecord:
    """How a demo model was trained and how it scores on the test split (stored beside the weights)."""

    name: str
    params: int
    layers: int
    train_seconds: float
    steps: int
    batch_size: int
    lr: float
    seed: int
    train_windows: int
    torch_threads: int
    test_accuracy: float
    test_per_class_accuracy: list[float]
    test_confusion: list[list[int]]
    test_mean_loss: float
    test_windows: int
    val_accuracy: float
    class_names: list[str]
    versions: dict[str, str] = field(default_factory=dict)
    train_cpu_seconds: float | None = (
        None  # CPU time of the training loop (wall time suffers from contention)
    )
    # "trained": this directory holds the fp32 weights training wrote; "package": the fp16 weights
    # shipped in harness/demo/weights, upcast to fp32, whose accuracy is the fp16_* fields below
    source: str = "trained"
    fp16_test_accuracy: float | None = None
    fp16_test_per_class_accuracy: list[float] | None = None
    fp16_test_mean_loss: float | None = None
    fp16_val_accuracy: float | None = None
    version: int = RECORD_VERSION

    @property
    def dense_accuracy(self) -> float:
        """Test accuracy of the weights in this directory (after the fp16 round trip when packaged)."""
        if self.source == "package" and self.fp16_test_accuracy is not None:
            return self.fp16_test_accuracy
        return self.test_accuracy

    @property
    def dense_per_class_accuracy(self) -> list[float]:
        if self.source == "package" and self.fp16_test_per_class_accuracy is not None:
            return self.fp16_test_per_class_accuracy
        return self.test_per_class_accuracy


def _check_name(name: str) -> None:
    if name not in DEMO_MODELS:
        raise ModelLoadError(f"unknown demo model {name!r}; choose one of {', '.join(DEMO_MODELS)}")


def demo_model_dir(name: str) -> Path:
    """Directory of a demo model in the cache (may not exist yet)."""
    _check_name(name)
    return cache_root() / "models" / name


def read_record(path: Path) -> DemoRecord:
    """The training record of a demo model directory."""
    file = Path(path) / RECORD_FILE
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path} has no {RECORD_FILE}; retrain with `hilt demo train --force`") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{file} is not valid JSON ({exc}); retrain with `hilt demo train --force`") from exc
    if raw.get("version") != RECORD_VERSION:
        raise DataError(f"{file} has version {raw.get('version')!r}, expected {RECORD_VERSION}; retrain")
    try:
        return DemoRecord(**raw)
    except TypeError as exc:
        raise DataError(f"{file} is malformed ({exc}); retrain with `hilt demo train --force`") from exc


def _is_complete(d: Path) -> bool:
    return (
        (d / "config.json").is_file() and (d / "model.safetensors").is_file() and (d / RECORD_FILE).is_file()
    )


def train_demo_model(
    name: str, *, cfg: TrainConfig | None = None, progress: bool = True, out_dir: Path | None = None
) -> tuple[Path, DemoRecord]:
    """Train one demo model from scratch, evaluate it on the test split, and save it atomically."""
    _check_name(name)
    cfg = cfg or TRAIN_CONFIGS[name]
    config = MODEL_CONFIGS[name]()
    train = load_demo_split("train", cfg.train_windows)
    result = train_classifier(config, train, cfg, progress=progress, description=name)
    test = load_demo_split("test", cfg.eval_windows)
    ev: EvalResult = evaluate_classifier(result.model, test)
    val = evaluate_classifier(result.model, load_demo_split("val", cfg.eval_windows))
    record = DemoRecord(
        name=name,
        params=sum(p.numel() for p in result.model.parameters()),
        layers=int(config.num_hidden_layers),
        train_seconds=round(result.train_seconds, 2),
        train_cpu_seconds=round(result.train_cpu_seconds, 2),
        steps=result.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        train_windows=len(train),
        torch_threads=torch.get_num_threads(),
        test_accuracy=ev.accuracy,
        test_per_class_accuracy=ev.per_class_accuracy,
        test_confusion=ev.confusion,
        test_mean_loss=ev.mean_loss,
        test_windows=ev.n,
        val_accuracy=val.accuracy,
        class_names=test.class_names,
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    final = out_dir or demo_model_dir(name)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    result.model.save_pretrained(tmp, safe_serialization=True)
    (tmp / RECORD_FILE).write_text(json.dumps(asdict(record), indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log.info("saved %s to %s (test accuracy %.4f)", name, final, ev.accuracy)
    return final, record


def provide_demo_model(name: str, *, force: bool = False, progress: bool = True) -> tuple[Path, str]:
    """The demo model in the cache and how it got there: "cached" (already there), "package"
    (the shipped fp16 weights, sha256-verified and upcast to fp32) or "trained" (no package, or force)."""
    from harness.demo.package import has_package, install_package

    d = demo_model_dir(name)
    if not force and _is_complete(d):
        return d, "cached"
    if not force and has_package(name):
        install_package(name, d)
        return d, "package"
    train_demo_model(name, progress=progress)
    return d, "trained"


def ensure_demo_model(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Path of a demo model: cached, else installed from the packaged weights, else trained (or if force)."""
    return provide_demo_model(name, force=force, progress=progress)[0]
