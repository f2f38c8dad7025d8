"""Additivity plot: predicted (sum of single removals) vs measured loss increase, per granularity.

One figure function for both the `hilt sia` PNG and the deployment report's SVG; it reads the
results as `GranularityResult`s (the tuner's store reads its persisted JSON back into them).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from harness.sia.empirical import GranularityResult  # noqa: E402
from harness.sia.run import SIAReport  # noqa: E402


def additivity_figure(results: list[GranularityResult], title: str) -> Figure:
    """One panel per granularity; points coloured by removed fraction; the y = x line is independence."""
    n = max(1, len(results))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4), squeeze=False)
    for ax, res in zip(axes[0], results, strict=False):
        for r in res.ratios:
            ax.scatter(
                r.predicted,
                r.measured,
                s=18,
                label=f"{r.removed_fraction:.0%} removed ({r.verdict})",
            )
        ax.axline((0, 0), slope=1, color="k", lw=0.8, ls="--", label="additive (y = x)")
        where = f", horizon {res.horizon_removed:.0%}"
        ax.set_title(f"{res.granularity} ({res.criterion}){where}", fontsize=9)
        ax.set_xlabel("sum of single-removal loss increases")
        ax.set_ylabel("measured loss increase")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_additivity(report: SIAReport, path: Path) -> Path:
    """The `hilt sia` PNG."""
    fig = additivity_figure(report.results, f"SIA additivity — {report.structural.family}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
