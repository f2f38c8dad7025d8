"""CWRU `.mat` loader on small files written here with scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from harness.data.bearing import BEARING_6205
from harness.data.cwru import load_cwru_mat, recording_windows, tokenise_recording
from harness.data.simulator import FS, WINDOW, WindowParams, simulate
from harness.data.tokenizer import SEQ_LEN
from harness.errors import DataError


def _signal(n: int = FS) -> np.ndarray:
    p = WindowParams("outer", 1.0, 1797 / 60, 10.0, 3000.0, 0.05, 0.015, 0.5)
    return simulate(p, np.random.default_rng(0), n_samples=n)


def _write(path: Path, **variables: object) -> Path:
    scipy.io.savemat(str(path), variables)
    return path


def test_reads_drive_end_channel_and_rpm(tmp_path: Path) -> None:
    x = _signal()
    f = _write(
        tmp_path / "130.mat", X130_DE_time=x[:, None], X130_FE_time=0 * x[:, None], X130RPM=np.array([[1797]])
    )
    rec = load_cwru_mat(f)
    assert rec.variable == "X130_DE_time" and rec.rpm == 1797.0 and rec.fs == FS
    np.testing.assert_allclose(rec.signal, x)
    assert load_cwru_mat(f, channel="FE").signal.max() == 0.0


def test_tokenised_recording_shows_bpfo(tmp_path: Path) -> None:
    f = _write(tmp_path / "r.mat", X130_DE_time=_signal()[:, None], X130RPM=np.array([[1797]]))
    rec = load_cwru_mat(f)
    windows = recording_windows(rec)
    assert windows.shape == (1 + (FS - WINDOW) // (WINDOW // 2), WINDOW)
    ids = tokenise_recording(rec)
    assert ids.shape == (windows.shape[0], SEQ_LEN)
    bpfo_bin = int((BEARING_6205.orders()["bpfo"] - 0.1) / (11.9 / 64))
    spectrum = ids[:, 1:-1]
    assert np.all(spectrum.argmax(axis=1) == bpfo_bin)


def test_explicit_variable_and_speed(tmp_path: Path) -> None:
    f = _write(tmp_path / "r.mat", accel=_signal())
    rec = load_cwru_mat(f, variable="accel")
    assert rec.rpm is None
    with pytest.raises(DataError, match="no RPM"):
        tokenise_recording(rec)
    assert tokenise_recording(rec, shaft_hz=30.0).shape[1] == SEQ_LEN


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_cwru_mat(tmp_path / "nope.mat")


@pytest.mark.parametrize("content", [b"hello, not matlab", b"x" * 4000, b"MATLAB 5.0 MAT-file" + b"\0" * 200])
def test_not_a_mat_file(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "bad.mat"
    f.write_bytes(content)
    with pytest.raises(DataError, match="not a readable MATLAB"):
        load_cwru_mat(f)


def test_no_drive_end_variable(tmp_path: Path) -> None:
    f = _write(tmp_path / "r.mat", X1_FE_time=_signal()[:, None])
    with pytest.raises(DataError, match=r"no \*_DE_time variable \(found: X1_FE_time\)"):
        load_cwru_mat(f)


def test_unknown_variable_and_channel(tmp_path: Path) -> None:
    f = _write(tmp_path / "r.mat", X1_DE_time=_signal()[:, None])
    with pytest.raises(DataError, match="no variable 'X2_DE_time'"):
        load_cwru_mat(f, variable="X2_DE_time")
    with pytest.raises(DataError, match="unknown CWRU channel"):
        load_cwru_mat(f, channel="XX")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros((100, 3)), "not a numeric time series"),
        (np.array(["abc"]), "not a numeric time series"),
        (np.r_[np.zeros(5000), np.inf][:, None], "NaN or infinite"),
    ],
)
def test_malformed_series(tmp_path: Path, value: np.ndarray, match: str) -> None:
    f = _write(tmp_path / "r.mat", X1_DE_time=value)
    with pytest.raises(DataError, match=match):
        load_cwru_mat(f)


def test_too_short_for_a_window(tmp_path: Path) -> None:
    rec = load_cwru_mat(_write(tmp_path / "r.mat", X1_DE_time=np.zeros((1000, 1)), X1RPM=np.array([[1750]])))
    with pytest.raises(DataError, match="fewer than one 4096-sample window"):
        tokenise_recording(rec)
