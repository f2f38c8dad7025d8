"""The deployment report from a real small study: content equals the database; renders in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from tests.cli_errors import one_error_line
from tests.unit.prune_tiny import write_tiny_task
from tuner.store import ResultsStore

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from harness.cli.main import main

    root = tmp_path_factory.mktemp("report")
    write_tiny_task(root)
    db = root / "hilt.db"
    args = ["tune", "--model", str(root / "tiny"), "--calib", str(root / "calib.npz"),
            "--val", str(root / "val.npz"), "--trials", "3", "--storage", f"sqlite:///{db}", "--study", "rep",
            "--max-steps", "10", "--max-stages", "2", "--no-sia", "--out", str(root / "runs")]  # fmt: skip
    assert main(args) == 0
    assert main(["report", "--study", "rep", "--storage", f"sqlite:///{db}", "--out", str(root / "out")]) == 0
    return {"root": root, "db": db, "out": root / "out"}


def test_report_sections_and_numbers_match_the_database(study) -> None:
    html = (study["out"] / "report.html").read_text()
    md = (study["out"] / "report.md").read_text()
    for section in ("summary", "schedule", "sia", "pareto", "latency", "board", "versions", "reproduce"):
        assert f'id="{section}"' in html, section
    assert html.count("<svg") >= 2
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained: nothing fetched to view it
    s = optuna.load_study(study_name="rep", storage=f"sqlite:///{study['db']}")
    done = s.get_trials(states=(TrialState.COMPLETE,))
    chosen = max(done, key=lambda t: (t.user_attrs["accuracy"], -t.user_attrs["latency_ms"]))
    a = chosen.user_attrs
    assert f"chosen (trial {chosen.number})" in html
    assert f"{a['accuracy']:.4f}" in html and f"{a['latency_ms']:.4f}" in html and a["bundle"] in html
    dense = s.user_attrs["dense"]
    assert f"{dense['latency_ms']:.4f}" in html
    change = (a["latency_ms"] / dense["latency_ms"] - 1) * 100
    assert f"{change:+.1f}% latency" in html and f"{change:+.1f}% latency" in md
    rows = ResultsStore(f"sqlite:///{study['db']}").measurements(study="rep")
    record = next(r["record"] for r in rows if r["trial_number"] == chosen.number)
    assert f"{len(record['samples_ns'])} samples" in html
    assert "estimate (power model)" in html  # the local board has no sensor: energy is labelled
    assert (study["out"] / "schedule.json").read_text().strip().startswith("{")
    # how each measured bundle's kernels were made (`hilt tune --kernel-tuning`, default db)
    assert a["kernels"].startswith("db, hilt-cpu") and dense["kernels"].startswith("db, hilt-cpu")
    assert 'id="kernels"' in html and a["kernels"] in md and dense["kernels"] in md


def test_report_errors(study, capsys) -> None:
    from harness.cli.main import main

    assert main(["report", "--study", "nope", "--storage", f"sqlite:///{study['db']}"]) == 2
    assert "no study named 'nope'" in one_error_line(capsys)
    assert main(["report", "--study", "rep", "--storage", f"sqlite:///{study['db']}", "--trial", "999"]) == 2
    assert "no completed trial 999" in one_error_line(capsys)


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")
def test_report_renders_in_headless_chromium(study, tmp_path) -> None:
    png = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
           f"--screenshot={png}", f"file://{study['out'] / 'report.html'}"]  # fmt: skip
    subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file() and png.stat().st_size > 20_000
    from PIL import Image

    img = Image.open(png).convert("L")
    hist = img.histogram()
    assert max(hist) < 0.97 * sum(hist), "the screenshot is blank"
    dom = subprocess.run(cmd[:-2] + ["--dump-dom", f"file://{study['out'] / 'report.html'}"],
                         capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    assert len(re.findall(r"<svg", dom)) >= 2 and 'id="pareto-plot"' in dom
