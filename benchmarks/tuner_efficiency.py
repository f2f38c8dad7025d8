"""Tuner efficiency: hypervolume vs trial count for TPE, NSGA-II and random, with real trials.

Every trial is real: prune (stage prefixes cached), evaluate, compile with TVM (cached by bundle),
bench on the local board through the agent. Objectives: accuracy (max), latency p50 and peak memory
(min). Hypervolume is computed on (1 - accuracy, latency / dense latency, memory / dense memory)
with the reference point (1.0, 2.0, 2.0): accuracy 0, twice the dense latency, twice the dense memory.
Goal from the issue: 95% of random-200's final hypervolume within 50 trials. A trial counts when it
finishes (COMPLETE, or PRUNED when a constraint rejected it); failed trials are retried, not counted.

`--sia` picks what SIA does to the search: `off` (default here) searches the whole space;
`restrict` is what `hilt tune` does by default. On demo-gpt2 SIA leaves only layer removal of at
most half the layers, a space too small to tell samplers apart, so the sampler comparison runs
without it.

    .venv/bin/python benchmarks/tuner_efficiency.py --runs random:200,tpe:50,nsga2:50   # the issue's budget
    .venv/bin/python benchmarks/tuner_efficiency.py --runs random:200 &                  # two workers...
    .venv/bin/python benchmarks/tuner_efficiency.py --runs tpe:50,nsga2:50               # ...one board
    .venv/bin/python benchmarks/tuner_efficiency.py --runs random:200 --seed 1           # joins as worker 2
    .venv/bin/python benchmarks/tuner_efficiency.py --summary-only                       # print the table

Studies live in one SQLite file, so a run resumes where it stopped and two processes share the
board's lease (never two benches at once). Each run's figures are merged into the JSON as soon as it
ends. Also reports the per-trial overhead outside prune/evaluate/compile/bench and cache hit rates.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
REFERENCE = np.array([1.0, 2.0, 2.0])
MARKS = (10, 20, 30, 50, 100, 200)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-gpt2")
    p.add_argument("--board", default="local")
    p.add_argument("--runs", default="random:200,tpe:50,nsga2:50", help="sampler:trials,...")
    p.add_argument("--sia", choices=("off", "restrict"), default="off")
    p.add_argument("--seed", type=int, default=0, help="a second worker on the same run needs another seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (two workers on 2 cores: 1 each)")
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--val-n", type=int, default=300)
    p.add_argument("--work", type=Path, default=Path("hilt-runs/tuner-efficiency"))
    p.add_argument("--out", type=Path, default=ROOT / "tuner_efficiency.json")
    p.add_argument("--summary-only", action="store_true", help="print the table from the JSON; run nothing")
    return p.parse_args(argv)


def _runs(spec: str) -> list[tuple[str, int]]:
    runs = []
    for item in spec.split(","):
        sampler, _, n = item.partition(":")
        if sampler not in ("random", "tpe", "nsga2", "gp") or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"error: bad run {item!r}; expected sampler:trials, e.g. tpe:50")
        runs.append((sampler, int(n)))
    return runs


def hypervolume(points: np.ndarray) -> float:
    """Exact hypervolume (minimisation) dominated by `points` up to REFERENCE."""
    from optuna._hypervolume import compute_hypervolume

    pts = points[(points < REFERENCE).all(axis=1)] if len(points) else points
    return float(compute_hypervolume(pts, REFERENCE)) if len(pts) else 0.0


def summarise(study) -> dict:  # noqa: ANN001
    """Hypervolume after each counted trial, overheads and cache hit rates, all from the stored study."""
    from optuna.trial import TrialState

    dense = study.user_attrs["dense"]
    pts: list[list[float]] = []
    hv: list[float] = []
    overheads: list[float] = []
    cache = {"prune_hits": 0, "prune_misses": 0, "compile_hits": 0, "compile_misses": 0}
    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    for t in sorted(counted, key=lambda t: t.number):
        a = t.user_attrs
        if t.state == TrialState.COMPLETE:
            overheads.append(a["overhead_s"])
            for k, v in a.get("cache", {}).items():
                cache[k] += v
            if all(c <= 0 for c in a["constraints"]):
                pts.append(
                    [
                        1 - a["accuracy"],
                        a["latency_ms"] / dense["latency_ms"],
                        a["peak_rss_mb"] / dense["peak_rss_mb"],
                    ]
                )
        hv.append(hypervolume(np.array(pts)))
    rate = {
        kind: (
            cache[f"{kind}_hits"] / total
            if (total := cache[f"{kind}_hits"] + cache[f"{kind}_misses"])
            else None
        )
        for kind in ("prune", "compile")
    }
    return {
        "trials": len(counted),
        "completed": len(overheads),
        "rejected": sum(t.state == TrialState.PRUNED for t in counted),
        "failed": sum(t.state == TrialState.FAIL for t in study.trials),
        "hypervolume": hv,
        "overhead_s_median": statistics.median(overheads) if overheads else None,
        "overhead_s_p90": float(np.percentile(overheads, 90)) if overheads else None,
        "overhead_s_max": max(overheads) if overheads else None,
        "cache": cache,
        "cache_hit_rate": rate,
        "dense": dense,
    }


def _merge(path: Path, key: str, entry: dict, header: dict) -> dict:
    """Read-modify-write the JSON under a lock, so two benchmark processes never lose each other's runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.update(header)
        data.setdefault("runs", {})[key] = entry
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    return data


