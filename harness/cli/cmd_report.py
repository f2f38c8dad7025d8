"""`hilt report`: a deployment report (HTML + Markdown) for a tuning study."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli.common import console


def report(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str | None = typer.Option(None, "--storage", help="Results database URL."),
    out: Path = typer.Option(Path("hilt-runs/report"), "--out", help="Output directory."),
    trial: int | None = typer.Option(None, "--trial", help="Report this trial instead of the chosen one."),
) -> None:
    """Write report.html (self-contained) and report.md for the study's chosen trial."""
    from reports.deploy import headline, load_report_data, write_report

    data = load_report_data(study, storage, trial)
    html, md = write_report(data, out)
    console.print(headline(data))
    console.print(f"wrote {html} and {md}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
