"""`hilt demo`: train the bearing-fault demo models and run the main job on them."""

from __future__ import annotations

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
    for col in ("model", "params", "layers", "test acc", "val acc", "train s", "steps"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for r in records:
        table.add_row(
            r.name,
            f"{r.params / 1e6:.2f} M",
            str(r.layers),
            f"{100 * r.test_accuracy:.2f}%",
            f"{100 * r.val_accuracy:.2f}%",
            f"{r.train_seconds:.0f}",
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
def run(threads: int = typer.Option(0, "--threads", help="torch threads (0: torch's default).")) -> None:
    """Make sure both demo models exist (training them if needed) and print their dense accuracy."""
    _set_threads(threads)
    records = [read_record(ensure_demo_model(name)) for name in DEMO_MODELS]
    console.print(_summary(records))
    console.print(_per_class(records))


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")
