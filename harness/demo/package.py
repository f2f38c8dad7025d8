"""The demo models as shipped inside hilt: fp16 weights, config, training record and their sha256.

`hilt demo train` trains a model in fp32 (about 20 min of CPU each); `export_package` writes the
compact form that is committed under `harness/demo/weights/<name>/`: `model.safetensors` in fp16, the
HF `config.json`, `hilt_demo.json` (the training record, plus the accuracy measured again after the
fp16 round trip) and `weights.json` (the sha256 of each of those files). `install_package` verifies
every sha256 and refuses on a mismatch, upcasts to fp32 and writes a normal model directory.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from harness.cache import sha256_file
from harness.errors import DataError, ModelLoadError

log = logging.getLogger(__name__)

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
MANIFEST_FILE = "weights.json"
MANIFEST_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SHIPPED_DTYPE = torch.float16


def weights_root() -> Path:
    """Where the packaged demo weights live (read at call time, so tests can point it elsewhere)."""
    return WEIGHTS_ROOT


def package_dir(name: str, root: Path | None = None) -> Path:
    return (root or weights_root()) / name


def has_package(name: str, root: Path | None = None) -> bool:
    return (package_dir(name, root) / MANIFEST_FILE).is_file()


def read_manifest(directory: Path) -> dict:
    file = directory / MANIFEST_FILE
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{directory} has no {MANIFEST_FILE}: not a packaged demo model") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{file} is not valid JSON ({exc}); reinstall hilt") from exc
    if raw.get("version") != MANIFEST_VERSION or not isinstance(raw.get("files"), dict):
        raise DataError(f"{file} is malformed or has an unknown version; reinstall hilt")
    return raw


def verify_package(directory: Path) -> dict[str, str]:
    """sha256 of every packaged file against `weights.json`; a mismatch or a missing file refuses."""
    manifest = read_manifest(directory)
    files: dict[str, str] = manifest["files"]
    for name, want in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing; reinstall hilt or run `hilt demo train --force`")
        got = sha256_file(path)
        if got != want:
            raise ModelLoadError(
                f"{path}: sha256 {got[:16]} does not match the recorded {want[:16]}; refusing the corrupt "
                "demo weights (reinstall hilt, or retrain with `hilt demo train --force`)"
            )
    return files


def _write_manifest(directory: Path, extra: dict) -> None:
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {
        "version": MANIFEST_VERSION,
        "files": {n: sha256_file(directory / n) for n in names},
        **extra,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def _cast(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}


def install_package(name: str, dest: Path, root: Path | None = None) -> Path:
    """Verify the packaged model `name`, upcast it to fp32 and write it (atomically) to `dest`."""
    from harness.demo.models import RECORD_FILE

    src = package_dir(name, root)
    verify_package(src)
    tensors = _cast(load_file(str(src / WEIGHTS_FILE)), torch.float32)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    for file in (CONFIG_FILE, RECORD_FILE):
        shutil.copy2(src / file, tmp / file)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log.info("installed the packaged %s (sha256 verified) into %s", name, dest)
    return dest


def export_package(name: str, model_dir: Path, root: Path | None = None, eval_windows: int | None = None):  # noqa: ANN201
    """Write the fp16 package of a trained model directory; re-measure accuracy after the fp16 round
    trip and record it. Returns the package's DemoRecord."""
    from transformers import AutoModelForSequenceClassification

    from harness.data import load_demo_split
    from harness.demo.models import RECORD_FILE, read_record
    from harness.evaluate import evaluate_classifier

    record = read_record(model_dir)
    dest = package_dir(name, root)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        _cast(load_file(str(model_dir / WEIGHTS_FILE)), SHIPPED_DTYPE),
        str(tmp / WEIGHTS_FILE),
        metadata={"format": "pt"},
    )
    shutil.copy2(model_dir / CONFIG_FILE, tmp / CONFIG_FILE)
    # measure what a user gets: the fp16 weights upcast to fp32, in a scratch directory
    scratch = tmp.with_name(tmp.name + ".check")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    save_file(_cast(load_file(str(tmp / WEIGHTS_FILE)), torch.float32), str(scratch / WEIGHTS_FILE))
    shutil.copy2(tmp / CONFIG_FILE, scratch / CONFIG_FILE)
    model = AutoModelForSequenceClassification.from_pretrained(scratch, dtype=torch.float32).eval()
    test = evaluate_classifier(model, load_demo_split("test", eval_windows))
    val = evaluate_classifier(model, load_demo_split("val", eval_windows))
    shutil.rmtree(scratch)
    record = replace(
        record,
        source="package",
        fp16_test_accuracy=test.accuracy,
        fp16_test_per_class_accuracy=test.per_class_accuracy,
        fp16_test_mean_loss=test.mean_loss,
        fp16_val_accuracy=val.accuracy,
    )
    (tmp / RECORD_FILE).write_text(json.dumps(asdict(record), indent=2) + "\n")
    trained = sha256_file(model_dir / WEIGHTS_FILE)  # lets a retrain tell whether it was bit-identical
    _write_manifest(tmp, {"name": name, "dtype": "float16", "trained_sha256": trained})
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log.info(
        "packaged %s into %s: test accuracy %.4f fp32, %.4f after the fp16 round trip",
        name,
        dest,
        record.test_accuracy,
        test.accuracy,
    )
    return record
