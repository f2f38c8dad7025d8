"""Prometheus metrics for `tune` and `nightly`: a scrape endpoint while running, a push after nightly.

The push follows Prometheus' batch-job convention: job = "hilt_nightly", instance = the host (or
what the user names), one grouping per run, gauges that describe the finished run.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server

from tuner.events import OnEvent, TrialCompleted, TrialFailed, TrialRejected, TrialStarted, TuneEvent, ignore

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class HiltMetrics:
    """The live metrics of one hilt process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.trials = Counter("hilt_trials", "Tuning trials by outcome", ["study", "outcome"], registry=r)
        self.bench_latency = Histogram(
            "hilt_bench_latency_seconds", "Median latency of each bench", ["board"], buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.board_up = Gauge(
            "hilt_board_up", "1 if the board answered its last request", ["board"], registry=r
        )
        self.lease_wait = Histogram(
            "hilt_lease_wait_seconds", "Time waited for a board lease", ["board"], registry=r,
            buckets=(0.01, 0.1, 1, 5, 30, 120, 600),
        )  # fmt: skip
        self.line_frames = Counter(
            "hilt_line_frames", "Frames on a board's serial line by outcome (sent, failed, crc_error, "
            "resync, retry)", ["board", "outcome"], registry=r,
        )  # fmt: skip
        self.line_upload_bytes = Counter(
            "hilt_line_upload_bytes", "Upload payload a board acknowledged over its serial line", ["board"],
            registry=r,
        )  # fmt: skip
        self.line_goodput = Gauge(
            "hilt_line_goodput_bytes_per_second", "Upload goodput of a board's serial line, last measurement",
            ["board"], registry=r,
        )  # fmt: skip
        self.server = None

    def observe_line(self, board: str, line: Any) -> None:
        """Add one measurement's line counters (a `records.LineQuality`) to the board's totals."""
        for outcome, count in (("sent", line.frames_sent), ("failed", line.frames_failed),
                               ("crc_error", line.crc_errors), ("resync", line.resyncs),
                               ("retry", line.retries)):  # fmt: skip
            self.line_frames.labels(board, outcome).inc(count)
        self.line_upload_bytes.labels(board).inc(line.upload_bytes)
        if line.goodput_bps is not None:
            self.line_goodput.labels(board).set(line.goodput_bps)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the scrape endpoint; returns the bound port (0 picks a free one)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self.server = server
        bound = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", addr, bound)
        return int(bound)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def tune_event_hook(self, study: str, inner: OnEvent = ignore) -> OnEvent:
        """Wrap the tuner's event callback so every trial event also updates the metrics."""

        def hook(event: TuneEvent) -> None:
            match event:
                case TrialStarted() | TrialFailed() | TrialRejected():
                    self.trials.labels(study, event.outcome).inc()
                case TrialCompleted(result=r):
                    self.trials.labels(study, event.outcome).inc()
                    self.bench_latency.labels(r.board).observe(r.latency_ms / 1000.0)
                    self.lease_wait.labels(r.board).observe(r.lease_wait_s)
                    self.board_up.labels(r.board).set(1)
            inner(event)

        return hook

    def nightly_bench_hook(self) -> Callable[[str, str, object], None]:
        """For `run_nightly(on_bench=...)`: each finished bench sets its board's gauge and latency."""

        def hook(_case: str, board: str, record: object) -> None:
            self.board_up.labels(board).set(0 if record is None else 1)
            if record is not None:
                self.bench_latency.labels(board).observe(record.summary.median_ns / 1e9)  # type: ignore[attr-defined]
                if getattr(record, "line", None) is not None:  # a serial board: its line quality too
                    self.observe_line(board, record.line)  # type: ignore[attr-defined]

        return hook


@dataclass
class CaseMetrics:
    case: str
    board: str
    latency_p50_s: float | None
    latency_p90_s: float | None
    peak_rss_bytes: float | None
    energy_j: float | None
    regression: bool
    error: bool


def push_nightly(url: str, run: str, cases: list[CaseMetrics], instance: str | None = None) -> None:
    """Push one finished nightly run to a Pushgateway (job=hilt_nightly, instance=host)."""
    registry = CollectorRegistry()
    labels = ["case", "board"]
    gauges = {
        "p50": Gauge("hilt_nightly_latency_p50_seconds", "Median latency", labels, registry=registry),
        "p90": Gauge("hilt_nightly_latency_p90_seconds", "p90 latency", labels, registry=registry),
        "mem": Gauge("hilt_nightly_peak_rss_bytes", "Peak resident memory", labels, registry=registry),
        "energy": Gauge("hilt_nightly_energy_joules", "Energy per inference", labels, registry=registry),
        "reg": Gauge("hilt_nightly_regression", "1 if the case regressed", labels, registry=registry),
        "err": Gauge("hilt_nightly_error", "1 if the case could not run", labels, registry=registry),
    }
    done = Gauge("hilt_nightly_last_completion_timestamp_seconds", "When the run finished", registry=registry)
    for c in cases:
        key = (c.case, c.board)
        for name, value in (("p50", c.latency_p50_s), ("p90", c.latency_p90_s), ("mem", c.peak_rss_bytes),
                            ("energy", c.energy_j)):  # fmt: skip
            if value is not None:
                gauges[name].labels(*key).set(value)
        gauges["reg"].labels(*key).set(1 if c.regression else 0)
        gauges["err"].labels(*key).set(1 if c.error else 0)
    done.set_to_current_time()
    push_to_gateway(
        url, job="hilt_nightly", registry=registry,
        grouping_key={"instance": instance or socket.gethostname(), "run": run},
    )  # fmt: skip
