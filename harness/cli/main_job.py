"""The main job on the embedded default (what `make demo` runs).

Demo models (trained if absent) → `tune` demo-gpt2 on the local board → (as root) bring up an
emulated aarch64 board and tune there too → a deployment report per study. Each step persists its
results (models cached, studies in SQLite, reports on disk) before the next one starts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HiltError

log = logging.getLogger(__name__)
Say = Callable[[str], None]


@dataclass
class MainJobResult:
    reports: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    started_boards: list[str] = field(default_factory=list)


def run_main_job(
    out: Path, trials: int, emulated_trials: int, emulated: bool, say: Say, event: Callable | None = None
) -> MainJobResult:
    from harness.demo.models import DEMO_MODELS, ensure_demo_model
    from tuner.space import SpaceConfig

    res = MainJobResult()
    t0 = time.monotonic()
    for name in DEMO_MODELS:
        say(f"demo model {name}")
        ensure_demo_model(name)
    res.seconds["demo models"] = time.monotonic() - t0
    storage = f"sqlite:///{out / 'hilt.db'}"
    space = SpaceConfig(max_stages=3, max_steps=30, ratio_step=0.05)
    runs = [("demo-local", None, "local", trials)] if trials > 0 else []
    if emulated and trials > 0:
        if os.geteuid() != 0:
            res.skipped.append("emulated aarch64 board: needs root (run `sudo make demo`)")
        else:
            from device_agents.emulated import up
            from device_agents.emulated.paths import FarmPaths

            t = time.monotonic()
            say("bringing up an emulated aarch64 board")
            try:
                started = up(["aarch64"]).started
                res.started_boards.extend(started)
                runs.append(
                    ("demo-qemu-aarch64", str(FarmPaths.default().farm_file), "qemu-a64-0", emulated_trials)
                )
            except HiltError as exc:
                res.skipped.append(f"emulated aarch64 board: {exc}")
            res.seconds["farm up"] = time.monotonic() - t
    try:
        _tune_and_report(runs, storage, space, out, res, say, event)
    finally:
        if res.started_boards:  # leave the machine as we found it: stop the boards this job started
            from device_agents.emulated import down

            down(names=res.started_boards)
    return res


def _tune_and_report(runs, storage, space, out, res, say, event) -> None:  # noqa: ANN001
    from device_agents.bench import BenchOptions
    from reports.deploy import load_report_data, write_report
    from tuner.tune import TuneRequest, tune

    for study, farm, board, n in runs:
        t = time.monotonic()
        say(f"tuning demo-gpt2 on {board} ({n} trials)")
        command = (
            f"hilt tune --model demo-gpt2 --board {board} --trials {n} --study {study} --storage {storage}"
        )
        req = TuneRequest(
            model="demo-gpt2", study=study, storage=storage, farm=farm, board=board, trials=n, space=space,
            val_n=500, work_dir=out, bench_options=BenchOptions(min_iters=20, min_seconds=0.5),
            command=command + (f" --farm {farm}" if farm else ""),
        )  # fmt: skip
        tune(req, event)
        res.seconds[f"tune {board}"] = time.monotonic() - t
        try:
            html, _md = write_report(load_report_data(study, storage), out / f"report-{study}")
            res.reports[study] = html
        except HiltError as exc:
            res.skipped.append(f"report for {study}: {exc}")