def print_table(data: dict) -> None:
    runs = data.get("runs", {})
    randoms = [r for r in runs.values() if r["sampler"] == "random"]
    base = max(randoms, key=lambda r: r["trials"]) if randoms else None
    target = 0.95 * base["hypervolume"][-1] if base and base["hypervolume"] else None
    ref, sia = data.get("reference_point"), data.get("sia")
    print(f"\nmachine: {data.get('machine')}; reference point {ref}; sia {sia}")
    if target is not None:
        final = base["hypervolume"][-1]
        print(f"95% of random-{base['trials']}'s final hypervolume ({final:.4f}) = {target:.4f}")
    print(
        f"{'run':<12}"
        + "".join(f"{k:>9}" for k in MARKS)
        + "  to 95%  to 100%  overhead p50/p90 s  prune/compile hits"
    )
    for key, r in runs.items():
        hv = r["hypervolume"]
        cells = "".join(f"{hv[k - 1]:>9.4f}" if len(hv) >= k else f"{'':>9}" for k in MARKS)
        reach = next((i + 1 for i, v in enumerate(hv) if target is not None and v >= target), None)
        full = next((i + 1 for i, v in enumerate(hv) if target is not None and v >= target / 0.95), None)
        rate = r["cache_hit_rate"]
        hits = "/".join("-" if rate[k] is None else f"{rate[k]:.0%}" for k in ("prune", "compile"))
        p50, p90 = r["overhead_s_median"], r["overhead_s_p90"]
        ovh = "-" if p50 is None else f"{p50:.3f}/{p90:.3f}"
        print(f"{key:<12}{cells}  {str(reach):>6}  {str(full):>7}  {ovh:>17}  {hits:>18}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.summary_only:
        if not args.out.is_file():
            raise SystemExit(f"error: no results at {args.out}; run the benchmark first")
        print_table(json.loads(args.out.read_text()))
        return 0
    runs = _runs(args.runs)
    import optuna
    import torch

    from device_agents.bench import BenchOptions
    from tuner.space import SpaceConfig
    from tuner.tune import TuneRequest, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "bench.db"
    header = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "model": args.model,
        "board": args.board,
        "reference_point": REFERENCE.tolist(),
        "sia": args.sia,
        "max_steps": args.max_steps,
        "val_n": args.val_n,
        "threads": args.threads,
        "command": " ".join(sys.argv),
    }
    data: dict = {}
    for sampler, n in runs:
        key = f"{sampler}-{n}"
        t0 = time.perf_counter()
        req = TuneRequest(
            model=args.model, study=f"eff-{args.sia}-{key}", storage=f"sqlite:///{db}", board=args.board,
            trials=n, sampler=sampler, seed=args.seed, use_sia=args.sia != "off",
            space=SpaceConfig(max_stages=3, max_steps=args.max_steps, ratio_step=0.05), val_n=args.val_n,
            work_dir=args.work, bench_options=BenchOptions(min_iters=10, min_seconds=0.3),
        )  # fmt: skip
        res = tune(req)
        entry = {"sampler": sampler, "seconds_this_process": time.perf_counter() - t0, **summarise(res.study)}
        entry["trials"] = n
        data = _merge(args.out, key, entry, header)
        hv = entry["hypervolume"]
        print(f"{key}: final HV {hv[-1] if hv else 0:.4f}; {entry['completed']} built, {entry['rejected']} "
              f"rejected, {entry['failed']} failed; cache {entry['cache']}", flush=True)  # fmt: skip
    print_table(data)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
