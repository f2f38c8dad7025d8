"""`hilt demo`: train the bearing-fault demo models and run the main job on them."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from harness.cli.common import console
from harness.demo.models import DEMO_MODELS, DemoRecord, ensure_demo_model, read_record, train_demo_model
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
        table.add_row(name, *[f"{100 * r.test_per_class_accuracy[c]:.1f}%" for r in records])
    return table


@demo_app.command("train")
def train(
    model: str = typer.Option("all", "--model", help="demo-gpt2, demo-llama or all."),
    force: bool = typer.Option(False, "--force", help="Retrain even if a cached model exists."),
    threads: int = typer.Option(0, "--threads", help="torch threads (0: torch's default)."),
) -> None:
    """Train the demo models (cached: skipped when present unless --force) and print test accuracy."""
    _set_threads(threads)
    records = []
    for name in _selected(model):
        if force:
            path, _ = train_demo_model(name)
        else:
            path = ensure_demo_model(name)
        records.append(read_record(path))
        console.print(f"{name}: {path}")
    console.print(_summary(records))
    console.print(_per_class(records))


@demo_app.command("run")
def run(
    threads: int = typer.Option(0, "--threads", help="torch threads (0: torch's default)."),
    trials: int = typer.Option(
        8, "--trials", min=0, help="Tuning trials on the local board (0: models only)."
    ),
    emulated_trials: int = typer.Option(2, "--emulated-trials", help="Tuning trials on the emulated board."),
    emulated: bool = typer.Option(True, "--emulated/--no-emulated", help="Also tune on an emulated aarch64."),
    out: Path = typer.Option(Path("hilt-runs/demo"), "--out"),
) -> None:
    """The main job: demo models (trained if absent), tune on local (+ emulated aarch64), reports."""
    import time

    from harness.cli.main_job import run_main_job

    _set_threads(threads)
    t0 = time.monotonic()
    with console.status("demo") as status:
        res = run_main_job(out, trials, emulated_trials, emulated, lambda msg: status.update(msg))
    records = [read_record(ensure_demo_model(name)) for name in DEMO_MODELS]
    console.print(_summary(records))
    console.print(_per_class(records))
    for step, seconds in res.seconds.items():
        console.print(f"{step}: {seconds:.0f} s")
    for study, path in res.reports.items():
        console.print(f"report {study}: {path}")
    for note in res.skipped:
        console.print(f"[yellow]skipped:[/yellow] {note}")
    console.print(f"main job took {time.monotonic() - t0:.0f} s")


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")
