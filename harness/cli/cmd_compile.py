"""`hilt compile --model DIR --board PROFILE|BOARD [--tune-trials N [--tune-on BOARD]]`: build a model
into an artifact bundle; tuning trials are timed on this host, or on a farm board for its arch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import typer

from harness.cli.common import console


def _compile(
    model: str = typer.Option(..., "--model", help="Model directory (plain HF or pruned) or demo name."),
    board: str = typer.Option(
        ..., "--board", help="Board profile (name or TOML path), or a farm board's name (its profile)."
    ),
    tune_trials: int = typer.Option(0, "--tune-trials", min=0, help="MetaSchedule trials (0: no tuning)."),
    tune_on: str | None = typer.Option(
        None,
        "--tune-on",
        help="Farm board that times the trials (default: --board if it is a farm board, else the first "
        "farm board with that profile when its arch is not this host's).",
    ),
    farm: Path | None = typer.Option(None, "--farm", help="Farm file (default: $HILT_FARM, ./farm.toml)."),
    pool: str | None = typer.Option(None, "--pool", help="Board pool database URL (default: $HILT_POOL)."),
    wait: float = typer.Option(0.0, "--wait", min=0.0, help="Seconds to wait for a busy tuning board."),
    database: Path | None = typer.Option(
        None, "--database", help="Tuning database directory (default: the cache's, per arch)."
    ),
    seq_len: int = typer.Option(
        128, "--seq-len", min=1, help="Input length the bundle is built for (causal LMs: the prefill bucket)."
    ),
    cache_len: int | None = typer.Option(
        None, "--cache-len", min=2, help="Causal LMs: KV-cache positions (default --seq-len + 128)."
    ),
    matmul: str | None = typer.Option(
        None,
        "--matmul",
        help="Weight matmuls: 'tir' (hilt's TensorIR schedule) or 'blas' (OpenBLAS in the board runtime); "
        "default: the profile's.",
    ),
    weights: str = typer.Option(
        "fp32", "--weights", help="Weight format: fp32, int8 (per channel) or int4 (groups; tables int8)."
    ),
    group_size: int = typer.Option(32, "--group-size", help="int4: weights per scale/minimum group."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build even if an identical bundle exists."),
) -> None:
    """Compile a model for a board profile with TVM and print the bundle directory."""
    from harness.compile import CompileOptions, compile_model
    from harness.quant import weight_format

    weight_format(weights).check(group_size)  # a bad format or group size: one line, before any work

    opts = CompileOptions(
        seq_len=seq_len,
        tune_trials=tune_trials,
        database_dir=database,
        use_cache=not no_cache,
        cache_len=cache_len,
        matmul=matmul,
        weights=weights,
        group_size=group_size,
    )
    profile, tuning_board = _resolve_boards(board, tune_on if tune_trials > 0 else None, tune_trials, farm)
    timing = _timer_on(tuning_board, pool, wait) if tuning_board is not None else nullcontext(None)
    with timing as timer, console.status("compiling…") as status:

        def progress(msg: str) -> None:
            status.update(msg)
            console.log(msg)

        result = compile_model(model, profile, opts, progress=progress, timer=timer)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.stages.items())
    how = "from cache" if result.cached else f"built in {result.seconds:.1f} s ({stages})"
    console.print(f"[bold]bundle[/bold] {result.bundle.sha256} {how}")
    w = result.bundle.metadata.weights
    if w.format != "fp32":
        tables = f", tables {w.table_format}" if w.table_format else ""
        console.print(
            f"weights {w.format}{f' (groups of {w.group_size})' if w.group_size else ''}{tables}: "
            f"{w.weights} tensors, {w.fp32_mb:.1f} MB fp32 -> {w.stored_mb:.1f} MB stored; "
            f"fp32: norms and biases{'; ' + '; '.join(w.kept_fp32) if w.kept_fp32 else ''}"
        )
    console.print(str(result.bundle.directory))


def _resolve_boards(board: str, tune_on: str | None, trials: int, farm_path: Path | None) -> tuple[Any, Any]:
    """(profile, farm board that times the trials or None) for `--board` and `--tune-on`."""
    from device_agents.inventory import find_farm
    from harness.runtime.toolchains import host_arch
    from profiles.schema import load_profile

    farm = find_farm(farm_path)
    named = {b.name: b for b in farm.boards}
    profile = named[board].profile if board in named else load_profile(board)
    if tune_on is not None:
        tuner = farm.board(tune_on)
        if tuner.profile.name != profile.name:
            raise _config(
                f"--tune-on {tune_on}: its profile is {tuner.profile.name}, the bundle's is {profile.name}; "
                "records only match the target they were tuned for"
            )
        return profile, tuner
    if trials == 0:
        return profile, None
    if board in named:
        return profile, named[board]
    if profile.arch == host_arch():
        return profile, None  # timed on this host
    same = [b for b in farm.boards if b.profile.name == profile.name]
    if not same:
        raise _config(
            f"--tune-trials for {profile.name} ({profile.arch}) times kernels on a board with that profile, "
            f"and {farm.source} has none; add one (hilt farm up for an emulated one) or pass --tune-on"
        )
    return profile, same[0]


def _config(message: str) -> Exception:
    from harness.errors import ConfigError

    return ConfigError(message)


@contextmanager
def _timer_on(board: Any, pool_url: str | None, wait: float) -> Iterator[Any]:
    from device_agents.kernel_timing import tuning_on
    from device_agents.pool import BoardPool

    with tuning_on(board, BoardPool(pool_url), wait) as timer:
        console.log(f"tuning trials are timed on {timer.where}")
        yield timer


def register(app: typer.Typer) -> None:
    app.command("compile")(_compile)
