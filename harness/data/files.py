"""The one token-data file format every command reads (`hilt prune --data`, `hilt sia --data`,
`hilt tune --calib/--val`): integer `input_ids` [N, L] and `labels` [N], stored as `.npz` (numpy,
no pickle) or `.safetensors` — either works everywhere, picked by the file's suffix."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file

from harness.errors import DataError

SUFFIXES = (".npz", ".safetensors")


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if not head:
        raise DataError(f"{path}: empty file, not token data (input_ids and labels)")
    if path.suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path}: not a readable .npz file (not a zip archive)")
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from None


def load_token_file(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 (input_ids [N, L], labels [N]) from an .npz or .safetensors file; one clear error if not."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: token data must be an .npz or .safetensors file")
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file():
        raise DataError(f"{path} is not a file (token data is an .npz or .safetensors file)")
    arrays = _read(path)
    for name in ("input_ids", "labels"):
        if name not in arrays:
            raise DataError(f"{path}: missing `{name}` (need input_ids [N, L] and labels [N])")
    ids, labels = arrays["input_ids"], arrays["labels"]
    if ids.ndim != 2 or labels.ndim != 1 or len(ids) != len(labels) or len(ids) == 0:
        raise DataError(
            f"{path}: need input_ids [N, L] and labels [N] of the same N > 0, "
            f"got {ids.shape} and {labels.shape}"
        )
    if not (np.issubdtype(ids.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{path}: input_ids and labels must be integer arrays")
    return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))


def save_token_file(path: str | Path, input_ids: torch.Tensor, labels: torch.Tensor) -> Path:
    """Write token data in the format the suffix names (the converter between the two formats)."""
    from safetensors.numpy import save_file

    path = Path(path)
    arrays = {"input_ids": input_ids.numpy().astype(np.int64), "labels": labels.numpy().astype(np.int64)}
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    elif path.suffix == ".safetensors":
        save_file(arrays, str(path))
    else:
        raise DataError(f"{path}: token data must be an .npz or .safetensors file")
    return path
