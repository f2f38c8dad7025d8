"""Calibration data for the SIA check: the demo task's calibration split, or a user's .npz file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from harness.errors import DataError


def load_calibration(spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`demo` (the bearing-fault calibration split), or an .npz with `input_ids` [N, L] and `labels` [N]."""
    if spec == "demo":
        from harness.data import load_demo_split

        d = load_demo_split("calib")
        return d.input_ids, d.labels
    path = Path(spec)
    if path.is_dir():
        raise DataError(f"calibration data {path} is a directory, not an .npz file")
    if not path.is_file():
        raise DataError(f"calibration data {path} does not exist (use 'demo' or an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, labels = z["input_ids"], z["labels"]
    except PermissionError as exc:
        raise DataError(f"cannot read calibration data {path}: {exc.strerror}") from None
    except EOFError:  # np.load of an empty file; click would turn a stray EOFError into "aborted"
        raise DataError(f"{path}: empty file, not an .npz with 'input_ids' and 'labels'") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not an .npz with 'input_ids' and 'labels' ({exc})") from None
    if (
        ids.ndim != 2
        or labels.ndim != 1
        or len(ids) != len(labels)
        or not np.issubdtype(ids.dtype, np.integer)
    ):
        raise DataError(f"{path}: need integer input_ids [N, L] and labels [N] of the same N")
    return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))
