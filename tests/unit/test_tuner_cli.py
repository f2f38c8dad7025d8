"""`hilt tune` and `hilt nightly` refuse bad input with one red line and exit 2, before any work."""

from __future__ import annotations

import pytest

from harness.cli.main import main
from tests.unit.prune_tiny import write_tiny_task


@pytest.fixture()
def task(tmp_path):
    return write_tiny_task(tmp_path)


def _one_line(capsys: pytest.CaptureFixture[str], message: str) -> None:
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "/nonexistent/model"], "does not exist"),
        (["--objective", "speed"], "unknown objective speed"),
        (["--latency", "p75"], "p50 or p90"),
        (["--max-stages", "4", "--compression", "0.5"], "compression target must be >= 1"),
        (["--sampler", "annealing"], "unknown sampler 'annealing'"),
        (["--storage", "redis://localhost/0"], "neither sqlite"),
        (["--board", "nosuch"], "no board named 'nosuch'"),
        (["--kernel-tuning", "fast"], "--kernel-tuning 'fast': expected off, db or trials:N"),
        (["--kernel-tuning", "trials:0"], "--kernel-tuning 'trials:0': N in trials:N must be"),
        (["--kernel-tuning", "trials:x"], "--kernel-tuning 'trials:x': N in trials:N must be"),
        (["--kernel-tuning", "trials:"], "--kernel-tuning 'trials:': N in trials:N must be"),
        (["--kernel-tuning", "trials"], "--kernel-tuning 'trials': expected off, db or trials:N"),
    ],
)
def test_tune_bad_input(task, tmp_path, capsys, extra, message) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    args = ["tune", "--model", str(task["model"]), "--calib", str(task["calib"]), "--val", str(task["val"]),
            "--storage", db, "--out", str(tmp_path / "r"), "--no-sia"]  # fmt: skip
    assert main(args + extra) == 2
    _one_line(capsys, message)


def test_tune_non_demo_model_needs_data(task, capsys) -> None:
    assert main(["tune", "--model", str(task["model"])]) == 2
    _one_line(capsys, "give --calib and --val")


def test_tune_bad_calibration_file(task, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    args = ["tune", "--model", str(task["model"]), "--calib", str(bad), "--val", str(task["val"])]
    assert main(args) == 2
    _one_line(capsys, "not a readable .npz file")


def test_nightly_missing_files(tmp_path, capsys) -> None:
    assert main(["nightly", "--farm", str(tmp_path / "farm.toml"), "--suite", str(tmp_path / "s.toml")]) == 2
    _one_line(capsys, "does not exist")
    (tmp_path / "s.toml").write_text(
        'version = 1\nname = "s"\n[[case]]\nname = "a"\nmodel = "m"\nprofiles = ["local"]\n'
    )
    (tmp_path / "farm.toml").write_text("version = [")
    assert main(["nightly", "--farm", str(tmp_path / "farm.toml"), "--suite", str(tmp_path / "s.toml")]) == 2
    _one_line(capsys, "not valid TOML")
