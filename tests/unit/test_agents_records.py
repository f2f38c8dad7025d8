"""Measurement records: summaries derived from all samples, JSON round trip, malformed files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from device_agents.records import LatencySummary, MeasurementRecord, load_record, percentile
from harness.errors import ConfigError


def _result(samples: list[int]) -> dict:
    facts = {
        "governors": {"0": "performance"},
        "freqs_khz": {"0": {"cur": 1, "max": 2}},
        "temps_c": {"cpu": 40.0},
    }
    now = time.time()
    return {
        "runner": {
            "ok": True, "runner_version": "0.1.0", "tvm_version": "0.27", "warmup": 3, "samples_ns": samples,
            "peak_rss_kb": 1234, "output_checksum": 1.5, "output_shape": [1, 4], "threads": 2,
        },
        "energy": {"source": "model", "sensor": "profile power model", "samples": 0, "idle_w": 2.0,
                   "mean_w": 4.0, "total_j_per_inference": 0.004, "active_j_per_inference": 0.002},
        "facts_before": facts, "facts_after": facts, "throttled": False, "throttle_reasons": [],
        "started_at": now, "finished_at": now + 1, "cores": [0, 1],
    }  # fmt: skip


def _record(samples: list[int]) -> MeasurementRecord:
    hello = {"protocol": 1, "agent_version": "0.1.0", "arch": "x86_64", "cpu_model": "cpu", "cpu_count": 2}
    return MeasurementRecord.from_agent(
        _result(samples), board="b", profile="local", transport="local", artifact="a" * 64, runtime="r" * 64,
        hello=hello,
    )  # fmt: skip


def test_percentiles_interpolate() -> None:
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([10, 20, 30, 40], 100) == 40
    assert percentile([7], 99) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_statistics() -> None:
    s = LatencySummary.of([100, 100, 100, 100, 200])
    assert (s.n, s.median_ns, s.min_ns, s.max_ns, s.mean_ns) == (5, 100, 100, 200, 120)
    assert s.p90_ns == pytest.approx(160)
    assert s.cv == pytest.approx(2000**0.5 / 120)  # sample sd (n-1) over the mean
    assert LatencySummary.of([5, 5, 5]).cv == 0


def test_record_keeps_every_sample_and_round_trips(tmp_path: Path) -> None:
    samples = list(range(1000, 1100))
    rec = _record(samples)
    assert rec.samples_ns == samples and rec.threads == 2 and rec.cores == [0, 1]
    assert rec.summary.median_ns == pytest.approx(1049.5)
    assert rec.energy.source == "model" and rec.board_facts["arch"] == "x86_64"
    path = rec.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["summary"]["n"] == 100
    back = load_record(path)
    assert back == rec


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{", "cannot read measurement record"),
        ('{"version": 9}', "version 9"),
        ('{"version": 1, "board": "b"}', "not a valid measurement record"),
    ],
)
def test_malformed_record_files(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_record(path)


def test_record_rejects_unknown_energy_source() -> None:
    res = _result([1, 2])
    res["energy"]["source"] = "guess"
    with pytest.raises(ValueError):
        MeasurementRecord.from_agent(
            res, board="b", profile="p", transport="t", artifact="a", runtime="r", hello={}
        )
