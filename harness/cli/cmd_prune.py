"""`hilt prune`: run a cascade schedule on a model and write the pruned model and its stage log."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.cli.common import console

if TYPE_CHECKING:
    from harness.prune.cascade import StageLog


def _prune_with_progress_bar(model: str, schedule: Path, out: Path, **kwargs: Any) -> StageLog:
    """`prune_to_dir` with a transient progress bar of its stages."""
    from harness.prune.job import prune_to_dir

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("loading", total=None)

        def on_progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        return prune_to_dir(model, schedule, out, progress=on_progress, **kwargs)


def _stage_table(log: StageLog) -> Table:
    """The stage log as a table: the dense model, then params, losses, accuracy (or perplexity) per stage."""
    causal = log.task == "causal-lm"
    table = Table(title=f"{log.schedule}: {log.family}, {log.compression:.2f}x fewer parameters")
    metric = "ppl" if causal else "acc"
    for col in (
        "stage",
        "targets",
        "params",
        "loss pruned",
        "loss recovered",
        f"{metric} pruned",
        f"{metric} recovered",
        "s",
    ):
        table.add_column(col)

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def ppl(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    show = ppl if causal else pct
    table.add_row(
        "dense",
        "",
        f"{log.dense_params:,}",
        f"{log.dense_calib_loss:.3f}",
        "",
        show(log.dense_perplexity if causal else log.dense_accuracy),
        "",
        "",
    )
    for s in log.stages:
        table.add_row(
            str(s.index),
            ", ".join(s.targets),
            f"{s.params_after:,}",
            f"{s.calib_loss_after_prune:.3f}",
            f"{s.calib_loss_after_recovery:.3f}",
            show(s.perplexity_after_prune if causal else s.accuracy_after_prune),
            show(s.perplexity_after_recovery if causal else s.accuracy_after_recovery),
            f"{s.seconds_total:.1f}",
        )
    return table


def prune(
    model: str = typer.Option(
        ..., "--model", help="HF checkpoint dir, pruned dir, demo-gpt2 / demo-llama, or smollm2-135m."
    ),
    schedule: Path = typer.Option(..., "--schedule", help="Schedule JSON (version 1)."),
    out: Path = typer.Option(..., "--out", help="Output directory (must not exist; written atomically)."),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Calibration token file (.npz or .safetensors: input_ids, labels); default: demo calib.",
    ),
    eval_data: Path | None = typer.Option(
        None, "--eval-data", help="Evaluation token file (.npz or .safetensors); default: demo val."
    ),
    text: Path | None = typer.Option(
        None,
        "--text",
        help="Causal LMs: UTF-8 text split into calibration/recovery/evaluation (default: built-in corpus).",
    ),
    seq_len: int = typer.Option(128, "--seq-len", help="Causal LMs: tokens per text window."),
    calib_n: int = typer.Option(512, help="Calibration examples (demo windows, or text windows)."),
    eval_n: int = typer.Option(1000, help="Evaluation examples (demo windows, or text windows)."),
    recovery_n: int = typer.Option(4096, help="Causal LMs: most text windows LoRA recovery trains on."),
    threads: int | None = typer.Option(None, help="torch threads."),
) -> None:
    """Run a cascade pruning schedule on a model."""
    log = _prune_with_progress_bar(
        model,
        schedule,
        out,
        data_path=data,
        eval_path=eval_data,
        calib_n=calib_n,
        eval_n=eval_n,
        threads=threads,
        text_path=text,
        seq_len=seq_len,
        recovery_n=recovery_n,
    )
    console.print(_stage_table(log))
    for w in log.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)
