"""`hilt bench --board NAME --bundle DIR`: measure one artifact bundle on one board."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli.common import console


def _bench(
    board: str = typer.Option(..., "--board", help="Board name from the farm file ('local' without one)."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Artifact bundle directory."),
    selftest: bool = typer.Option(False, "--selftest", help="Run the runner's built-in workload instead."),
    farm: Path | None = typer.Option(None, "--farm", help="Farm file (default: $HILT_FARM, ./farm.toml)."),
    warmup: int = typer.Option(5, min=0),
    min_iters: int = typer.Option(20, "--min-iters", min=1),
    min_seconds: float = typer.Option(1.0, "--min-seconds", min=0.0),
    threads: int = typer.Option(1, min=1),
    cores: str = typer.Option("", help="Pin to these CPU indices, e.g. '0,1'."),
    timeout: float = typer.Option(300.0, help="Seconds before the run is killed."),
    wait: float = typer.Option(
        0.0, "--wait", min=0.0, help="Seconds to wait when the board is busy (default: fail at once)."
    ),
    pool: str | None = typer.Option(None, "--pool", help="Board pool database URL (default: $HILT_POOL)."),
    out: Path | None = typer.Option(None, "--out", help="Write the measurement record (JSON) here."),
    generate: bool = typer.Option(
        False, "--generate", help="Causal-LM bundle: greedy generation (time to first token, tokens/s)."
    ),
    new_tokens: int = typer.Option(16, "--new-tokens", min=1, help="--generate: tokens to generate."),
    prompt_tokens: int | None = typer.Option(
        None, "--prompt-tokens", min=1, help="--generate: prompt length (default: the bundle's prompt)."
    ),
) -> None:
    """Measure one bundle on one board and print the summary."""
    from device_agents.bench import BenchOptions, GenerateOptions, bench_board
    from device_agents.inventory import find_farm
    from device_agents.pool import BoardPool
    from harness.errors import ConfigError

    if (bundle is None) == (not selftest):
        raise ConfigError("give exactly one of --bundle DIR or --selftest")
    if generate and bundle is None:
        raise ConfigError("--generate needs --bundle DIR (a causal-LM bundle)")
    try:
        pinned = tuple(int(c) for c in cores.split(",") if c.strip())
    except ValueError:
        raise ConfigError(f"--cores must be comma-separated CPU indices, got '{cores}'") from None
    options = BenchOptions(
        warmup=warmup,
        min_iters=min_iters,
        min_seconds=min_seconds,
        threads=threads,
        cores=pinned,
        timeout_s=timeout,
        wait_s=wait,  # the agent's own lock on the board, for hosts that share no pool
        generate=GenerateOptions(new_tokens=new_tokens, prompt_tokens=prompt_tokens) if generate else None,
    )
    record = bench_board(find_farm(farm).board(board), bundle, options, pool=BoardPool(pool), wait_s=wait)
    s = record.summary
    e = record.energy
    console.print(
        f"[bold]{record.board}[/bold] {record.artifact[:16]}: median {s.median_ns / 1e6:.3f} ms, "
        f"p90 {s.p90_ns / 1e6:.3f} ms, p99 {s.p99_ns / 1e6:.3f} ms, CV {s.cv * 100:.1f}% over {s.n} runs; "
        f"peak RSS {record.peak_rss_kb} kB" + (" (SIMULATED board)" if record.simulated else ""),
        highlight=False,
    )
    g = record.generation
    if g is not None:
        tps = f"{g.decode_tokens_per_s:.1f}" if g.decode_tokens_per_s is not None else "n/a"
        p90 = f", p90 {g.decode.p90_ns / 1e6:.3f} ms/token" if g.decode else ""
        console.print(
            f"generate: prompt {g.prompt_tokens} + {g.new_tokens} tokens; time to first token "
            f"{g.ttft_median_ns / 1e6:.3f} ms; decode {tps} tokens/s{p90}; ids {g.generated_ids[:8]}…",
            highlight=False,
        )
    if e.total_j_per_inference is not None:
        active = (
            f", active {e.active_j_per_inference * 1e3:.3f} mJ"
            if e.active_j_per_inference is not None
            else ""
        )
        console.print(
            f"energy ({e.source}): {e.total_j_per_inference * 1e3:.3f} mJ/inference{active}", highlight=False
        )
    if record.throttled:
        console.print(f"[yellow]throttled:[/yellow] {'; '.join(record.throttle_reasons)}")
    if out:
        record.save(out)
        console.print(f"record written to {out}")


def register(app: typer.Typer) -> None:
    app.command("bench")(_bench)
