"""Does the SIA constraint earn its place in `hilt tune`? The same search with and without it.

Arms: `restrict` (what `hilt tune` does by default: the space is cut to SIA's predictable horizons on
the dense model and stages past them are rejected before building) and `off` (`--no-sia`: the whole
space). Each arm runs the same sampler for the same number of trials with 3 independent seeds (one
study per arm and seed, never shared), every trial real: prune with recovery, evaluate, compile,
bench on the local board through the agent. Compared by hypervolume of (1 - accuracy, latency /
dense, memory / dense) with reference (1, 2, 2) — the same figure as benchmarks/tuner_efficiency.py
— after every counted trial, and by the best accuracy found at >= 4x compression. Also the wall time
each arm spent (rejected trials cost almost nothing).

    .venv/bin/python benchmarks/sia_in_search.py --trials 12 --seeds 0 1 2

Writes sia_in_search.json beside this file after every finished study (a rerun skips finished ones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tuner_efficiency import REFERENCE, summarise  # noqa: E402 - a sibling benchmark script


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-gpt2")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--val-n", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("hilt-runs/sia-in-search"))
    p.add_argument("--out", type=Path, default=ROOT / "sia_in_search.json")
    return p.parse_args(argv)


def _best_at(study, ratio: float) -> float | None:  # noqa: ANN001 - an optuna Study
    """Best test-free (validation) accuracy among feasible trials with compression >= ratio."""
    from optuna.trial import TrialState

    accs = [
        t.user_attrs["accuracy"]
        for t in study.trials
        if t.state == TrialState.COMPLETE
        and all(c <= 0 for c in t.user_attrs.get("constraints", [1]))
        and t.user_attrs.get("compression", 0) >= ratio
    ]
    return max(accs) if accs else None


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def print_table(data: dict) -> None:
    print(f"\nmachine: {data['machine']}; {data['sampler']}, {data['trials']} trials per study; "
          f"HV reference {data['reference_point']}")  # fmt: skip
    print(f"{'arm':<9}{'seeds':>6}  {'final HV (mean ± sd)':>22}  {'HV at trial 6':>18}  "
          f"{'best acc >= 4x':>16}  {'rejected':>9}  {'wall s':>8}")  # fmt: skip
    for arm in ("restrict", "off"):
        runs = [r for r in data["runs"].values() if r["arm"] == arm]
        if not runs:
            continue
        final = [r["hypervolume"][-1] if r["hypervolume"] else 0.0 for r in runs]
        mid = [r["hypervolume"][5] for r in runs if len(r["hypervolume"]) > 5]
        best = [r["best_acc_4x"] for r in runs if r["best_acc_4x"] is not None]
        rejected = sum(r["rejected"] for r in runs)
        wall = sum(r["seconds"] for r in runs)
        found = f"{_mean_sd(best)} ({len(best)}/{len(runs)})"
        print(f"{arm:<9}{len(runs):>6}  {_mean_sd(final):>22}  {_mean_sd(mid):>18}  "
              f"{found:>16}  {rejected:>9}  {wall:>8.0f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    import optuna
    import torch

    from device_agents.bench import BenchOptions
    from tuner.space import SpaceConfig
    from tuner.tune import TuneRequest, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    data.update(
        machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        model=args.model, sampler=args.sampler, trials=args.trials, max_steps=args.max_steps,
        val_n=args.val_n, reference_point=REFERENCE.tolist(), command=" ".join(sys.argv),
    )  # fmt: skip
    data.setdefault("runs", {})
    for seed in args.seeds:
        for arm in ("restrict", "off"):
            key = f"{arm}-seed{seed}"
            if key in data["runs"]:
                print(f"{key}: done before, skipped", flush=True)
                continue
            t0 = time.perf_counter()
            req = TuneRequest(
                model=args.model, study=f"sia-{key}", storage=f"sqlite:///{args.work / 'bench.db'}",
                board="local", trials=args.trials, sampler=args.sampler, seed=seed, use_sia=arm != "off",
                space=SpaceConfig(max_stages=3, max_steps=args.max_steps, ratio_step=0.05), val_n=args.val_n,
                work_dir=args.work, bench_options=BenchOptions(min_iters=10, min_seconds=0.3),
            )  # fmt: skip
            res = tune(req)
            entry = {"arm": arm, "seed": seed, "seconds": time.perf_counter() - t0, **summarise(res.study)}
            entry["best_acc_4x"] = _best_at(res.study, 4.0)
            entry["load_avg"] = os.getloadavg()
            data["runs"][key] = entry
            args.out.write_text(json.dumps(data, indent=2))
            hv = entry["hypervolume"]
            print(f"{key}: final HV {hv[-1] if hv else 0:.4f}, {entry['completed']} built, "
                  f"{entry['rejected']} rejected, {entry['seconds']:.0f} s", flush=True)  # fmt: skip
    print_table(data)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
