"""The regression verdict: a real 20% slowdown is flagged, noise is not; suite files and JUnit XML."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import ConfigError
from reports.compare import compare
from reports.junit import CaseResult, validate_junit, write_junit
from reports.suite import Thresholds, load_suite

TH = Thresholds()


def _samples(median_us: float, n: int, seed: int, cv: float = 0.03) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.lognormal(np.log(median_us * 1000), cv, n)]


def test_twenty_percent_slowdown_is_a_regression() -> None:
    c = compare(_samples(120, 200, 1), _samples(100, 200, 2), TH)
    assert c.regressed and c.latency_change_pct == pytest.approx(20, abs=2) and c.latency_p < 1e-6


def test_noise_is_not_a_regression() -> None:
    for seed in range(10):
        assert not compare(_samples(100, 200, seed), _samples(100, 200, seed + 100), TH).regressed


def test_significant_but_tiny_change_is_not_a_regression() -> None:
    c = compare(_samples(102, 5000, 1, cv=0.01), _samples(100, 5000, 2, cv=0.01), TH)
    assert c.latency_p < 0.01 and not c.regressed  # statistically real, practically irrelevant


def test_faster_is_never_a_regression() -> None:
    assert not compare(_samples(70, 100, 1), _samples(100, 100, 2), TH).regressed


def test_memory_and_energy_thresholds() -> None:
    same = _samples(100, 100, 1)
    c = compare(same, same, TH, memory=(110.0, 100.0), energy=(1.02, 1.0))
    assert c.regressions == ["peak memory +10.0%"]


def test_junit_xml_validates_and_counts(tmp_path) -> None:
    results = [
        CaseResult("a", "b1", 1.0, "pass", "ok", "median 1 ms"),
        CaseResult("a", "b2", 1.5, "regression", "latency median +20%", "details"),
        CaseResult("a", "b3", 0.1, "error", "board down", "connection refused"),
    ]
    path = write_junit("s", "r1", results, tmp_path / "junit.xml")
    validate_junit(path)
    text = path.read_text()
    assert 'tests="3"' in text and 'failures="1"' in text and 'errors="1"' in text
    bad = tmp_path / "bad.xml"
    bad.write_text('<testsuites><testsuite name="x"><testcase/></testsuite></testsuites>')
    with pytest.raises(Exception, match="name|tests"):
        validate_junit(bad)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('version = 1\nname = "s"\n', "case"),
        ('version = 2\nname = "s"\n[[case]]\nname = "a"\nmodel = "m"\nprofiles = ["local"]\n', "version"),
        ('version = 1\nname = "s"\n[[case]]\nname = "a"\nprofiles = ["local"]\n', "exactly one of"),
        ('version = 1\nname = "s"\n[[case]]\nname = "a"\nmodel = "m"\nprofiles = []\n', "profiles"),
        ('version = 1\nname = "s"\n[thresholds]\nalpha = 2\n[[case]]\nname = "a"\nmodel = "m"\n'
         'profiles = ["x"]\n', "thresholds.alpha"),
        ('version = 1\nname = "s"\n[[case]]\nname = "a"\nmodel = "m"\nprofiles = ["x"]\n'
         '[[case]]\nname = "a"\nmodel = "n"\nprofiles = ["x"]\n', "once per profile"),
        ("version = [", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_suite_files(tmp_path, body: str, message: str) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as err:
        load_suite(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_suite_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "nope.toml")
