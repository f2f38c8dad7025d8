"""The task data a tuning run scores, recovers and evaluates on."""

from __future__ import annotations

from pathlib import Path

from harness.data import load_demo_split
from harness.errors import ConfigError
from harness.models.loading import DEMO_NAMES
from harness.sia.data import load_calibration
from tuner.pipeline import TaskData


def task_data(model: str, calib: Path | None, val: Path | None, val_n: int | None) -> TaskData:
    """Demo models use the demo task's calib/val splits; other models need --calib and --val files."""
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
