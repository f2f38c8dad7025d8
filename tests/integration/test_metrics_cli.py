"""`hilt tune --metrics-port`, `hilt nightly --metrics-port --pushgateway` end to end: the CLI processes
are scraped by a real Prometheus while they run, and nightly pushes to a real Pushgateway."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_nightly import _free_port, _start, lab  # noqa: F401 - the nightly lab fixture
from tests.unit.prune_tiny import write_tiny_task

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("prom")
    ports = {"tune": _free_port(), "nightly": _free_port(), "gw": _free_port(), "prom": _free_port()}
    gw = _start(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{ports['gw']}"], ports["gw"])
    cfg = root / "prometheus.yml"
    jobs = "".join(
        f"  - job_name: hilt-{job}\n    static_configs:\n      - targets: ['127.0.0.1:{ports[job]}']\n"
        for job in ("tune", "nightly")
    )
    cfg.write_text(
        f"global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}"
        f"  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{ports['gw']}']\n"
    )
    prom = _start(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={root / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{ports['prom']}"], ports["prom"],
    )  # fmt: skip

    def query(q: str) -> list:
        url = f"http://127.0.0.1:{ports['prom']}/api/v1/query?query={urllib.parse.quote(q)}"
        return json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]

    try:
        yield {"ports": ports, "query": query}
    finally:
        for p in (prom, gw):
            p.terminate()
        for p in (prom, gw):
            p.wait(timeout=20)


def _poll(query, q: str, timeout: float = 60) -> list:  # noqa: ANN001
    end = time.monotonic() + timeout
    while True:
        got = query(q)
        if got or time.monotonic() > end:
            return got
        time.sleep(0.5)


def test_tune_metrics_port_is_scraped_by_prometheus(prometheus: dict, tmp_path: Path) -> None:
    task = write_tiny_task(tmp_path / "task")
    port = prometheus["ports"]["tune"]
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "tune", "--model", str(task["model"]), "--calib",
         str(task["calib"]), "--val", str(task["val"]), "--trials", "2", "--storage",
         f"sqlite:///{tmp_path / 'hilt.db'}", "--study", "scraped", "--max-steps", "0", "--max-stages", "1",
         "--no-sia", "--out", str(tmp_path / "runs"), "--metrics-port", str(port)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"metrics on http://127.0.0.1:{port}/metrics" in out.stdout
    query = prometheus["query"]
    # the process is gone now; what Prometheus scraped from it while it ran stays in its database
    started = _poll(
        query, 'max_over_time(hilt_trials_total{job="hilt-tune",study="scraped",outcome="started"}[10m])'
    )
    assert started and float(started[0]["value"][1]) >= 1.0, started
    done = _poll(
        query, 'max_over_time(hilt_trials_total{job="hilt-tune",study="scraped",outcome="completed"}[10m])'
    )
    assert done and float(done[0]["value"][1]) >= 1.0, done  # seen during trial 2, after trial 1 completed
    lat = _poll(query, 'max_over_time(hilt_bench_latency_seconds_count{job="hilt-tune",board="local"}[10m])')
    assert lat and float(lat[0]["value"][1]) >= 1.0


def test_nightly_metrics_port_scraped_and_pushgateway_pushed(
    prometheus: dict,
    lab: dict,  # noqa: F811
) -> None:
    ports = prometheus["ports"]
    cmd = [
        sys.executable, "-m", "harness.cli.main", "nightly", "--farm", str(lab["root"] / "farm.toml"),
        "--suite", str(lab["ok"]), "--run", "pushed", "--storage", f"sqlite:///{lab['db']}",
        "--out", str(lab["root"] / "pushed"), "--min-iters", "200", "--min-seconds", "1.0",
        "--metrics-port", str(ports["nightly"]), "--pushgateway", f"127.0.0.1:{ports['gw']}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"pushed 2 cases to 127.0.0.1:{ports['gw']}" in out.stdout
    query = prometheus["query"]
    # pushed: the run's gauges reach Prometheus through the Pushgateway, labelled with job and run
    for board in ("a", "b"):
        got = _poll(
            query, f'hilt_nightly_latency_p50_seconds{{job="hilt_nightly",run="pushed",board="{board}"}}'
        )
        assert got and float(got[0]["value"][1]) > 0, (board, got)
        err = _poll(query, f'hilt_nightly_error{{job="hilt_nightly",run="pushed",board="{board}"}}')
        assert err and float(err[0]["value"][1]) == 0.0
    # scraped: the live endpoint answered while the run went on, with a board's gauge set as its bench
    # ended (the two boards share one machine, so the first one's is up while the second benches)
    up = _poll(query, 'max_over_time(up{job="hilt-nightly"}[10m])')
    assert up and float(up[0]["value"][1]) == 1.0
    boards = _poll(query, 'max_over_time(hilt_board_up{job="hilt-nightly"}[10m])')
    assert boards and all(float(b["value"][1]) == 1.0 for b in boards), boards
    assert {b["metric"]["board"] for b in boards} <= {"a", "b"}
