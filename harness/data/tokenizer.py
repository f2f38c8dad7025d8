"""Turn a vibration window into 66 token ids: an order-normalised envelope spectrum.

Why this representation: bearing faults show up as repetition rates of impacts (BPFO, BPFI, BSF) that
scale with shaft speed, while the carrier (the struck resonance) varies from machine to machine. The
envelope spectrum (band-pass around the resonances, Hilbert envelope, FFT) exposes the repetition
rate; dividing its frequency axis by the shaft speed puts every fault at a fixed bin regardless of
speed. In a quick prototype ranking this beat absolute-frequency envelope spectra and raw samples by a
wide margin (79% vs 31% vs 13% with a small MLP).

Sequence layout (fixed length 66; ids never 0, which is reserved for padding):
    [speed token] [64 spectrum tokens, 0.1..12 shaft orders] [CLS]
The CLS token is last because HF's *ForSequenceClassification heads pool the last non-pad token.
Spectrum tokens are log10 magnitudes on a fixed scale quantised to 128 levels; the speed token is a
tachometer reading over 10..60 Hz quantised to 32 levels.
"""

from __future__ import annotations

import numpy as np

from harness.data.simulator import BAND_HZ, FS
from harness.errors import DataError

PAD_ID = 0
CLS_ID = 1
N_BINS = 64
LEVELS = 128
SPEED_LEVELS = 32
ORDER_RANGE = (0.1, 12.0)
SPEED_RANGE_HZ = (10.0, 60.0)
LOG_RANGE = (-4.0, 0.0)  # log10 envelope amplitude mapped onto levels 0..LEVELS-1
SPEC_BASE = 2
SPEED_BASE = SPEC_BASE + LEVELS
VOCAB_SIZE = SPEED_BASE + SPEED_LEVELS
SEQ_LEN = N_BINS + 2


def envelope_spectrum(
    x: np.ndarray, fs: int = FS, band: tuple[float, float] = BAND_HZ, pad_to: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Single-sided amplitude spectrum of the band-passed Hilbert envelope of x: (freqs Hz, amplitude)."""
    n = x.size
    spec = np.fft.fft(x)
    f = np.fft.fftfreq(n, 1.0 / fs)
    gain = np.where((f >= band[0]) & (f <= band[1]), 2.0, 0.0)  # band-pass and analytic signal in one
    env = np.abs(np.fft.ifft(spec * gain))
    env -= env.mean()
    win = np.hanning(n)
    nfft = 1 << int(np.ceil(np.log2(n * pad_to)))
    amp = np.abs(np.fft.rfft(env * win, nfft)) * 2.0 / win.sum()
    return np.fft.rfftfreq(nfft, 1.0 / fs), amp


def order_bins(freqs: np.ndarray, amp: np.ndarray, shaft_hz: float) -> np.ndarray:
    """Max envelope amplitude in each of N_BINS equal bins over ORDER_RANGE shaft orders."""
    edges = np.linspace(ORDER_RANGE[0], ORDER_RANGE[1], N_BINS + 1) * shaft_hz
    idx = np.searchsorted(freqs, edges)
    out = np.empty(N_BINS)
    for b in range(N_BINS):
        lo, hi = idx[b], max(idx[b + 1], idx[b] + 1)
        out[b] = amp[lo:hi].max()
    return out


def quantise_spectrum(values: np.ndarray) -> np.ndarray:
    """Log magnitude on the fixed LOG_RANGE scale -> levels 0..LEVELS-1."""
    logv = np.log10(np.maximum(values, 1e-12))
    q = np.round((logv - LOG_RANGE[0]) / (LOG_RANGE[1] - LOG_RANGE[0]) * (LEVELS - 1))
    return np.clip(q, 0, LEVELS - 1).astype(np.int64)


def speed_token(shaft_hz: float) -> int:
    """Token id of a tachometer reading (clipped to SPEED_RANGE_HZ)."""
    lo, hi = SPEED_RANGE_HZ
    q = int(round((min(max(shaft_hz, lo), hi) - lo) / (hi - lo) * (SPEED_LEVELS - 1)))
    return SPEED_BASE + q


def tokenise_window(x: np.ndarray, shaft_hz: float, fs: int = FS) -> np.ndarray:
    """Token ids (int64, length SEQ_LEN) for one window at a known shaft speed."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size < 256:
        raise DataError(f"a window must be a 1-D signal of at least 256 samples, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError("the window contains NaN or infinite samples; clean the recording first")
    if not (shaft_hz > 0 and np.isfinite(shaft_hz)):
        raise DataError(f"shaft speed must be a positive number of Hz, got {shaft_hz!r}")
    if ORDER_RANGE[1] * shaft_hz > fs / 2:
        raise DataError(f"shaft speed {shaft_hz} Hz is too high for fs={fs} Hz (12 orders exceed Nyquist)")
    freqs, amp = envelope_spectrum(x, fs)
    spec = SPEC_BASE + quantise_spectrum(order_bins(freqs, amp, shaft_hz))
    return np.concatenate([[speed_token(shaft_hz)], spec, [CLS_ID]]).astype(np.int64)
