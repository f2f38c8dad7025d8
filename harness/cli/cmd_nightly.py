"""`hilt nightly`: regression run of a suite across a device farm (JUnit XML, summary, exit 0/1/2)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.cli.common import console


def nightly(
    farm: str = typer.Option(..., "--farm", help="Farm file with the boards to run on."),
    suite: Path = typer.Option(..., "--suite", help="Suite TOML: cases and the profiles they run on."),
    baseline: str = typer.Option("latest", "--baseline", help="'latest' or a run name."),
    update_baseline: bool = typer.Option(False, "--update-baseline", help="Promote this run to baseline."),
    run: str | None = typer.Option(None, "--run", help="Name of this run (default: UTC timestamp)."),
    storage: str | None = typer.Option(None, "--storage", help="Results database URL."),
    pool: str | None = typer.Option(None, "--pool", help="Board pool database URL (default: $HILT_POOL)."),
    wait: float = typer.Option(
        3600.0, "--wait", min=0.0, help="Seconds a bench may wait for its board's machine to come free."
    ),
    out: Path = typer.Option(Path("hilt-runs/nightly"), "--out", help="Where JUnit XML and summaries go."),
    min_iters: int = typer.Option(30, "--min-iters", help="Timed iterations per bench (at least)."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", help="Timed seconds per bench (at least)."),
    history: int = typer.Option(14, "--history", help="Nights shown in the trend plot."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics here."),
    pushgateway: str | None = typer.Option(None, "--pushgateway", help="Push results to this Pushgateway."),
) -> None:
    """Bench every case on every matching board, compare with the baseline, write JUnit XML."""
    from device_agents.bench import BenchOptions
    from device_agents.inventory import load_farm
    from device_agents.pool import BoardPool, pool_url
    from reports.nightly import run_nightly
    from reports.suite import load_suite
    from tuner.store import ResultsStore

    the_suite = load_suite(suite)
    the_farm = load_farm(farm)
    metrics = None
    on_bench = None
    if metrics_port is not None:
        from reports.metrics import HiltMetrics

        metrics = HiltMetrics()
        console.print(f"metrics on http://127.0.0.1:{metrics.serve(metrics_port)}/metrics")
        on_bench = metrics.nightly_bench_hook()
    with console.status(f"nightly {the_suite.name}: benchmarking {len(the_farm.boards)} boards"):
        # boards that are one machine (two local boards) share its bench lock: queue, do not fail the case
        # the agent's own lock (hosts outside this pool): queue a minute at most, since the bench
        # answer's deadline grows by that much; the pool's wait (--wait) is separate
        options = BenchOptions(min_iters=min_iters, min_seconds=min_seconds, wait_s=min(wait, 60.0))
        store = ResultsStore(storage)
        # the same pool as `hilt tune` on this storage (its server database): a nightly and tuning
        # workers sharing a farm take turns on each board instead of meeting on its agent lock
        the_pool = BoardPool(pool_url(pool, storage=store.url))
        res = run_nightly(
            the_suite, the_farm, store, out, run=run, baseline=baseline,
            update_baseline=update_baseline, bench_options=options, history=history,
            pool=the_pool, wait_s=wait, on_bench=on_bench,
        )  # fmt: skip
    table = Table(title=f"nightly {the_suite.name} run {res.run} vs baseline {res.baseline or 'none'}")
    for col in ("case", "board", "status", "message"):
        table.add_column(col)
    colour = {"regression": "red", "error": "yellow", "pass": "green", "new": "cyan"}
    for r in res.results:
        table.add_row(r.case, r.board, f"[{colour[r.status]}]{r.status}[/]", r.message)
    console.print(table)
    waits = ", ".join(f"{b} {s:.1f} s" for b, s in sorted(res.waited_s.items()))
    if waits:
        console.print(f"waited for a free machine: {waits}", highlight=False)
    console.print(f"JUnit XML: {res.junit}; summary: {res.summary_html}")
    if pushgateway:
        from reports.metrics import CaseMetrics, push_nightly

        cases = []
        for r in res.results:
            rec = res.records.get((r.case, r.board))
            s = rec.summary if rec else None
            cases.append(CaseMetrics(
                r.case, r.board, s.median_ns / 1e9 if s else None, s.p90_ns / 1e9 if s else None,
                rec.peak_rss_kb * 1024.0 if rec else None, rec.energy.total_j_per_inference if rec else None,
                r.status == "regression", r.status == "error",
            ))  # fmt: skip
        push_nightly(pushgateway, res.run, cases)
        console.print(f"pushed {len(cases)} cases to {pushgateway}")
    if metrics is not None:
        metrics.stop()
    raise typer.Exit(res.exit_code)


def register(app: typer.Typer) -> None:
    app.command("nightly")(nightly)
