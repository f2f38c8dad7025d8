"""Tokeniser: fixed layout, ids within the vocabulary, never the pad id, clear errors on bad windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data.simulator import WINDOW, draw_params, simulate
from harness.data.tokenizer import (
    CLS_ID,
    LEVELS,
    PAD_ID,
    SEQ_LEN,
    SPEC_BASE,
    SPEED_BASE,
    SPEED_LEVELS,
    VOCAB_SIZE,
    speed_token,
    tokenise_window,
)
from harness.errors import DataError


def test_layout_and_bounds_on_simulated_windows() -> None:
    rng = np.random.default_rng(0)
    for kind, sev in [("normal", 0.0), ("outer", 1.4), ("inner", 0.25), ("ball", 0.6)]:
        for speed, snr in [(10.0, 0.0), (60.0, 14.0), (35.0, 7.0)]:
            x = simulate(draw_params(kind, sev, speed, snr, rng), rng)
            ids = tokenise_window(x, speed)
            assert ids.shape == (SEQ_LEN,) and ids.dtype == np.int64
            assert ids[-1] == CLS_ID and ids[0] == speed_token(speed)
            assert np.all((ids[1:-1] >= SPEC_BASE) & (ids[1:-1] < SPEC_BASE + LEVELS))
            assert PAD_ID not in ids and ids.max() < VOCAB_SIZE
    assert SEQ_LEN <= 256


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(1e-9, 1e6),
    speed=st.floats(1.0, 400.0),
    seed=st.integers(0, 2**16),
    n=st.integers(256, 6000),
)
def test_any_finite_signal_stays_in_vocabulary(scale: float, speed: float, seed: int, n: int) -> None:
    x = np.random.default_rng(seed).standard_normal(n) * scale
    ids = tokenise_window(x, speed)
    assert ids.shape == (SEQ_LEN,)
    assert ids.min() >= 1 and ids.max() < VOCAB_SIZE


def test_constant_signal_gives_lowest_levels() -> None:
    ids = tokenise_window(np.ones(WINDOW), 30.0)
    assert np.all(ids[1:-1] == SPEC_BASE)


def test_speed_token_is_monotone_and_clipped() -> None:
    toks = [speed_token(s) for s in (1.0, 10.0, 20.0, 40.0, 60.0, 500.0)]
    assert toks == sorted(toks)
    assert toks[0] == toks[1] == SPEED_BASE and toks[-1] == toks[-2] == SPEED_BASE + SPEED_LEVELS - 1


def test_fault_changes_the_tokens_at_its_order() -> None:
    rng = np.random.default_rng(1)
    normal = tokenise_window(simulate(draw_params("normal", 0.0, 30.0, 10.0, rng), rng), 30.0)
    outer = tokenise_window(simulate(draw_params("outer", 1.4, 30.0, 10.0, rng), rng), 30.0)
    bpfo_bin = int((3.585 - 0.1) / (11.9 / 64))  # spectrum bin holding BPFO
    assert outer[1 + bpfo_bin] > normal[1 + bpfo_bin] + 20


@pytest.mark.parametrize(
    ("x", "speed", "match"),
    [
        (np.zeros((2, 4096)), 30.0, "1-D"),
        (np.zeros(100), 30.0, "at least 256"),
        (np.r_[np.zeros(4095), np.nan], 30.0, "NaN"),
        (np.zeros(4096), 0.0, "positive"),
        (np.zeros(4096), float("nan"), "positive"),
        (np.zeros(4096), 600.0, "Nyquist"),
    ],
)
def test_bad_windows_are_refused_with_one_line(x: np.ndarray, speed: float, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        tokenise_window(x, speed)
    assert "\n" not in str(err.value)
