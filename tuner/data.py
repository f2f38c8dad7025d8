"""The task data a tuning run scores, recovers and evaluates on."""

from __future__ import annotations

from pathlib import Path

from harness.data import load_demo_split
from harness.data.text import model_text_split
from harness.errors import ConfigError
from harness.models.loading import DEMO_NAMES
from harness.sia.data import load_calibration
from tuner.pipeline import TaskData


def task_data(
    model: str,
    calib: Path | None,
    val: Path | None,
    val_n: int | None,
    *,
    causal_dir: Path | None = None,
    text: Path | None = None,
    seq_len: int = 64,
) -> TaskData:
    """Demo models use the demo task's calib/val splits; a causal LM (`causal_dir`, its directory)
    without token files uses the calibration and evaluation splits of `text` (default: the built-in
    corpus) in its own tokens; other models need --calib and --val files."""
    if text is not None and causal_dir is None:
        raise ConfigError(f"--text is for causal LMs; {model} is a classifier (use --calib and --val)")
    if causal_dir is not None and calib is None and val is None:
        c = model_text_split(causal_dir, "calib", text, seq_len)
        v = model_text_split(causal_dir, "eval", text, seq_len, val_n)
        return TaskData(c.input_ids, c.labels, v.input_ids, v.labels)
    if calib is None and val is None and model in DEMO_NAMES:
        c = load_demo_split("calib")
        v = load_demo_split("val", val_n)
        return TaskData(c.input_ids, c.labels, v.input_ids, v.labels)
    if calib is None or val is None:
        raise ConfigError(
            f"model {model} is not a demo model: give --calib and --val "
            "(token files, .npz or .safetensors, with input_ids and labels)"
        )
    ci, cl = load_calibration(str(calib))
    vi, vl = load_calibration(str(val))
    if val_n:
        vi, vl = vi[:val_n], vl[:val_n]
    if ci.shape[1] != vi.shape[1]:
        raise ConfigError(f"--calib has sequence length {ci.shape[1]} but --val has {vi.shape[1]}")
    return TaskData(ci, cl, vi, vl)
