"""Nightly summary in Markdown and HTML, with trend plots of median latency over the last N nights."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, FileSystemLoader, select_autoescape

from reports.suite import Suite
from tuner.store import ResultsStore, stored_record

if TYPE_CHECKING:
    from reports.nightly import NightlyResult

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _trend_png(store: ResultsStore, study: str, history: int) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r["name"] for r in store.runs(study)][-history:]
    if not runs:
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    for i, run in enumerate(runs):
        for row in store.measurements(study=study, run=run):
            key = f"{row['case_name']}@{row['board']}"
            series.setdefault(key, []).append((i, stored_record(row).summary.median_ns / 1e6))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for key, pts in sorted(series.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
    ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"last {len(runs)} nights")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_summary(
    suite: Suite, store: ResultsStore, study: str, res: NightlyResult, out_dir: Path, history: int
) -> tuple[Path, Path]:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "html.j2"]))
    ctx = {"suite": suite, "res": res, "trend": _trend_png(store, study, history)}
    lines = [
        f"# Nightly {suite.name} — run {res.run}",
        "",
        f"Baseline: {res.baseline or 'none'}; exit code {res.exit_code}.",
        "",
        "| case | board | status | message | details |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r.case} | {r.board} | {r.status} | {r.message} | {r.details} |" for r in res.results]
    lines += [
        "",
        "Time each board waited for its machine (board pool):",
        "",
        "| board | waited s |",
        "|---|---|",
    ]
    lines += [f"| {board} | {s:.2f} |" for board, s in sorted(res.waited_s.items())]
    md = out_dir / "nightly.md"
    md.write_text("\n".join(lines) + "\n")
    html = out_dir / "nightly.html"
    html.write_text(env.get_template("nightly.html.j2").render(**ctx))
    return md, html
