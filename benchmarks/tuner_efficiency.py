"""Tuner efficiency: hypervolume vs trial count for TPE, NSGA-II and random, with real trials.

Every trial is real: prune (stage prefixes cached), evaluate, compile with TVM (cached by bundle),
bench on the local board through the agent. Objectives: accuracy (max), latency p50 and peak memory
(min). Hypervolume is computed on (1 - accuracy, latency / dense latency, memory / dense memory)
with the reference point (1.0, 2.0, 2.0): accuracy 0, twice the dense latency, twice the dense memory.
Goal from the issue: 95% of random-200's final hypervolume within 50 trials.

    .venv/bin/python benchmarks/tuner_efficiency.py --random-trials 200 --trials 50   # the issue's budget
    .venv/bin/python benchmarks/tuner_efficiency.py --random-trials 40 --trials 20    # what fits an hour here

Also prints the per-trial overhead outside prune/evaluate/compile/bench and the cache hit rates.
Writes JSON next to this file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
REFERENCE = np.array([1.0, 2.0, 2.0])


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-gpt2")
    p.add_argument("--board", default="local")
    p.add_argument("--trials", type=int, default=50, help="trials for TPE and NSGA-II")
    p.add_argument("--random-trials", type=int, default=200)
    p.add_argument("--samplers", default="tpe,nsga2")
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--val-n", type=int, default=300)
    p.add_argument("--work", type=Path, default=Path("hilt-runs/tuner-efficiency"))
    p.add_argument("--out", type=Path, default=ROOT / "tuner_efficiency.json")
    return p.parse_args(argv)


def hypervolume(points: np.ndarray) -> float:
    """Exact hypervolume (minimisation) dominated by `points` up to REFERENCE, by inclusion over a grid."""
    from optuna._hypervolume import compute_hypervolume

    pts = points[(points < REFERENCE).all(axis=1)]
    return float(compute_hypervolume(pts, REFERENCE)) if len(pts) else 0.0


def _history(study, dense: dict) -> list[float]:  # noqa: ANN001
    from optuna.trial import TrialState

    pts: list[list[float]] = []
    hv = []
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and all(c <= 0 for c in t.user_attrs.get("constraints", [1])):
            a = t.user_attrs
            pts.append(
                [
                    1 - a["accuracy"],
                    a["latency_ms"] / dense["latency_ms"],
                    a["peak_rss_mb"] / dense["peak_rss_mb"],
                ]
            )
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            hv.append(hypervolume(np.array(pts)) if pts else 0.0)
    return hv


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    import optuna

    from device_agents.bench import BenchOptions
    from tuner.space import SpaceConfig
    from tuner.tune import TuneRequest, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = args.work / "bench.db"
    runs = [("random", args.random_trials)] + [(s, args.trials) for s in args.samplers.split(",")]
    out: dict = {"machine": platform.processor() or platform.machine(), "reference_point": REFERENCE.tolist(),
                 "samplers": {}}  # fmt: skip
    for sampler, n in runs:
        t0 = time.perf_counter()
        req = TuneRequest(
            model=args.model, study=f"eff-{sampler}-{n}", storage=f"sqlite:///{db}", board=args.board,
            trials=n, sampler=sampler, seed=0,
            space=SpaceConfig(max_stages=3, max_steps=args.max_steps, ratio_step=0.05), val_n=args.val_n,
            work_dir=args.work, bench_options=BenchOptions(min_iters=10, min_seconds=0.3),
        )  # fmt: skip
        res = tune(req)
        dense = res.study.user_attrs["dense"]
        hv = _history(res.study, dense)
        overheads = [t.user_attrs["overhead_s"] for t in res.study.trials if "overhead_s" in t.user_attrs]
        stats = res.pipeline.stats
        out["samplers"][sampler] = {
            "trials": n, "hypervolume": hv, "seconds": time.perf_counter() - t0,
            "overhead_s_median": statistics.median(overheads) if overheads else None,
            "overhead_s_max": max(overheads) if overheads else None, "caches": stats,
        }  # fmt: skip
        print(f"{sampler:<7} {n:>4} trials  final HV {hv[-1] if hv else 0:.4f}  "
              f"overhead median {out['samplers'][sampler]['overhead_s_median']}  caches {stats}")  # fmt: skip
    target = 0.95 * (out["samplers"]["random"]["hypervolume"] or [0])[-1]
    print(f"\n95% of random-{args.random_trials}'s final hypervolume = {target:.4f}")
    print(f"{'sampler':<8}" + "".join(f"{k:>9}" for k in (10, 20, 30, 50, 100, 200)) + "   trials to 95%")
    for sampler, d in out["samplers"].items():
        hv = d["hypervolume"]
        cells = "".join(
            f"{hv[k - 1]:>9.4f}" if len(hv) >= k else f"{'':>9}" for k in (10, 20, 30, 50, 100, 200)
        )
        reach = next((i + 1 for i, v in enumerate(hv) if v >= target), None)
        d["trials_to_95pct_of_random"] = reach
        print(f"{sampler:<8}{cells}   {reach}")
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
