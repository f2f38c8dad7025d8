"""Simulator physics: envelope peaks at the defect frequencies, sidebands, determinism, SNR reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import hilbert

from harness.data.bearing import BEARING_6203, BEARING_6205
from harness.data.simulator import (
    FS,
    WINDOW,
    WindowParams,
    class_fault,
    class_names,
    draw_params,
    impulse_response,
    reference_rms,
    simulate,
)
from harness.data.tokenizer import envelope_spectrum


def _params(kind: str, speed: float, snr: float | None = 10.0, severity: float = 0.6) -> WindowParams:
    return WindowParams(kind, severity, speed, snr, 3200.0, 0.05, 0.015, 0.7)  # type: ignore[arg-type]


def _peak(x: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray, float]:
    f, a = envelope_spectrum(x)
    m = f > 0.5 * speed
    return f, a, float(f[m][np.argmax(a[m])])


@pytest.mark.parametrize("speed", [10.0, 23.0, 41.0, 58.0])
def test_outer_race_envelope_peak_at_bpfo_long_record(speed: float) -> None:
    x = simulate(_params("outer", speed), np.random.default_rng(3), n_samples=FS * 3)
    _, _, peak = _peak(x, speed)
    assert peak == pytest.approx(BEARING_6205.frequencies(speed)["bpfo"], rel=0.02)


@pytest.mark.parametrize("speed", [17.0, 30.0, 55.0])
def test_outer_race_envelope_peak_at_bpfo_on_a_window(speed: float) -> None:
    x = simulate(_params("outer", speed), np.random.default_rng(4), n_samples=WINDOW)
    _, _, peak = _peak(x, speed)
    assert peak == pytest.approx(BEARING_6205.frequencies(speed)["bpfo"], rel=0.02)


def test_outer_race_peak_follows_the_other_geometry() -> None:
    x = simulate(_params("outer", 30.0), np.random.default_rng(5), n_samples=FS * 3, geometry=BEARING_6203)
    _, _, peak = _peak(x, 30.0)
    assert peak == pytest.approx(BEARING_6203.frequencies(30.0)["bpfo"], rel=0.02)


def test_inner_race_peak_at_bpfi_with_shaft_rate_sidebands() -> None:
    speed = 25.0
    x = simulate(_params("inner", speed, snr=None, severity=1.0), np.random.default_rng(6), n_samples=FS * 4)
    f, a, peak = _peak(x, speed)
    bpfi = BEARING_6205.frequencies(speed)["bpfi"]
    assert peak == pytest.approx(bpfi, rel=0.02)

    def near(hz: float) -> float:
        return float(a[np.abs(f - hz) < 0.6].max())

    floor = float(np.median(a[(f > 0.5 * speed) & (f < 12 * speed)]))
    for side in (bpfi - speed, bpfi + speed):
        assert near(side) > 10 * floor, f"no sideband at {side:.1f} Hz"
    # Between the carrier and the sidebands the spectrum is low again: they are distinct lines.
    assert near(bpfi - speed / 2) < 0.5 * near(bpfi - speed)


def test_ball_fault_repeats_at_bsf() -> None:
    x = simulate(_params("ball", 30.0, snr=None), np.random.default_rng(7), n_samples=FS * 4)
    _, _, peak = _peak(x, 30.0)
    assert peak == pytest.approx(BEARING_6205.frequencies(30.0)["bsf"], rel=0.02)


def test_normal_bearing_has_no_fault_line() -> None:
    x = simulate(_params("normal", 30.0, snr=10.0), np.random.default_rng(8), n_samples=FS * 3)
    f, a = envelope_spectrum(x)
    band = (f > 15) & (f < 360)
    assert a[band].max() < 6 * np.median(a[band])


def test_same_seed_same_signal_other_seed_differs() -> None:
    def draw(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return simulate(draw_params("inner", 0.6, 33.0, 5.0, rng), rng)

    assert np.array_equal(draw(11), draw(11))
    assert not np.allclose(draw(11), draw(12))


def test_impulse_responses_share_envelope_area() -> None:
    # Without normalisation the slowest and fastest decays differ ~6.7x in envelope area.
    areas = [np.abs(hilbert(impulse_response(fn, z))).sum() / FS for fn, z in [(2000, 0.03), (5000, 0.08)]]
    assert areas[0] == pytest.approx(areas[1], rel=0.15)


def test_snr_is_against_a_fixed_reference() -> None:
    quiet = simulate(_params("normal", 30.0, snr=None), np.random.default_rng(9))
    noisy = simulate(_params("normal", 30.0, snr=0.0), np.random.default_rng(9))
    noise = noisy - quiet
    assert noise.std() == pytest.approx(reference_rms(), rel=0.05)
    # the noise does not scale with the fault's energy: weak and strong faults get the same noise
    for severity in (0.25, 1.4):
        fault = simulate(_params("outer", 30.0, snr=None, severity=severity), np.random.default_rng(9))
        fault_noisy = simulate(_params("outer", 30.0, snr=0.0, severity=severity), np.random.default_rng(9))
        assert np.std(fault - quiet) > 0.01  # there is a fault signal, of a severity-dependent energy
        assert (fault_noisy - fault).std() == pytest.approx(noise.std(), rel=0.02)
    # and 20 dB more SNR is a tenth of the noise amplitude
    clean = simulate(_params("normal", 30.0, snr=20.0), np.random.default_rng(9)) - quiet
    assert clean.std() == pytest.approx(reference_rms() / 10.0, rel=0.05)


def test_severity_scales_fault_energy() -> None:
    lo = simulate(_params("outer", 30.0, snr=None, severity=0.25), np.random.default_rng(1))
    hi = simulate(_params("outer", 30.0, snr=None, severity=1.4), np.random.default_rng(1))
    shaft = simulate(_params("normal", 30.0, snr=None), np.random.default_rng(1))
    assert np.std(hi - shaft) == pytest.approx(np.std(lo - shaft) * 1.4 / 0.25, rel=0.01)


def test_ten_classes_map_to_faults() -> None:
    names = class_names()
    assert len(names) == 10 and names[0] == "normal"
    assert class_fault(0) == ("normal", 0.0)
    assert class_fault(1) == ("inner", 0.25) and class_fault(9) == ("ball", 1.4)
