"""`hilt compile --model DIR --board PROFILE [--tune-trials N]`: build a model into an artifact bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli.common import console


def _compile(
    model: str = typer.Option(..., "--model", help="Model directory (plain HF or pruned) or demo name."),
    board: str = typer.Option(..., "--board", help="Board profile name or path to a profile TOML."),
    tune_trials: int = typer.Option(0, "--tune-trials", min=0, help="MetaSchedule trials (0: no tuning)."),
    database: Path | None = typer.Option(
        None, "--database", help="Tuning database directory (default: the cache's, per arch)."
    ),
    seq_len: int = typer.Option(
        128, "--seq-len", min=1, help="Input length the bundle is built for (causal LMs: the prefill bucket)."
    ),
    cache_len: int | None = typer.Option(
        None, "--cache-len", min=2, help="Causal LMs: KV-cache positions (default --seq-len + 128)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build even if an identical bundle exists."),
) -> None:
    """Compile a model for a board profile with TVM and print the bundle directory."""
    from harness.compile import CompileOptions, compile_model

    opts = CompileOptions(
        seq_len=seq_len,
        tune_trials=tune_trials,
        database_dir=database,
        use_cache=not no_cache,
        cache_len=cache_len,
    )
    with console.status("compiling…") as status:

        def progress(msg: str) -> None:
            status.update(msg)
            console.log(msg)

        result = compile_model(model, board, opts, progress=progress)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.stages.items())
    how = "from cache" if result.cached else f"built in {result.seconds:.1f} s ({stages})"
    console.print(f"[bold]bundle[/bold] {result.bundle.sha256} {how}")
    console.print(str(result.bundle.directory))


def register(app: typer.Typer) -> None:
    app.command("compile")(_compile)
