"""Physics-based vibration of a rolling-element bearing, sampled at 12 kHz.

One window x[k], k = 0..N-1, t = k / fs, is the sum of

* shaft harmonics   s(t) = sum_{h=1..3} A_h cos(2 pi h f_r t + phi_h)           (f_r = shaft speed, Hz)
* a fault response  f(t) = sum_n a_n m(t_n) g(t - t_n)                           (absent for "normal")
* white noise       e(t) ~ N(0, sigma^2),  sigma = R / 10^(SNR / 20)

Impulses repeat at the fault's characteristic frequency f_c (see `harness.data.bearing`: BPFO for the
outer race, BPFI for the inner race, BSF for a ball: the spalled ball strikes one race per spin turn)
with slip: t_{n+1} = t_n + (1 + eps_n) / f_c, eps_n ~ N(0, s^2), s in [1%, 2%] per window. Amplitudes
a_n = S (1 + u_n), u_n ~ U(-0.1, 0.1), S the fault severity (0.25 / 0.6 / 1.4, each +-10% per window).

Amplitude modulation m(t): 1 for the outer race (stationary in the load zone); 1 + mu cos(2 pi f_r t + psi)
for the inner race (the defect turns with the shaft through the load zone, giving sidebands at
BPFI +- f_r); 1 + mu cos(2 pi FTF t + psi) for a ball (it travels with the cage). mu in [0.4, 0.9].

Every impulse rings a structural resonance f_n in [2, 5] kHz with damping ratio zeta in [0.03, 0.08]:
    g(t) = (zeta w_n / zeta0 w0) exp(-zeta w_n t) sin(w_d t),  w_n = 2 pi f_n,  w_d = w_n sqrt(1 - zeta^2)
The factor zeta w_n normalises every response to the same envelope area (integral of exp(-zeta w_n t) is
1 / (zeta w_n)); without it resonance and damping would move the envelope spectrum more than the
severity classes differ. zeta0 w0 = 0.05 * 2 pi * 3500 Hz keeps amplitudes near 1.

SNR is defined against a fixed reference R: the RMS, band-passed to 1.5-5.5 kHz, of a mid-severity
(0.6) outer-race fault at 35 Hz, not against each window's own power (shaft harmonics dominate total
power, so a per-window SNR would hide the faults).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.signal import fftconvolve

from harness.data.bearing import BEARING_6205, BearingGeometry

FS = 12_000
WINDOW = 4096
BAND_HZ = (1500.0, 5500.0)
SEVERITIES = (0.25, 0.6, 1.4)
FAULT_KINDS = ("inner", "outer", "ball")
FaultKind = Literal["normal", "inner", "outer", "ball"]
_ZETA_W_REF = 0.05 * 2.0 * math.pi * 3500.0
_DEFECT_FOR_KIND = {"inner": "bpfi", "outer": "bpfo", "ball": "bsf"}


@dataclass(frozen=True)
class WindowParams:
    """Everything that fixes one simulated window (kept so a window can be explained or redrawn)."""

    kind: FaultKind
    severity: float
    shaft_hz: float
    snr_db: float | None
    resonance_hz: float
    damping: float
    slip: float
    modulation_depth: float


def class_names() -> list[str]:
    """The 10 demo classes: normal, then each fault kind at each severity."""
    names = ["normal"]
    for kind in FAULT_KINDS:
        names += [f"{kind}-{sev:g}" for sev in SEVERITIES]
    return names


def class_fault(label: int) -> tuple[FaultKind, float]:
    """Fault kind and nominal severity of a class index."""
    if label == 0:
        return "normal", 0.0
    kind = FAULT_KINDS[(label - 1) // len(SEVERITIES)]
    return kind, SEVERITIES[(label - 1) % len(SEVERITIES)]  # type: ignore[return-value]


def impulse_response(resonance_hz: float, damping: float, fs: int = FS) -> np.ndarray:
    """Damped resonance g(t) with unit-normalised envelope area (scaled by zeta w_n / zeta0 w0)."""
    wn = 2.0 * math.pi * resonance_hz
    decay = damping * wn
    length = int(math.ceil(7.0 / decay * fs))
    t = np.arange(length) / fs
    wd = wn * math.sqrt(1.0 - damping * damping)
    return (decay / _ZETA_W_REF) * np.exp(-decay * t) * np.sin(wd * t)


def fault_signal(
    kind: FaultKind,
    severity: float,
    shaft_hz: float,
    rng: np.random.Generator,
    *,
    n_samples: int = WINDOW,
    fs: int = FS,
    geometry: BearingGeometry = BEARING_6205,
    resonance_hz: float = 3500.0,
    damping: float = 0.05,
    slip: float = 0.015,
    modulation_depth: float = 0.6,
) -> np.ndarray:
    """The fault response f(t) alone (zeros for "normal")."""
    if kind == "normal" or severity == 0.0:
        return np.zeros(n_samples)
    freqs = geometry.frequencies(shaft_hz)
    period = 1.0 / freqs[_DEFECT_FOR_KIND[kind]]
    g = impulse_response(resonance_hz, damping, fs)
    lead = len(g)  # impulses up to one ring-down before t=0 still reach the window
    t = -lead / fs - rng.uniform(0.0, period)
    t_end = n_samples / fs
    times: list[float] = []
    while t < t_end:
        times.append(t)
        t += period * (1.0 + slip * rng.standard_normal())
    tn = np.asarray(times)
    amp = severity * (1.0 + rng.uniform(-0.1, 0.1, size=tn.size))
    phase = rng.uniform(0.0, 2.0 * math.pi)
    if kind == "inner":
        amp *= 1.0 + modulation_depth * np.cos(2.0 * math.pi * shaft_hz * tn + phase)
    elif kind == "ball":
        amp *= 1.0 + modulation_depth * np.cos(2.0 * math.pi * freqs["ftf"] * tn + phase)
    idx = np.round(tn * fs).astype(np.int64) + lead
    keep = (idx >= 0) & (idx < n_samples + lead)
    train = np.zeros(n_samples + lead)
    np.add.at(train, idx[keep], amp[keep])
    return fftconvolve(train, g)[lead : lead + n_samples]


def shaft_signal(
    shaft_hz: float, rng: np.random.Generator, n_samples: int = WINDOW, fs: int = FS
) -> np.ndarray:
    """Shaft rotation harmonics 1x-3x with random amplitude and phase (imbalance, misalignment)."""
    t = np.arange(n_samples) / fs
    amps = (rng.uniform(0.5, 1.5), rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.25))
    out = np.zeros(n_samples)
    for h, a in enumerate(amps, start=1):
        out += a * np.cos(2.0 * math.pi * h * shaft_hz * t + rng.uniform(0.0, 2.0 * math.pi))
    return out


def band_rms(x: np.ndarray, fs: int = FS, band: tuple[float, float] = BAND_HZ) -> float:
    """RMS of x after an ideal (FFT-mask) band-pass."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1.0 / fs)
    spec[(f < band[0]) | (f > band[1])] = 0.0
    return float(np.sqrt(np.mean(np.fft.irfft(spec, n=x.size) ** 2)))


