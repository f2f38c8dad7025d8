"""Additivity plot: predicted (sum of single removals) vs measured loss increase, per granularity."""

from __future__ import annotations

from pathlib import Path

from harness.sia.run import SIAReport


def plot_additivity(report: SIAReport, path: Path) -> Path:
    """One panel per granularity; points coloured by removed fraction; the y = x line is independence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(report.results)
    fig, axes = plt.subplots(1, max(1, n), figsize=(4.2 * max(1, n), 4), squeeze=False)
    for ax, res in zip(axes[0], report.results, strict=False):
        lo, hi = 0.0, 0.0
        for r in res.ratios:
            ax.scatter(r.predicted, r.measured, s=18, label=f"{r.removed_fraction:.0%} removed ({r.verdict})")
            lo = min([lo, *r.predicted, *r.measured])
            hi = max([hi, *r.predicted, *r.measured])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="additive (y = x)")
        ax.set_title(f"{res.granularity} ({res.criterion}), horizon {res.horizon_removed:.0%}")
        ax.set_xlabel("sum of single-removal loss increases")
        ax.set_ylabel("measured loss increase")
        ax.legend(fontsize=7)
    fig.suptitle(f"SIA additivity — {report.structural.family}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
