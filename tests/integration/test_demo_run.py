"""`hilt demo run` end to end on a cold, empty HILT_CACHE, through the real CLI in a subprocess (stdout is a
pipe, so the plain one-line-per-step output is what is checked), then once more warm.

Cold here means: no demo models, no data splits, no board runtime, no bundles. The packaged demo
weights are installed (not trained), the x86_64 runtime is built, the dense model is compiled and
measured on the local board, one tuning trial runs (the seeded sampler's first schedule is feasible on
the shipped demo-gpt2) and a deployment report is written.

The emulated aarch64 board needs root and a debootstrap'd rootfs (minutes on a cold cache), so it
runs only with HILT_TEST_DEMO_EMULATED=1 (as root), with one trial there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "harness" / "demo" / "weights"
EMULATED = os.environ.get("HILT_TEST_DEMO_EMULATED") == "1"

pytestmark = [pytest.mark.timeout(1800 if EMULATED else 900), pytest.mark.slow]


def _demo(cache: Path, out: Path, *extra: str) -> tuple[str, float]:
    env = {**os.environ, "HILT_CACHE": str(cache), "COLUMNS": "200"}
    env.pop("HILT_FARM", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "demo", "run", "--threads", "1", "--out", str(out),
         *extra],
        cwd=out.parent, env=env, capture_output=True, text=True, check=False, timeout=1700,
    )  # fmt: skip
    seconds = time.monotonic() - t0
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    return text, seconds


def _stamp(text: str, needle: str) -> float:
    """Seconds since the start printed on the first line that contains `needle`."""
    for line in text.splitlines():
        if needle in line:
            m = re.match(r"\[\s*([0-9.]+) s\]", line)
            assert m, line
            return float(m.group(1))
    raise AssertionError(f"no line with {needle!r} in:\n{text[-3000:]}")


@pytest.mark.skipif(
    not (WEIGHTS / "demo-gpt2" / "weights.json").is_file(), reason="demo weights not packaged"
)
def test_demo_run_cold_then_warm(tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "demo"
    cache.mkdir()
    assert not any(cache.iterdir())
    extra = ["--trials", "1"] + (["--emulated-trials", "1"] if EMULATED else ["--no-emulated"])
    text, cold_s = _demo(cache, out, *extra)

    # the stages print in order, each as it finishes, with the time since the start
    models = _stamp(text, "demo models — done: demo-gpt2 from the packaged fp16 weights (sha256 verified)")
    first = _stamp(text, "dense demo-gpt2 on local: test accuracy")
    trial = _stamp(text, "trial 0:")
    report = _stamp(text, "deployment report for study demo-local — done")
    assert models <= first <= trial <= report
    assert "board runtime for x86_64 (TVM runtime + hilt-runner) — done: built" in text
    m = re.search(r"dense demo-gpt2 on local: test accuracy ([0-9.]+)%, latency ([0-9.]+) ms median .*"
                  r"peak memory ([0-9.]+) MB", text)  # fmt: skip
    assert m, text[-3000:]
    acc, latency, memory = (float(g) for g in m.groups())
    assert acc >= 93.0 and latency > 0 and memory > 1
    assert "\r" not in text and "━" not in text.split("per-class")[0]  # no redrawn bars in a log

    html = out / "report-demo-local" / "report.html"
    md = (out / "report-demo-local" / "report.md").read_text()
    assert html.is_file() and f"report demo-local: {html.resolve()}" in text.replace("\n", "")
    assert "open it: xdg-open" in text
    row = re.search(r"\| latency p50 \(ms\) \| ([0-9.]+) \| ([0-9.]+) \|", md)
    assert row and float(row.group(1)) > 0 and float(row.group(2)) > 0, md[:2000]
    mem = re.search(r"\| peak memory \(MB\) \| ([0-9.]+) \| ([0-9.]+) \|", md)
    assert mem and float(mem.group(1)) > 1 and float(mem.group(2)) > 1
    if EMULATED:
        assert (out / "report-demo-qemu-aarch64" / "report.html").is_file(), text[-3000:]

    # warm: everything comes from a cache and says so; the finished study is not re-run
    text, warm_s = _demo(cache, out, *extra)
    assert "demo models — cached" in text
    assert "board runtime for x86_64 (TVM runtime + hilt-runner) — cached" in text
    assert "compiling dense demo-gpt2 for local — cached" in text
    assert "study demo-local already complete (1 of 1 trials" in text
    assert html.is_file() and warm_s < cold_s
    print(f"cold {cold_s:.0f} s (first result at {first:.0f} s), warm {warm_s:.0f} s")
