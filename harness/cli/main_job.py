"""The main job on the embedded default (what `make demo` runs), in stages that print as they finish.

1. demo models: the packaged fp16 weights (sha256-verified, upcast) or the cache; their test accuracy.
2. dense demo-gpt2 on the local board: board runtime (built once) and bundle (compiled once) side by
   side, then a measurement: the first result line (accuracy, latency, memory).
3. tuning trials on the local board, one line per trial, then its deployment report.
4. as root: an emulated aarch64 board (rootfs image and runtime built once, the image in the
   background from the start), tuning trials there, its report.
Each step persists its results (models cached, studies in SQLite, reports on disk) before the next
starts; what came from a cache says so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from harness.demo.stages import StageLog, Step
from harness.errors import HiltError

if TYPE_CHECKING:
    from tuner.events import OnEvent, TuneEvent
    from tuner.results import TrialResult

log = logging.getLogger(__name__)

MODEL = "demo-gpt2"
EMULATED_ARCH = "aarch64"
EMULATED_BOARD = "qemu-a64-0"
VAL_N = 500


@dataclass
class MainJobResult:
    reports: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    started_boards: list[str] = field(default_factory=list)
    dense: dict[str, dict] = field(default_factory=dict)  # board -> accuracy/latency/memory
    trials: dict[str, list[TrialResult]] = field(default_factory=dict)  # study -> completed trials
    first_result_s: float | None = None  # seconds from the start to the first measured line


@dataclass
class _Background:
    """A step running in a thread; `wait` re-raises its error in the caller."""

    thread: threading.Thread
    error: list[BaseException] = field(default_factory=list)

    def wait(self) -> None:
        self.thread.join()
        if self.error:
            raise self.error[0]


def _in_background(name: str, fn: Callable[[], None]) -> _Background:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            errors.append(exc)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return _Background(thread, errors)


def _ms(ns: float) -> float:
    return ns / 1e6


def _runtime_step(stages: StageLog, arch: str) -> None:
    from harness.runtime.build import RECORD_NAME, build_runtime, runtime_dir

    with stages.step(f"board runtime for {arch} (TVM runtime + hilt-runner)") as st:
        was_cached = (runtime_dir(arch) / RECORD_NAME).is_file()
        if not was_cached:
            st.update("building with CMake (once per machine and TVM version)")
        pkg = build_runtime(arch)
        if was_cached:
            st.cached(str(pkg.directory))
        else:
            st.done(f"built into {pkg.directory}")


def _compile_step(stages: StageLog, model_dir: Path, profile: object, seq_len: int, label: str) -> Path:
    from harness.compile.compiler import CompileOptions, compile_model

    with stages.step(f"compiling {label}") as st:
        result = compile_model(model_dir, profile, CompileOptions(seq_len=seq_len), progress=st.update)  # type: ignore[arg-type]
        bundle = Path(result.bundle.directory)
        if result.cached:
            st.cached(f"bundle {result.bundle.sha256[:12]}")
        else:
            st.done(f"bundle {result.bundle.sha256[:12]} in $HILT_CACHE/bundles")
    return bundle


def _models_stage(stages: StageLog, res: MainJobResult) -> None:
    from harness.demo.models import DEMO_MODELS, provide_demo_model, read_record

    t = time.monotonic()
    with stages.step("demo models") as st:
        how = {}
        for name in DEMO_MODELS:
            st.update(name)
            _path, how[name] = provide_demo_model(name, progress=stages.live)
        words = {"cached": "cached", "package": "from the packaged fp16 weights (sha256 verified)",
                 "trained": "trained now"}  # fmt: skip
        detail = ", ".join(f"{n} {words[h]}" for n, h in how.items())
        (st.cached if all(h == "cached" for h in how.values()) else st.done)(detail)
    for name in DEMO_MODELS:
        from harness.demo.models import demo_model_dir

        r = read_record(demo_model_dir(name))
        stages.headline(
            f"{name}: dense test accuracy {100 * r.dense_accuracy:.2f}% on {r.test_windows} held-out windows "
            f"({r.params / 1e6:.2f} M parameters, {r.layers} layers)"
        )
    res.seconds["demo models"] = time.monotonic() - t


def _dense_local_stage(stages: StageLog, res: MainJobResult) -> None:
    """Runtime and bundle side by side, then one measurement: the first result a user sees."""
    from device_agents.bench import BenchOptions, bench_board
    from harness.demo.models import demo_model_dir, read_record
    from harness.models.loading import resolve_model_dir
    from tuner.data import task_data
    from tuner.tune import select_boards

    t = time.monotonic()
    board = select_boards(None, "local", None)[0]
    runtime = _in_background("runtime-local", lambda: _runtime_step(stages, board.profile.arch))
    with stages.step("demo task data (calibration and validation splits)") as st:
        from harness.data.splits import SPLITS, split_cache_path

        was_cached = (
            split_cache_path("calib", SPLITS["calib"].default_n).is_file()
            and split_cache_path("val", VAL_N).is_file()
        )
        data = task_data(MODEL, None, None, VAL_N)
        (st.cached if was_cached else st.done)(
            f"{len(data.calib_labels)} calibration, {len(data.val_labels)} validation windows"
        )
    model_dir = resolve_model_dir(MODEL)
    bundle = _compile_step(stages, model_dir, board.profile, data.seq_len, f"dense {MODEL} for {board.name}")
    runtime.wait()
    with stages.step(f"measuring dense {MODEL} on board {board.name}") as st:
        record = bench_board(board, bundle, BenchOptions(min_iters=20, min_seconds=0.5))
        s = record.summary
        st.done(f"{len(record.samples_ns)} runs")
    acc = read_record(demo_model_dir(MODEL)).dense_accuracy
    dense = {"accuracy": acc, "latency_ms": _ms(s.median_ns), "latency_p90_ms": _ms(s.p90_ns),
             "peak_rss_mb": record.peak_rss_kb / 1024.0}  # fmt: skip
    res.dense[board.name] = dense
    stages.headline(
        f"dense {MODEL} on {board.name}: test accuracy {100 * acc:.2f}%, "
        f"latency {dense['latency_ms']:.2f} ms median ({dense['latency_p90_ms']:.2f} ms p90), "
        f"peak memory {dense['peak_rss_mb']:.1f} MB"
    )
    res.first_result_s = stages.elapsed
    res.seconds["dense on local"] = time.monotonic() - t


def _trial_line(trial: int, r: TrialResult) -> str:
    hits = [k.split("_")[0] for k, v in r.cache.items() if k.endswith("_hits") and v]
    took = ", ".join(f"{k} {v:.0f} s" for k, v in r.step_seconds.items())
    cached = f"; cached: {', '.join(hits)}" if hits else ""
    return (
        f"trial {trial}: {r.compression:.2f}x fewer parameters, accuracy "
        f"{100 * (r.accuracy or 0.0):.1f}%, latency {r.latency_ms:.2f} ms, "
        f"memory {r.peak_rss_mb:.1f} MB ({took}{cached})"
    )


class _TuneWatcher:
    """The demo's view of one study: one line per trial outcome, SIA's verdict, the step in progress."""

    def __init__(self, stages: StageLog, st: Step, inner: OnEvent | None) -> None:
        self.stages, self.st, self.inner = stages, st, inner
        self.done: list[TrialResult] = []
        self.ran: list[int] = []  # trials this call ran (completed, rejected or failed)

    def __call__(self, event: TuneEvent) -> None:
        from tuner.events import SiaSpaceChosen, TrialCompleted, TrialFailed, TrialRejected, TrialStarted
        from tuner.events import Step as TrialStep

        match event:
            case TrialStarted(trial=n):
                self.ran.append(n)
            case TrialStep():
                self.st.update(f"trial {event.label}: {event.step}")
            case TrialCompleted(trial=n, result=r):
                self.done.append(r)
                self.st.update(advance=1)
                self.stages.line(_trial_line(n, r))
            case TrialRejected(trial=n, reason=why):
                self.st.update(advance=1)
                self.stages.line(f"trial {n}: rejected before building ({escape(why)})")
            case SiaSpaceChosen(space=space):
                allowed = ", ".join(space.granularities)
                self.stages.line(
                    f"SIA (rank rule) on the dense model: {space.describe()}; searching {allowed}"
                )
            case TrialFailed(trial=n, reason=why):
                self.stages.line(f"trial {n}: [yellow]failed[/yellow] ({escape(why)})")
        if self.inner is not None:
            self.inner(event)


def _tune_stage(
    stages: StageLog, res: MainJobResult, study: str, farm: str | None, board: str, n: int, storage: str,
    out: Path, event: OnEvent | None,
) -> None:  # fmt: skip
    from device_agents.bench import BenchOptions
    from tuner.space import SpaceConfig
    from tuner.study import finished
    from tuner.study_info import StudyInfo
    from tuner.tune import TuneRequest, tune

    t = time.monotonic()
    space = SpaceConfig(max_stages=3, max_steps=30, ratio_step=0.05)
    # the demo shows the method: SIA's verdict on the dense model decides what the search may prune
    command = (
        f"hilt tune --model {MODEL} --board {board} --trials {n} --study {study} --storage {storage} --sia"
    )
    req = TuneRequest(
        model=MODEL, study=study, storage=storage, farm=farm, board=board, trials=n, space=space,
        use_sia=True, val_n=VAL_N, work_dir=out, bench_options=BenchOptions(min_iters=20, min_seconds=0.5),
        command=command + (f" --farm {farm}" if farm else ""),
    )  # fmt: skip
    with stages.step(f"tuning {MODEL} on {board} ({n} trials)", total=n) as st:
        watch = _TuneWatcher(stages, st, event)
        result = tune(req, watch)
        total = finished(result.study)
        if not watch.ran and total >= n:
            st.cached(f"study {study} already complete ({total} of {n} trials; delete {out} to start over)")
        else:
            st.done(
                f"{len(watch.done)} of {len(watch.ran)} trials measured, {total} finished in study {study}"
            )
    res.trials[study] = watch.done
    dense = StudyInfo.of(result.study).dense
    if dense is not None and board not in res.dense:
        res.dense[board] = dense.to_user_attrs()
        stages.headline(
            f"dense {MODEL} on {board}: latency {dense.latency_ms:.2f} ms median "
            f"({dense.latency_p90_ms:.2f} ms p90), peak memory {dense.peak_rss_mb:.1f} MB"
        )
    res.seconds[f"tune {board}"] = time.monotonic() - t
    _report_step(stages, res, study, storage, out)


def _report_step(stages: StageLog, res: MainJobResult, study: str, storage: str, out: Path) -> None:
    from reports.deploy import load_report_data, write_report

    with stages.step(f"deployment report for study {study}") as st:
        try:
            data = load_report_data(study, storage)
            html, _md = write_report(data, out / f"report-{study}")
        except HiltError as exc:
            res.skipped.append(f"report for {study}: {exc}")
            st.skipped(str(exc))
            return
        res.reports[study] = html.resolve()
        st.done(str(html.resolve()))


def _image_step(stages: StageLog, arch: str) -> None:
    from device_agents.emulated.host import apt_mirror, ensure_binfmt, require_tools
    from device_agents.emulated.paths import FarmPaths
    from device_agents.emulated.rootfs import cached_image, ensure_image

    images = FarmPaths.default().images
    with stages.step(f"emulated {arch} board: Debian rootfs image (background)", total=1.0) as st:
        if cached_image(images, arch) is not None:
            st.cached(str(cached_image(images, arch).path))  # type: ignore[union-attr]
            return
        require_tools()
        ensure_binfmt(arch)
        image = ensure_image(
            images, arch, os.environ.get("HILT_DEBIAN_MIRROR") or apt_mirror(),
            lambda _a, frac, text: st.update(text, completed=frac),
        )  # fmt: skip
        st.done(f"debootstrap into {image.path}")


def _shared_prune_cache(out: Path) -> None:
    """Pruned models are keyed by (base model, stage prefix, calibration): they stay valid across runs,
    so `out/prune-cache` points into $HILT_CACHE and a fresh --out does not prune them again."""
    from harness.cache import cache_root

    link = out / "prune-cache"
    if link.exists() or link.is_symlink():
        return
    target = cache_root() / "demo" / "prune-cache"
    target.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


def run_main_job(
    out: Path,
    trials: int,
    emulated_trials: int,
    emulated: bool,
    stages: StageLog,
    event: OnEvent | None = None,
) -> MainJobResult:
    res = MainJobResult()
    out.mkdir(parents=True, exist_ok=True)
    _shared_prune_cache(out)
    storage = f"sqlite:///{out / 'hilt.db'}"
    want_emulated = emulated and trials > 0 and emulated_trials > 0
    if want_emulated and os.geteuid() != 0:
        res.skipped.append("emulated aarch64 board: needs root (run `sudo make demo`)")
        want_emulated = False
    prep: _Background | None = None
    first = threading.Event()
    if want_emulated:
        # the image is mostly downloads and dpkg: it overlaps the local stages from the start; the
        # aarch64 runtime (CPU-bound) waits for the first result, then builds during local tuning
        def prepare() -> None:
            try:
                _image_step(stages, EMULATED_ARCH)
            finally:
                first.wait()
            _runtime_step(stages, EMULATED_ARCH)

        prep = _in_background("emulated-prep", prepare)
    try:
        _models_stage(stages, res)
        if trials > 0:
            _dense_local_stage(stages, res)
    finally:
        first.set()
    if prep is not None and trials > 0:
        stages.line(
            "[dim]the emulated board is prepared in the background while the local board is tuned[/dim]"
        )
    if trials > 0:
        _tune_stage(stages, res, "demo-local", None, "local", trials, storage, out, event)
    if prep is not None:
        _emulated_stage(stages, res, prep, emulated_trials, storage, out, event)
    return res


def _emulated_stage(
    stages: StageLog, res: MainJobResult, prep: _Background, n: int, storage: str, out: Path,
    event: OnEvent | None,
) -> None:  # fmt: skip
    from device_agents.emulated import down, up
    from device_agents.emulated.paths import FarmPaths

    t = time.monotonic()
    try:
        prep.wait()
        with stages.step(f"starting the emulated {EMULATED_ARCH} board") as st:
            started = up([EMULATED_ARCH]).started
            res.started_boards.extend(started)
            (st.done if started else st.cached)("started" if started else "already running")
    except (HiltError, OSError) as exc:  # the local results stand; say why the emulated part is missing
        res.skipped.append(f"emulated {EMULATED_ARCH} board: {exc}")
        return
    finally:
        res.seconds["emulated board up"] = time.monotonic() - t
    try:
        farm = str(FarmPaths.default().farm_file)
        _tune_stage(stages, res, "demo-qemu-aarch64", farm, EMULATED_BOARD, n, storage, out, event)
    finally:  # leave the machine as we found it: stop the boards this job started
        if res.started_boards:
            with stages.step("stopping the emulated board") as st:
                down(names=res.started_boards)
                st.done(", ".join(res.started_boards))


__all__ = ["MainJobResult", "Step", "run_main_job"]
