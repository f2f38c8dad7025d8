"""Calibration data for the SIA check: the demo task's calibration split, or a user's token file."""

from __future__ import annotations

import torch

from harness.data import load_demo_split
from harness.data.files import load_token_file


def load_calibration(spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`demo` (the bearing-fault calibration split), or a token file (.npz or .safetensors)."""
    if spec == "demo":
        d = load_demo_split("calib")
        return d.input_ids, d.labels
    return load_token_file(spec)