@functools.cache
def reference_rms() -> float:
    """R: band-passed RMS of a mid-severity outer-race fault at 35 Hz on a long, noise-free record."""
    rng = np.random.default_rng(20260)
    x = fault_signal("outer", SEVERITIES[1], 35.0, rng, n_samples=FS * 10, slip=0.015)
    return band_rms(x)


def draw_params(
    kind: FaultKind, severity: float, shaft_hz: float, snr_db: float | None, rng: np.random.Generator
) -> WindowParams:
    """Random nuisance parameters of one window (resonance, damping, slip, modulation, severity jitter)."""
    return WindowParams(
        kind=kind,
        severity=severity * rng.uniform(0.9, 1.1) if kind != "normal" else 0.0,
        shaft_hz=shaft_hz,
        snr_db=snr_db,
        resonance_hz=rng.uniform(2000.0, 5000.0),
        damping=rng.uniform(0.03, 0.08),
        slip=rng.uniform(0.01, 0.02),
        modulation_depth=rng.uniform(0.4, 0.9),
    )


def simulate(
    params: WindowParams,
    rng: np.random.Generator,
    *,
    n_samples: int = WINDOW,
    fs: int = FS,
    geometry: BearingGeometry = BEARING_6205,
) -> np.ndarray:
    """One vibration window (float64, arbitrary units) for the given parameters."""
    x = shaft_signal(params.shaft_hz, rng, n_samples, fs)
    x += fault_signal(
        params.kind,
        params.severity,
        params.shaft_hz,
        rng,
        n_samples=n_samples,
        fs=fs,
        geometry=geometry,
        resonance_hz=params.resonance_hz,
        damping=params.damping,
        slip=params.slip,
        modulation_depth=params.modulation_depth,
    )
    if params.snr_db is not None:
        sigma = reference_rms() / 10.0 ** (params.snr_db / 20.0)
        x += sigma * rng.standard_normal(n_samples)
    return x
