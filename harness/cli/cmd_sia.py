"""`hilt sia`: check the Structural Independence Assumption of a model, per granularity."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from harness.cli.common import console
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.sia.empirical import GranularityResult
    from harness.sia.run import SIAReport


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise ConfigError(f"{what} must be fractions in (0, 1), got {text!r}")
    return values


def _ratio_table(res: GranularityResult) -> Table:
    """One granularity's result: additivity, choice vs random, stability and verdict per ratio."""
    table = Table(
        title=f"{res.granularity} ({res.criterion}): {res.n_units} units, "
        f"{res.n_sampled} measured alone, fidelity ρ {res.fidelity}, "
        f"{res.forward_passes} batch forwards, {res.seconds:.1f} s"
    )
    for col in (
        "removed",
        "additivity ρ",
        "beats random",
        "super-additivity",
        "median rel. error",
        "rank stability τ",
        "τ after recovery",
        "verdict",
    ):
        table.add_column(col)
    for r in res.ratios:
        table.add_row(
            f"{r.removed_fraction:.0%}",
            str(r.additivity_spearman),
            "-" if r.beats_random is None else str(r.beats_random),
            "-" if r.super_additivity is None else f"{r.super_additivity.value:.2f}x",
            str(r.additivity_error),
            str(r.stability),
            "-" if r.stability_recovered is None else str(r.stability_recovered),
            r.verdict + (" (harmless)" if r.harmless else ""),
        )
    return table


def _print_report(report: SIAReport, family: str) -> None:
    """The structural verdict with its reasons, then each granularity's table and predictable horizon."""
    sv = report.structural
    console.print(f"[bold]{family}[/bold] attention: {sv.attention}, FFN: {sv.ffn}")
    for reason in sv.reasons + sv.notes:
        console.print(f"  • {reason}")
    for res in report.results:
        console.print(_ratio_table(res))
        console.print(
            f"predictable horizon: remove at most {res.horizon_removed:.0%} "
            f"(schedule ratio ≥ {res.min_keep_ratio:.2f})"
        )


def sia(
    model: str = typer.Option(..., "--model", help="Model directory, or demo-gpt2 / demo-llama."),
    data: str = typer.Option(
        "demo", "--data", help="'demo', or a token file (.npz or .safetensors: input_ids, labels)."
    ),
    granularity: str = typer.Option("layer,head,channel", help="Comma-separated granularities."),
    ratios: str = typer.Option("0.25,0.5,0.75", help="Fractions of units removed to test."),
    subsets: int = typer.Option(10, help="Random subsets per ratio (additivity)."),
    max_units: int = typer.Option(48, help="Units measured alone (sampled when there are more)."),
    recovery_steps: int = typer.Option(0, help="LoRA steps before re-ranking (0: no recovery pass)."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("hilt-runs/sia.json"), "--out", help="JSON report path."),
    plot: Path | None = typer.Option(None, "--plot", help="Write an additivity PNG here."),
    no_cache: bool = typer.Option(False, "--no-cache"),
    rule: str = typer.Option(
        "rank", "--rule", help="rank (rank agreement + choice vs random) or magnitude (the older rule)."
    ),
) -> None:
    """Structural verdict plus the empirical SIA test; prints a table and writes JSON."""
    import torch

    from harness.models import load_model
    from harness.sia import Thresholds, check_sia
    from harness.sia.data import load_calibration
    from harness.sia.empirical import EmpiricalConfig

    grans = tuple(g.strip() for g in granularity.split(",") if g.strip())
    thresholds = Thresholds(rule=rule)
    cfg = EmpiricalConfig(
        ratios=_floats(ratios, "--ratios"),
        max_units=max_units,
        subsets_per_ratio=subsets,
        recovery_steps=recovery_steps,
        seed=seed,
    )
    torch.manual_seed(seed)
    loaded = load_model(model)
    ids, labels = load_calibration(data)
    with console.status("SIA check") as status:
        report = check_sia(
            loaded.model,
            ids,
            labels,
            granularities=grans,
            config=cfg,
            thresholds=thresholds,
            cache=not no_cache,
            progress=lambda msg: status.update(msg),
        )
    _print_report(report, loaded.family)
    report.write_json(out)
    console.print(f"wrote {out}")
    if plot is not None:
        from harness.sia.plot import plot_additivity

        console.print(f"wrote {plot_additivity(report, plot)}")


def register(app: typer.Typer) -> None:
    app.command("sia")(sia)
