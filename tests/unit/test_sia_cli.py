"""`hilt sia` end to end on a tiny saved model, and its bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.cli.main import main
from tests.cli_errors import one_error_line
from tests.unit.prune_tiny import tiny_model, tokens


@pytest.fixture()
def model_and_data(tmp_path):
    model_dir = tmp_path / "tiny"
    tiny_model("gpt2", layers=2).save_pretrained(model_dir)
    data = tmp_path / "calib.npz"
    np.savez(data, input_ids=tokens(n=32, seed=5).numpy(), labels=(torch.arange(32) % 3).numpy())
    return model_dir, data


def test_sia_cli_writes_json_and_plot(model_and_data, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path / "cache"))
    model_dir, data = model_and_data
    out, png = tmp_path / "sia.json", tmp_path / "sia.png"
    rc = main(
        ["sia", "--model", str(model_dir), "--data", str(data), "--granularity", "head,channel",
         "--ratios", "0.25,0.5", "--subsets", "4", "--out", str(out), "--plot", str(png)]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    assert [r["granularity"] for r in report["results"]] == ["head", "channel"]
    assert report["structural"]["attention"] == "independent"
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    assert "predictable horizon" in text and "head (taylor)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent.npz"], "does not exist"),
        (["--ratios", "0.5,1.5"], "fractions in (0, 1)"),
        (["--ratios", "half"], "comma-separated numbers"),
        (["--granularity", "block"], "unknown granularity"),
    ],
)
def test_sia_cli_bad_input(model_and_data, args, message, capsys) -> None:
    model_dir, data = model_and_data
    base = ["sia", "--model", str(model_dir), "--data", str(data)]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_sia_cli_bad_npz(tmp_path, model_and_data, capsys) -> None:
    model_dir, _ = model_and_data
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=np.zeros((4, 3), dtype=np.int64), labels=np.zeros(5, dtype=np.int64))
    assert main(["sia", "--model", str(model_dir), "--data", str(bad)]) == 2
    assert "same N" in one_error_line(capsys)
