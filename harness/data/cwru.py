"""Read real recordings in the Case Western Reserve University (CWRU) bearing data `.mat` layout.

A CWRU file holds variables such as `X097_DE_time` (drive-end accelerometer, [N, 1]), `X097_FE_time`
(fan end), `X097_BA_time` (base) and `X097RPM` (motor speed). Users with such files can tokenise them
exactly like the simulated windows, given the shaft speed (from the file's RPM or stated explicitly).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from harness.data.simulator import FS, WINDOW
from harness.data.tokenizer import tokenise_window
from harness.errors import DataError

log = logging.getLogger(__name__)

CHANNELS = ("DE", "FE", "BA")


@dataclass(frozen=True)
class Recording:
    """One accelerometer channel of a recording."""

    signal: np.ndarray  # float64 [N]
    fs: int
    rpm: float | None
    variable: str
    source: Path


def load_cwru_mat(
    path: str | Path, channel: str = "DE", fs: int = FS, variable: str | None = None
) -> Recording:
    """Read one channel (default drive end) of a CWRU-layout `.mat` file."""
    path = Path(path)
    if channel not in CHANNELS:
        raise DataError(f"unknown CWRU channel {channel!r}; choose one of {', '.join(CHANNELS)}")
    if not path.is_file():
        raise DataError(f"recording {path} does not exist; give the path of a CWRU .mat file")
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, TypeError, OSError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(f"{path} is not a readable MATLAB .mat file ({exc})") from exc
    names = sorted(k for k in mat if not k.startswith("__"))
    if variable is None:
        matches = [k for k in names if k.endswith(f"_{channel}_time")]
        if not matches:
            raise DataError(
                f"{path} has no *_{channel}_time variable (found: {', '.join(names) or 'none'}); "
                "is it a CWRU file? pass the variable name explicitly"
            )
        if len(matches) > 1:
            log.warning("%s holds several %s channels %s; using %s", path, channel, matches, matches[0])
        variable = matches[0]
    elif variable not in mat:
        raise DataError(f"{path} has no variable {variable!r} (found: {', '.join(names) or 'none'})")
    raw = np.asarray(mat[variable])
    if (
        raw.dtype.kind not in "fiu"
        or raw.size == 0
        or (raw.ndim == 2 and min(raw.shape) != 1)
        or raw.ndim > 2
    ):
        raise DataError(
            f"{path}:{variable} is not a numeric time series (dtype {raw.dtype}, shape {raw.shape})"
        )
    signal = raw.astype(np.float64).ravel()
    if not np.all(np.isfinite(signal)):
        raise DataError(f"{path}:{variable} contains NaN or infinite samples")
    return Recording(signal=signal, fs=fs, rpm=_rpm(mat, variable), variable=variable, source=path)


def _rpm(mat: dict, variable: str) -> float | None:
    prefix = re.match(r"(X\d+)_", variable)
    keys = [k for k in mat if k.endswith("RPM")]
    if prefix and f"{prefix.group(1)}RPM" in mat:
        keys = [f"{prefix.group(1)}RPM"]
    for k in keys:
        value = np.asarray(mat[k]).ravel()
        if value.size == 1 and value.dtype.kind in "fiu" and float(value[0]) > 0:
            return float(value[0])
    return None


def recording_windows(rec: Recording, window: int = WINDOW, hop: int | None = None) -> np.ndarray:
    """Overlapping windows [k, window] of a recording (hop defaults to half a window)."""
    hop = hop or window // 2
    if rec.signal.size < window:
        raise DataError(
            f"{rec.source}:{rec.variable} has {rec.signal.size} samples, "
            f"fewer than one {window}-sample window"
        )
    starts = range(0, rec.signal.size - window + 1, hop)
    return np.stack([rec.signal[s : s + window] for s in starts])


def tokenise_recording(
    rec: Recording, shaft_hz: float | None = None, window: int = WINDOW, hop: int | None = None
) -> np.ndarray:
    """Token ids [k, 66] for every window of a recording; shaft speed from the argument or the file's RPM."""
    if shaft_hz is None:
        if rec.rpm is None:
            raise DataError(f"{rec.source} has no RPM variable; give the shaft speed in Hz explicitly")
        shaft_hz = rec.rpm / 60.0
    return np.stack([tokenise_window(w, shaft_hz, rec.fs) for w in recording_windows(rec, window, hop)])
