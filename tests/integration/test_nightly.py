"""Nightly regression for real: local boards, real benches, a slowdown on one board, a dead board,
JUnit XML, and the metrics scraped by a real Prometheus and pushed to a real Pushgateway."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.prune_tiny import tiny_model

pytestmark = pytest.mark.timeout(1500)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("nightly")
    small, big = root / "small", root / "big"
    tiny_model("gpt2", layers=2).save_pretrained(small)
    tiny_model("gpt2", layers=6).save_pretrained(big)  # the "regressed" build: 3x the blocks
    local = Path(__file__).resolve().parents[2] / "profiles" / "local.toml"
    (root / "local-b.toml").write_text(local.read_text().replace('name = "local"', 'name = "local-b"'))
    dead_port = _free_port()
    (root / "farm.toml").write_text(
        'version = 1\n'
        '[[board]]\nname = "a"\nprofile = "local"\n'
        f'[[board]]\nname = "b"\nprofile = "{root / "local-b.toml"}"\n'
    )  # fmt: skip
    (root / "farm-dead.toml").write_text(
        (root / "farm.toml").read_text() + f'[[board]]\nname = "dead"\nprofile = "{root / "local-b.toml"}"\n'
        f'[board.transport]\nkind = "ssh"\nhost = "127.0.0.1"\nport = {dead_port}\nuser = "root"\n'
    )

    def suite(name: str, b_model: Path, latency_pct: float = 50.0) -> Path:
        p = root / f"{name}.toml"
        p.write_text(
            # the two local boards share one machine and now take turns (board pool), but other jobs on a
            # loaded CI machine still move a 40 µs workload by tens of percent between nights: the suite
            # flags +50% (the "regressed" build is 3x the blocks, far above it)
            f'version = 1\nname = "edge"\n[thresholds]\nlatency_pct = {latency_pct}\nmemory_pct = 15.0\n'
            f'[[case]]\nname = "m"\nmodel = "{small}"\nprofiles = ["local"]\n'
            f'seq_len = 12\n[[case]]\nname = "m"\nmodel = "{b_model}"\nprofiles = ["local-b"]\nseq_len = 12\n'
        )
        return p

    # the dead-board night checks how a dead board is reported, not noise: a CI machine loaded by other
    # jobs has moved the healthy boards' median by +84% on that night, so its threshold is far wider
    return {
        "root": root,
        "db": root / "nightly.db",
        "ok": suite("ok", small),
        "slow": suite("slow", big),
        "ok-wide": suite("ok-wide", small, latency_pct=1000.0),
    }


def _nightly(
    lab: dict, suite: str, run: str, *extra: str, farm: str = "farm.toml"
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "harness.cli.main", "nightly", "--farm", str(lab["root"] / farm),
        "--suite", str(lab[suite]), "--run", run, "--storage", f"sqlite:///{lab['db']}",
        "--out", str(lab["root"] / run), "--min-iters", "200", "--min-seconds", "1.0", *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def _junit(lab: dict, run: str) -> str:
    from reports.junit import validate_junit

    path = lab["root"] / run / "junit.xml"
    validate_junit(path)
    return path.read_text()


def test_baseline_then_noise_then_slowdown_then_dead_board(lab) -> None:
    first = _nightly(lab, "ok", "n1", "--update-baseline")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _junit(lab, "n1").count("<testcase") == 2

    noise = _nightly(lab, "ok", "n2")
    assert noise.returncode == 0, noise.stdout + noise.stderr
    assert 'failures="0"' in _junit(lab, "n2")

    slow = _nightly(lab, "slow", "n3")
    assert slow.returncode == 1, slow.stdout + slow.stderr
    xml = _junit(lab, "n3")
    assert 'failures="1"' in xml and 'name="m@b"' in xml
    assert xml.split('name="m@b"')[1].split("</testcase>")[0].count("<failure") == 1
    assert xml.split('name="m@a"')[1].split("</testcase>")[0].count("<failure") == 0
    from tuner.store import ResultsStore, stored_record

    for run in ("n1", "n2", "n3"):  # boards a and b share this machine: their benches never overlap
        rows = ResultsStore(f"sqlite:///{lab['db']}").measurements(run=run)
        a, b = (stored_record(r) for r in sorted(rows, key=lambda r: r["board"]))
        assert a.machine == b.machine and (a.finished_at <= b.started_at or b.finished_at <= a.started_at)

    dead = _nightly(lab, "ok-wide", "n4", farm="farm-dead.toml")
    assert dead.returncode == 2, dead.stdout + dead.stderr
    xml = _junit(lab, "n4")
    assert 'errors="1"' in xml and 'failures="0"' in xml and 'name="m@dead"' in xml
    html = (lab["root"] / "n4" / "nightly.html").read_text()
    assert "data:image/png;base64," in html  # trend plot over the nights so far


def _start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{cmd[0]} did not listen on {port}")


@pytest.mark.skipif(not shutil.which("prometheus"), reason="Debian prometheus not installed")
def test_prometheus_scrapes_hilt_and_pushgateway_gets_nightly(lab, tmp_path) -> None:
    from reports.metrics import CaseMetrics, HiltMetrics, push_nightly
    from tuner.events import TrialCompleted, TrialStarted
    from tuner.results import TrialResult

    metrics = HiltMetrics()
    hilt_port = metrics.serve(0)
    hook = metrics.tune_event_hook("s")
    hook(TrialStarted(0))
    result = TrialResult(
        board="a", bundle="b" * 64, latency_ms=1.5, latency_p90_ms=2.0, peak_rss_mb=10.0, lease_wait_s=0.2
    )
    hook(TrialCompleted(0, [0.9, 1.5], result))
    gw_port, prom_port = _free_port(), _free_port()
    gw = _start(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{gw_port}"], gw_port)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n"
        f"  - job_name: hilt\n    static_configs:\n      - targets: ['127.0.0.1:{hilt_port}']\n"
        f"  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{gw_port}']\n"
    )
    prom = _start(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"], prom_port,
    )  # fmt: skip
    try:
        push_nightly(
            f"127.0.0.1:{gw_port}", "n1", [CaseMetrics("m", "a", 0.001, 0.002, 1e6, None, True, False)]
        )

        def query(q: str) -> list:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={urllib.parse.quote(q)}"
            return json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]

        import urllib.parse

        end = time.monotonic() + 60
        got_trials = got_push = []
        while time.monotonic() < end and not (got_trials and got_push):
            got_trials = query('hilt_trials_total{outcome="completed"}')
            got_push = query('hilt_nightly_regression{job="hilt_nightly",case="m",board="a"}')
            time.sleep(1)
        assert got_trials and float(got_trials[0]["value"][1]) == 1.0
        assert got_push and float(got_push[0]["value"][1]) == 1.0 and got_push[0]["metric"]["instance"]
        assert query('hilt_bench_latency_seconds_count{board="a"}')
    finally:
        prom.terminate()
        gw.terminate()
        metrics.stop()
        prom.wait(timeout=20)
        gw.wait(timeout=20)
