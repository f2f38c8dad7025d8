"""One token-data format everywhere: .npz and .safetensors read the same, bad files are one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.files import load_token_file, save_token_file
from harness.errors import DataError
from harness.prune.job import load_token_data
from harness.sia.data import load_calibration


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_both_formats_give_the_same_tensors_to_every_reader(tmp_path: Path, suffix: str) -> None:
    ids = torch.randint(0, 50, (6, 9))
    labels = torch.arange(6) % 3
    path = save_token_file(tmp_path / f"d{suffix}", ids, labels)
    for got_ids, got_labels in (
        load_token_file(path),
        load_calibration(str(path)),
        tuple(vars(load_token_data(path)).values()),
    ):
        assert torch.equal(got_ids, ids) and torch.equal(got_labels, labels) and got_ids.dtype == torch.int64


def test_bad_token_files_name_what_is_wrong(tmp_path: Path) -> None:
    cases = {
        tmp_path / "x.csv": "must be an .npz or .safetensors",
        tmp_path / "missing.npz": "does not exist",
        tmp_path / "empty.npz": "empty file",
        tmp_path / "garbage.safetensors": "not a readable safetensors",
        tmp_path / "nolabels.npz": "missing `labels`",
        tmp_path / "float.npz": "must be integer",
    }
    (tmp_path / "x.csv").write_text("1,2")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "garbage.safetensors").write_bytes(b"nope")
    np.savez(tmp_path / "nolabels.npz", input_ids=np.zeros((2, 3), dtype=np.int64))
    np.savez(tmp_path / "float.npz", input_ids=np.zeros((2, 3)), labels=np.zeros(2))
    (tmp_path / "dir.npz").mkdir()
    cases[tmp_path / "dir.npz"] = "is not a file"
    for path, message in cases.items():
        with pytest.raises(DataError, match=message):
            load_token_file(path)
