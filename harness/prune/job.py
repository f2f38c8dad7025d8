"""`hilt prune` as one function: load model, schedule and data, run the cascade, write atomically.

The output directory appears only when everything is written: work happens in a hidden sibling
directory that is renamed into place at the end (and removed if anything fails or is interrupted).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.data import load_demo_split
from harness.data.files import load_token_file
from harness.data.text import copy_tokenizer, model_text_split
from harness.errors import DataError, HiltError
from harness.evaluate import check_window
from harness.models import load_model
from harness.models.manifest import save_pruned
from harness.prune.cascade import Progress, StageLog, run_cascade, validate_for_model
from harness.prune.schedule import load_schedule, save_schedule

log = logging.getLogger(__name__)
STAGE_LOG_FILE = "stage_log.json"
SCHEDULE_FILE = "schedule.json"


@dataclass(frozen=True)
class TokenData:
    """Token ids and labels (the fields of harness.data.ClassificationData the runner uses)."""

    input_ids: torch.Tensor
    labels: torch.Tensor


def load_token_data(path: str | Path) -> TokenData:
    """A token file (.npz or .safetensors) with integer `input_ids` [N, L] and `labels` [N]."""
    return TokenData(*load_token_file(path))


def _demo_data(split: str, n: int | None) -> TokenData:
    d = load_demo_split(split, n)  # type: ignore[arg-type]
    return TokenData(d.input_ids, d.labels)


def _text_data(source: Path, split: str, text: str | Path | None, seq_len: int, n: int | None) -> TokenData:
    w = model_text_split(source, split, text, seq_len, n)  # type: ignore[arg-type]
    return TokenData(w.input_ids, w.labels)


def _check_fits(model: torch.nn.Module, data: TokenData, what: str) -> None:
    vocab = model.config.vocab_size
    if int(data.input_ids.max()) >= vocab or int(data.input_ids.min()) < 0:
        raise DataError(f"{what} has token ids outside the model's vocabulary (0..{vocab - 1})")
    num_labels = getattr(model.config, "num_labels", None)
    if type(model).__name__.endswith("ForSequenceClassification") and int(data.labels.max()) >= num_labels:
        raise DataError(f"{what} has labels >= the model's {num_labels} classes")


def prune_to_dir(
    model_path: str | Path,
    schedule_path: str | Path,
    out_dir: str | Path,
    *,
    data_path: str | Path | None = None,
    eval_path: str | Path | None = None,
    calib_n: int | None = 512,
    eval_n: int | None = 1000,
    threads: int | None = None,
    progress: Progress | None = None,
    text_path: str | Path | None = None,
    seq_len: int = 128,
    recovery_n: int | None = 4096,
) -> StageLog:
    """Run a schedule on a model and write the pruned model, the schedule and the stage log to `out_dir`.

    A causal LM without token files scores, recovers and is evaluated on the calibration, recovery and
    evaluation splits of `text_path` (default: the built-in corpus), in its own tokenizer's tokens.
    """
    out = Path(out_dir)
    if out.exists():
        raise HiltError(f"output directory {out} already exists; choose a new --out")
    schedule = load_schedule(schedule_path)
    loaded = load_model(model_path)
    validate_for_model(loaded.model, schedule, warn=False)  # fail fast; run_cascade warns
    causal = loaded.task == "causal-lm"
    if text_path is not None and not causal:
        raise DataError(f"--text is for causal LMs; {model_path} is a {loaded.task} model (use --data)")
    if text_path is not None and data_path is not None:
        raise DataError("pass either --text (a causal LM's text) or --data (token files), not both")
    recd: TokenData | None = None
    if causal and data_path is None:
        check_window(loaded.model, seq_len)
        calib = _text_data(loaded.source, "calib", text_path, seq_len, calib_n)
        recd = _text_data(loaded.source, "recovery", text_path, seq_len, recovery_n)
        evald: TokenData | None = (
            load_token_data(eval_path)
            if eval_path
            else _text_data(loaded.source, "eval", text_path, seq_len, eval_n)
        )
    else:
        calib = load_token_data(data_path) if data_path else _demo_data("calib", calib_n)
        evald = (
            load_token_data(eval_path) if eval_path else (None if data_path else _demo_data("val", eval_n))
        )
    _check_fits(loaded.model, calib, "calibration data")
    if evald is not None:
        _check_fits(loaded.model, evald, "evaluation data")
    if threads:
        torch.set_num_threads(threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        model, stage_log = run_cascade(
            loaded.model, schedule, calib, eval_data=evald, recovery_data=recd, progress=progress
        )
        save_pruned(model, work, loaded.task)
        copy_tokenizer(loaded.source, work)
        save_schedule(schedule, work / SCHEDULE_FILE)
        (work / STAGE_LOG_FILE).write_text(stage_log.model_dump_json(indent=2) + "\n")
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("wrote pruned model to %s", out)
    return stage_log
