"""`hilt tune`: auto-tune a cascade schedule for a board with Optuna, measuring every candidate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from harness.cli.common import console

if TYPE_CHECKING:
    from tuner.events import OnEvent, TuneEvent
    from tuner.tune import TuneRequest, TuneResult


def tune(
    model: str = typer.Option(..., "--model", help="Model directory, or demo-gpt2 / demo-llama."),
    board: str | None = typer.Option(None, "--board", help="Board name in the farm (default farm: 'local')."),
    farm: str | None = typer.Option(
        None, "--farm", help="Farm file (default: $HILT_FARM, ./farm.toml, local)."
    ),
    profile: str | None = typer.Option(None, "--profile", help="Use the farm's boards of this profile."),
    trials: int = typer.Option(
        10, "--trials", min=1, help="Finished trials wanted in the study (all workers)."
    ),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop this worker after S seconds."),
    storage: str | None = typer.Option(None, "--storage", help="sqlite:///PATH or postgresql://... URL."),
    pool: str | None = typer.Option(
        None, "--pool", help="Board pool database URL (default: $HILT_POOL, else a server --storage)."
    ),
    study: str = typer.Option("hilt", "--study", help="Study name; workers with the same name join it."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe | nsga2 | gp | random"),
    objective: str = typer.Option(
        "pareto",
        "--objective",
        help="pareto, or one of accuracy|latency|memory|energy (causal LMs: perplexity|decode|ttft|memory)",
    ),
    energy: bool = typer.Option(False, "--energy", help="Optimise energy too (even if only modelled)."),
    latency_stat: str = typer.Option("p50", "--latency", help="p50 | p90"),
    slo_ms: float | None = typer.Option(None, "--slo-ms", help="Latency SLO (constraint)."),
    compression: float | None = typer.Option(
        None, "--compression", help="Fixed total compression, e.g. 13.8."
    ),
    max_stages: int = typer.Option(3, "--max-stages", min=1, max=4),
    max_steps: int = typer.Option(60, "--max-steps", min=0, help="Most LoRA steps per stage."),
    round_to: int | None = typer.Option(
        None,
        "--round-to",
        min=1,
        help="Round kept FFN widths to this multiple (default: the board's fp32 vector lanes, 8 on AVX2, "
        "4 on NEON; 1: no rounding).",
    ),
    kernel_tuning: str = typer.Option(
        "db",
        "--kernel-tuning",
        help="off (default lowering only) | db (plus the board's tuning records) | trials:N (N new "
        "MetaSchedule trials per compiled candidate first).",
    ),
    search_order: bool = typer.Option(False, "--search-order", help="Also search the stage order."),
    granularities: str = typer.Option(
        "layer,head,channel", "--granularities", help="Granularities the search may prune (comma list)."
    ),
    max_cuts: int = typer.Option(
        1, "--max-cuts", help="With --compression: also search cutting a granularity in up to N stages."
    ),
    recovery_loss: str = typer.Option(
        "ce", "--recovery-loss", help="Recovery loss: ce, kd or mix; a comma list searches them."
    ),
    sia: bool = typer.Option(
        False,
        "--sia/--no-sia",
        help="Constrain the search by SIA's predictable horizons (off by default: at equal trials the "
        "unconstrained search found a larger hypervolume, benchmarks/sia_in_search.json).",
    ),
    calib: Path | None = typer.Option(
        None, "--calib", help="Calibration token file, .npz or .safetensors (non-demo models)."
    ),
    val: Path | None = typer.Option(
        None, "--val", help="Validation token file, .npz or .safetensors (non-demo models)."
    ),
    val_n: int = typer.Option(500, "--val-n", help="Validation examples (causal LMs: text windows)."),
    text: Path | None = typer.Option(
        None, "--text", help="Causal LMs: a UTF-8 text corpus (default: the built-in one)."
    ),
    seq_len: int = typer.Option(64, "--seq-len", min=2, help="Causal LMs: text window and prefill length."),
    new_tokens: int = typer.Option(32, "--new-tokens", min=2, help="Causal LMs: greedy tokens per bench."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed; workers started together need different ones."),
    bench_timeout: float = typer.Option(
        300.0, "--bench-timeout", min=1.0, help="Seconds a bench may take before its board counts as lost."
    ),
    out: Path = typer.Option(Path("hilt-runs"), "--out", help="Work and output directory."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics here."),
) -> None:
    """Search cascade schedules; every candidate is pruned, compiled with TVM and measured on the board."""
    import shlex
    import sys
    import warnings

    import optuna

    from device_agents.bench import BenchOptions
    from harness.compile.tune import KernelTuning
    from tuner.objectives import parse_objectives

    kernels = KernelTuning.parse(kernel_tuning)  # a bad value fails before anything starts

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from tuner.space import SpaceConfig
    from tuner.tune import TuneRequest

    req = TuneRequest(
        model=model,
        study=study,
        storage=storage,
        pool=pool,
        farm=farm,
        board=board,
        profile=profile,
        trials=trials,
        timeout_s=timeout,
        sampler=sampler,
        seed=seed,
        objectives=parse_objectives(objective, energy, latency_stat),
        space=SpaceConfig(
            max_stages=max_stages,
            compression=compression,
            search_order=search_order,
            max_steps=max_steps,
            round_to=round_to,
            max_cuts=max_cuts,
            granularities=tuple(g.strip() for g in granularities.split(",") if g.strip()),
            recovery_losses=tuple(x.strip() for x in recovery_loss.split(",") if x.strip()),
        ),  # fmt: skip
        latency_slo_ms=slo_ms,
        kernel_tuning=kernels,
        use_sia=sia,
        calib=calib,
        val=val,
        val_n=val_n,
        text=text,
        seq_len=seq_len,
        new_tokens=new_tokens,
        work_dir=out,
        bench_options=BenchOptions(timeout_s=bench_timeout),
        command="hilt " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    _run_with_progress(req, metrics_port)


def _run_with_progress(req: TuneRequest, metrics_port: int | None) -> None:
    """Run the study under the live view (and the metrics endpoint, if asked), then print its front."""
    from tuner.tune import tune as run_tune

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        watch: OnEvent = ProgressWatcher(progress, req.trials)
        metrics = None
        if metrics_port is not None:
            from reports.metrics import HiltMetrics

            metrics = HiltMetrics()
            progress.console.print(f"metrics on http://127.0.0.1:{metrics.serve(metrics_port)}/metrics")
            watch = metrics.tune_event_hook(req.study, watch)
        try:
            result = run_tune(req, watch)
        finally:
            if metrics is not None:
                metrics.stop()
    _print_front(result, req.study)


class ProgressWatcher:
    """The live view of `hilt tune`: a progress bar of finished trials and one line per outcome."""

    def __init__(self, progress: Progress, trials: int) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=trials)
        self.best: tuple[float, str, int] | None = None  # (score, text, trial)

    def __call__(self, event: TuneEvent) -> None:
        from tuner.events import Step, TrialCompleted, TrialFailed, TrialRejected
        from tuner.results import quality_score, quality_text

        say = self.progress.console.print
        match event:
            case Step():
                self.progress.update(self.task, description=f"trial {event.label}: {event.step}")
            case TrialCompleted(trial=n, result=r):
                self.progress.advance(self.task)
                attrs = r.to_user_attrs()
                if self.best is None or quality_score(attrs) > self.best[0]:
                    self.best = (quality_score(attrs), quality_text(attrs), n)
                say(
                    f"trial {n}: {quality_text(attrs)}, latency {r.latency_ms:.2f} ms, "
                    f"peak {r.peak_rss_mb:.0f} MB on {r.board} (x{r.compression:.2f}); "
                    f"best {self.best[1]} (#{self.best[2]})"
                )
            case TrialRejected(trial=n, reason=why):
                self.progress.advance(self.task)
                say(f"[yellow]trial {n} rejected:[/yellow] {why}")
            case TrialFailed(trial=n, reason=why):
                say(f"[yellow]trial {n} failed:[/yellow] {why}")


def _print_front(result: TuneResult, study: str) -> None:
    """The study's Pareto front and this worker's cache hits, after the run."""
    from tuner.results import TrialResult, quality_text
    from tuner.study import best_schedules

    front = Table(title=f"Pareto front of study '{study}' ({len(result.study.trials)} trials)")
    for col in ("trial", "quality", "latency ms", "peak MB", "compression", "bundle"):
        front.add_column(col)
    for t in best_schedules(result.study):
        a = TrialResult.from_user_attrs(t.user_attrs)
        row = (quality_text(t.user_attrs), f"{a.latency_ms:.2f}", f"{a.peak_rss_mb:.0f}")
        front.add_row(str(t.number), *row, f"{a.compression:.2f}x", a.bundle[:12])
    console.print(front)
    stats = result.pipeline.stats
    console.print(f"caches: prune {stats['prune_hits']} hits / {stats['prune_misses']} misses, "
                  f"compile {stats['compile_hits']} hits / {stats['compile_misses']} misses")  # fmt: skip
    if result.best_json:
        console.print(f"best schedule and bundle: {result.best_json}")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
