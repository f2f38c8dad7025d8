"""Tuner events are typed: each consumer (the `hilt tune` view, the demo job, the metrics hook)
dispatches on the event's class and reads typed fields, and ignores kinds it does not show."""

from __future__ import annotations

import io
from typing import Any

from prometheus_client import generate_latest
from rich.console import Console
from rich.progress import Progress

from tuner.events import (
    SiaSpaceChosen,
    Step,
    TrialCompleted,
    TrialFailed,
    TrialRejected,
    TrialStarted,
    TuneEvent,
)
from tuner.results import TrialResult
from tuner.study_info import SiaSpace


def _result(**kw: Any) -> TrialResult:
    base = dict(accuracy=0.9, board="pi", bundle="b" * 64, latency_ms=2.5, latency_p90_ms=3.0,
                peak_rss_mb=40.0, compression=2.5, lease_wait_s=0.5,
                step_seconds={"prune": 3.0, "bench": 1.0},
                cache={"prune_hits": 1, "compile_hits": 0})  # fmt: skip
    return TrialResult(**{**base, **kw})


SPACE = SiaSpace(searched=["layer", "head", "channel"], granularities=["layer", "head"],
                 horizons={"layer": 0.4, "head": 0.25, "channel": 0.0})  # fmt: skip
EVENTS: list[TuneEvent] = [
    Step(None, "compiling for pi"),
    TrialStarted(0),
    Step(0, "pruning stage 1/2"),
    TrialCompleted(0, [0.9, 2.5, 40.0], _result()),
    TrialStarted(1),
    TrialRejected(1, "stage 1: head beyond SIA's horizon"),
    TrialStarted(2),
    TrialFailed(2, "compile failed"),
    TrialStarted(3),
    TrialCompleted(3, [0.95, 2.0, 38.0], _result(accuracy=0.95, latency_ms=2.0, board="pi2")),
    SiaSpaceChosen(SPACE),
]


def test_step_names_the_dense_baseline_and_events_are_frozen() -> None:
    assert Step(None, "x").label == "dense" and Step(4, "x").label == "4"
    assert [e.outcome for e in EVENTS[3:6]] == ["completed", "started", "rejected"]
    try:
        EVENTS[1].trial = 5  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("events are frozen")


def test_sia_space_reads_the_old_attribute_dict() -> None:
    old = {"searched": ["layer", "head"], "granularities": ["layer"], "horizons": {"layer": 0.4, "head": 0.0}}
    space = SiaSpace.model_validate(old)
    assert space.dropped == ["head"] and space.describe() == "layer up to 40% removed, head up to 0% removed"
    assert space.model_dump(mode="json") == old  # written back in the same form


def test_tune_progress_view_prints_one_line_per_outcome() -> None:
    from harness.cli.cmd_tune import ProgressWatcher

    out = io.StringIO()
    with Progress(console=Console(file=out, width=200, force_terminal=False)) as progress:
        watch = ProgressWatcher(progress, trials=4)
        for e in EVENTS:
            watch(e)
        task = progress.tasks[0]
        assert task.completed == 3  # two completed, one rejected; a failed trial does not count
        assert task.description == "trial 0: pruning stage 1/2"
    text = out.getvalue()
    assert (
        "trial 0: accuracy 0.900, latency 2.50 ms, peak 40 MB on pi (x2.50); best accuracy 0.900 (#0)" in text
    )
    assert "trial 1 rejected: stage 1: head beyond SIA's horizon" in text
    assert "trial 2 failed: compile failed" in text
    assert "best accuracy 0.950 (#3)" in text


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.advanced = 0
        self.text = ""

    def line(self, text: str) -> None:
        self.lines.append(text)

    def update(self, text: str = "", advance: int = 0) -> None:
        self.text = text or self.text
        self.advanced += advance


def test_demo_job_view_counts_what_it_ran_and_passes_every_event_on() -> None:
    from harness.cli.main_job import _TuneWatcher

    seen: list[TuneEvent] = []
    sink = _Lines()
    watch = _TuneWatcher(sink, sink, seen.append)  # type: ignore[arg-type]
    for e in EVENTS:
        watch(e)
    assert seen == EVENTS
    assert watch.ran == [0, 1, 2, 3] and [r.board for r in watch.done] == ["pi", "pi2"]
    assert sink.advanced == 3
    assert sink.lines[0] == (
        "trial 0: 2.50x fewer parameters, accuracy 90.0%, latency 2.50 ms, memory 40.0 MB "
        "(prune 3 s, bench 1 s; cached: prune)"
    )
    assert "trial 1: rejected before building" in sink.lines[1]
    assert "[yellow]failed[/yellow] (compile failed)" in sink.lines[2]
    assert sink.lines[-1] == (
        "SIA (rank rule) on the dense model: layer up to 40% removed, head up to 25% removed, "
        "channel up to 0% removed; searching layer, head"
    )


def test_metrics_hook_counts_outcomes_and_observes_completed_trials() -> None:
    from reports.metrics import HiltMetrics

    metrics = HiltMetrics()
    seen: list[TuneEvent] = []
    hook = metrics.tune_event_hook("s", seen.append)
    for e in EVENTS:
        hook(e)
    assert seen == EVENTS
    r = metrics.registry
    counts = {o: r.get_sample_value("hilt_trials_total", {"study": "s", "outcome": o})
              for o in ("started", "completed", "rejected", "failed")}  # fmt: skip
    assert counts == {"started": 4.0, "completed": 2.0, "rejected": 1.0, "failed": 1.0}
    assert r.get_sample_value("hilt_bench_latency_seconds_sum", {"board": "pi"}) == 0.0025
    assert r.get_sample_value("hilt_lease_wait_seconds_count", {"board": "pi2"}) == 1.0
    assert 'hilt_board_up{board="pi2"} 1.0' in generate_latest(r).decode()
    assert "sia_space" not in generate_latest(r).decode()  # kinds it does not count pass through
