"""Demo splits: seeded, balanced, disjoint from each other in seeds and (for test/val) in speeds; cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data import ClassificationData, load_demo_split
from harness.data.splits import (
    HELD_OUT_BANDS_HZ,
    SPLITS,
    draw_speed,
    generate_split,
    in_held_out_band,
    split_cache_path,
)
from harness.data.tokenizer import SEQ_LEN, VOCAB_SIZE
from harness.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path))
    return tmp_path


def test_split_seeds_are_distinct() -> None:
    seeds = [s.seed for s in SPLITS.values()]
    assert len(set(seeds)) == len(seeds)


def test_speed_bands() -> None:
    rng = np.random.default_rng(0)
    train = [draw_speed(rng, held_out=False) for _ in range(3000)]
    held = [draw_speed(rng, held_out=True) for _ in range(3000)]
    assert not any(in_held_out_band(s) for s in train)
    assert all(in_held_out_band(s) for s in held)
    assert 10.0 <= min(train) < 11.0 and 59.0 < max(train) <= 60.0
    for a, b in HELD_OUT_BANDS_HZ:  # every held-out band is used
        assert any(a <= s <= b for s in held)


def test_splits_are_disjoint_and_test_speeds_unseen() -> None:
    tr_ids, _, tr_speed = generate_split("train", 60)
    te_ids, _, te_speed = generate_split("test", 60)
    va_ids, _, _ = generate_split("val", 60)
    assert not any(in_held_out_band(s) for s in tr_speed)
    assert all(in_held_out_band(s) for s in te_speed)
    rows = {r.tobytes() for r in tr_ids}
    assert not any(r.tobytes() in rows for r in te_ids)
    assert not any(r.tobytes() in {t.tobytes() for t in te_ids} for r in va_ids)


def test_generation_is_deterministic_and_prefix_stable() -> None:
    a, la, _ = generate_split("calib", 25)
    b, lb, _ = generate_split("calib", 12)
    assert np.array_equal(a[:12], b) and np.array_equal(la[:12], lb)
    c, _, _ = generate_split("calib", 25)
    assert np.array_equal(a, c)


def test_load_demo_split_contract_and_balance() -> None:
    d = load_demo_split("val", 40)
    assert isinstance(d, ClassificationData)
    assert d.input_ids.dtype == torch.int64 and d.input_ids.shape == (40, SEQ_LEN)
    assert d.labels.dtype == torch.int64 and d.labels.shape == (40,)
    assert d.num_classes == 10 and len(d.class_names) == 10 and d.vocab_size == VOCAB_SIZE
    assert torch.bincount(d.labels, minlength=10).tolist() == [4] * 10
    assert int(d.input_ids.max()) < d.vocab_size and len(d.subset(10)) == 10


def test_split_is_cached_and_reused(_cache: Path) -> None:
    first = load_demo_split("calib", 15)
    path = split_cache_path("calib", 15)
    assert path.is_file() and path.is_relative_to(_cache)
    mtime = path.stat().st_mtime_ns
    again = load_demo_split("calib", 15)
    assert path.stat().st_mtime_ns == mtime
    assert torch.equal(first.input_ids, again.input_ids)


def test_corrupt_cache_is_regenerated() -> None:
    path = split_cache_path("calib", 7)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    d = load_demo_split("calib", 7)
    assert d.input_ids.shape == (7, SEQ_LEN)
    assert np.load(path, allow_pickle=False)["input_ids"].shape == (7, SEQ_LEN)


@pytest.mark.parametrize(
    ("split", "n", "match"), [("holdout", 5, "unknown demo split"), ("train", 0, "at least")]
)
def test_bad_split_requests(split: str, n: int, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_demo_split(split, n)  # type: ignore[arg-type]
