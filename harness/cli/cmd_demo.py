"""`hilt demo`: train the bearing-fault demo models and run the main job on them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import typer
from rich.table import Table

from harness.cache import cache_root
from harness.cli.common import console
from harness.demo.models import (
    DEMO_MODELS,
    DemoRecord,
    demo_model_dir,
    provide_demo_model,
    read_record,
    train_demo_model,
)
from harness.errors import ModelLoadError

demo_app = typer.Typer(
    help="Train the bearing-fault demo models and run the main job on them.", no_args_is_help=True
)


def _selected(model: str) -> list[str]:
    if model == "all":
        return list(DEMO_MODELS)
    if model not in DEMO_MODELS:
        raise ModelLoadError(f"unknown demo model {model!r}; choose one of {', '.join(DEMO_MODELS)} or all")
    return [model]


def _set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def _summary(records: list[DemoRecord]) -> Table:
    table = Table(title="demo models: dense accuracy on the held-out test split")
    for col in (
        "model",
        "params",
        "layers",
        "test acc",
        "val acc",
        "test acc (fp16)",
        "train s (wall)",
        "train s (CPU)",
        "steps",
    ):
        table.add_column(col, justify="right" if col != "model" else "left")
    for r in records:
        table.add_row(
            r.name,
            f"{r.params / 1e6:.2f} M",
            str(r.layers),
            f"{100 * r.test_accuracy:.2f}%",
            f"{100 * r.val_accuracy:.2f}%",
            "-" if r.fp16_test_accuracy is None else f"{100 * r.fp16_test_accuracy:.2f}%",
            f"{r.train_seconds:.0f}",
            "-" if r.train_cpu_seconds is None else f"{r.train_cpu_seconds:.0f}",
            str(r.steps),
        )
    return table


def _per_class(records: list[DemoRecord]) -> Table:
    table = Table(title="per-class test accuracy")
    table.add_column("class")
    for r in records:
        table.add_column(r.name, justify="right")
    for c, name in enumerate(records[0].class_names):
        table.add_row(name, *[f"{100 * r.dense_per_class_accuracy[c]:.1f}%" for r in records])
    return table


def _compare_with_package(name: str, record: DemoRecord) -> None:
    """After a retrain: does it reproduce the shipped weights (bit for bit, or to their accuracy)?"""
    from harness.cache import sha256_file
    from harness.demo.package import has_package, package_dir, read_manifest

    if not has_package(name):
        console.print(f"{name}: no packaged weights to compare with")
        return
    shipped = read_record(package_dir(name))
    trained_sha = read_manifest(package_dir(name)).get("trained_sha256")
    same = trained_sha == sha256_file(demo_model_dir(name) / "model.safetensors")
    delta = 100 * (record.test_accuracy - shipped.test_accuracy)
    console.print(
        f"{name}: test accuracy {100 * record.test_accuracy:.2f}% vs {100 * shipped.test_accuracy:.2f}% "
        f"recorded with the packaged weights ({delta:+.2f} pp); fp32 weights "
        + (
            "bit-identical to the packaged ones"
            if same
            else "differ from the packaged ones (other torch/CPU?)"
        )
    )


@demo_app.command("train")
def train(
    model: str = typer.Option("all", "--model", help="demo-gpt2, demo-llama or all."),
    force: bool = typer.Option(
        False, "--force", help="Retrain from scratch even if a cached or packaged model exists."
    ),
    threads: int = typer.Option(0, "--threads", help="torch threads (0: torch's default)."),
    package: bool = typer.Option(
        False,
        "--package",
        help="Also write the fp16 package (harness/demo/weights/<model>/) and measure its accuracy.",
    ),
) -> None:
    """Make the demo models available (cache, else the packaged weights, else training) and print test
    accuracy; --force retrains and compares with the packaged weights."""
    from harness.demo.package import export_package

    _set_threads(threads)
    records = []
    for name in _selected(model):
        if force:
            path, record = train_demo_model(name)
            _compare_with_package(name, record)
            how = "trained"
        else:
            path, how = provide_demo_model(name)
        if package:
            shipped = export_package(name, path)
            console.print(
                f"{name}: packaged fp16 weights; test accuracy {100 * shipped.test_accuracy:.2f}% fp32, "
                f"{100 * (shipped.fp16_test_accuracy or 0.0):.2f}% after the fp16 round trip"
            )
        records.append(read_record(path))
        console.print(f"{name}: {path} ({how})")
    console.print(_summary(records))
    console.print(_per_class(records))


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 to `path` for the block: TVM's C++ warnings and Python warnings would
    otherwise bury the demo's lines (hilt's own errors are printed after the block)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as fh:
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _quiet_optuna() -> None:
    """The demo prints its own line per trial: Optuna's INFO lines and experimental-API warnings are noise."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@demo_app.command("run")
def run(
    threads: int = typer.Option(1, "--threads", help="torch threads (0: torch's default)."),
    trials: int = typer.Option(
        4, "--trials", min=0, help="Tuning trials on the local board (0: the demo models only, no board)."
    ),
    emulated_trials: int = typer.Option(
        2, "--emulated-trials", min=0, help="Tuning trials on the emulated board (0: no emulated board)."
    ),
    emulated: bool = typer.Option(True, "--emulated/--no-emulated", help="Also tune on an emulated aarch64."),
    out: Path = typer.Option(Path("hilt-runs/demo"), "--out", help="Studies (SQLite) and reports go here."),
) -> None:
    """The main job, staged: demo models, a first measured line on the local board, tuning trials,
    an emulated aarch64 board (as root), deployment reports. Each stage prints as it finishes."""
    from harness.cli.main_job import run_main_job
    from harness.demo.stages import StageLog

    _set_threads(threads)
    _quiet_optuna()
    out.mkdir(parents=True, exist_ok=True)
    side_log = (out / "demo.log").resolve()
    with StageLog(console) as stages, _stderr_to(side_log):
        stages.line(f"hilt demo run: output in {out.resolve()}, caches in {cache_root()}")
        stages.line(f"compiler messages and warnings go to {side_log}")
        res = run_main_job(out, trials, emulated_trials, emulated, stages)
    records = [read_record(demo_model_dir(name)) for name in DEMO_MODELS]
    console.print(_per_class(records))
    console.print("stage times: " + ", ".join(f"{step} {s:.0f} s" for step, s in res.seconds.items()))
    for note in res.skipped:
        console.print(f"[yellow]skipped:[/yellow] {note}")
    if res.first_result_s is not None:
        console.print(f"first measured result after {res.first_result_s:.0f} s")
    console.print(f"main job took {stages.elapsed:.0f} s; compiler messages and warnings: {side_log}")
    for study, path in res.reports.items():
        console.print(f"report {study}: {path}", soft_wrap=True)
    if res.reports:
        first = next(iter(res.reports.values()))
        console.print(
            f"open it: xdg-open {first}  (or in a browser: file://{first}; self-contained HTML, "
            f"the same in Markdown: {first.with_name('report.md')})",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")
