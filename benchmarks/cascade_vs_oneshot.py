"""Cascade vs one-shot, layer-only and width-only pruning at equal total-parameter compression.

For each demo model and each target compression (2x, 4x, 8x, 13.8x by default), every method is a
schedule for the same runner with the same total LoRA recovery budget; the compression helper turns
the target into per-stage ratios. Scoring uses the demo calibration split, recovery trains on a
prefix of the training split, accuracy is measured on the held-out test split.

A method may carry modifiers, e.g. `cascade+split+kd`: `+kd` / `+mix` / `+ce` pick the recovery loss
(distillation from the dense model, mixed, labels only; default `--recovery-loss`), `+split` searches
the split of the compression between granularities over `--split-grid`, choosing the split whose
pruned model (no recovery, seed 0) is most accurate on the validation split. `--cascade-cuts head:2`
cuts a granularity of the cascade in several stages (the budget is shared). Every (method, target)
runs once per seed in `--seeds`; the table shows mean ± standard deviation over seeds, and
"cascade-best" is the cascade variant with the best mean *validation* accuracy, reported on test.

    .venv/bin/python benchmarks/cascade_vs_oneshot.py            # full settings
    .venv/bin/python benchmarks/cascade_vs_oneshot.py --quick    # reduced: fewer steps, smaller test set
    .venv/bin/python benchmarks/cascade_vs_oneshot.py --models demo-gpt2 --targets 13.8 --quick \
        --methods one-shot,one-shot+split+kd,cascade+split+kd --seeds 0,1,2

Prints one table and writes JSON next to this file (or --out). Uses the packaged demo models (installed
on first use; `hilt demo train --force` retrains them).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

from harness.errors import HiltError

ROOT = Path(__file__).resolve().parent
MODELS = ("demo-gpt2", "demo-llama")
TARGETS = (2.0, 4.0, 8.0, 13.8)
SPLIT_GRID = "1:1:1,0.5:1:2,0.5:1:4,0.25:1:4,0.5:0.5:4,1:0.5:4,0.25:0.5:2"  # layer:head:channel weights
LOSSES = ("ce", "kd", "mix")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--targets", default=",".join(str(t) for t in TARGETS))
    p.add_argument("--methods", default="cascade,one-shot,layer-only,width-flap,width-taylor")
    p.add_argument("--steps", type=int, default=150, help="total LoRA recovery steps per method")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--recovery-n", type=int, default=4096, help="training windows LoRA recovers on")
    p.add_argument("--test-n", type=int, default=4000)
    p.add_argument("--test-split", default="test", help="split the final accuracy is measured on")
    p.add_argument("--val-n", type=int, default=300, help="windows for the per-stage accuracy in the log")
    p.add_argument("--layer-criterion", default="block_influence")
    p.add_argument("--head-criterion", default="taylor")
    p.add_argument("--channel-criterion", default="taylor")
    p.add_argument("--head-scope", default="per_layer", choices=("per_layer", "global"))
    p.add_argument(
        "--cascade-weights", default="1,1,1", help="cascade recovery split: layer,head,channel stages"
    )
    p.add_argument("--cascade-order", default="layer,head,channel", help="cascade stage order")
    p.add_argument("--cascade-cuts", default="", help="cut cascade granularities in steps, e.g. head:2")
    p.add_argument("--recovery-loss", default="ce", choices=LOSSES, help="default recovery loss")
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature")
    p.add_argument("--kd-weight", type=float, default=0.5, help="share of the KD loss in `mix`")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (scoring batches, LoRA, data order)")
    p.add_argument("--split-grid", default=SPLIT_GRID, help="splits +split searches, layer:head:channel")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="reduced settings: 60 steps, 1000 test windows")
    p.add_argument("--out", type=Path, default=ROOT / "cascade_vs_oneshot.json")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="only combine result JSONs of earlier runs (e.g. one per model) into --out",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.test_n = min(a.steps, 60), min(a.test_n, 1000)
    return a


def _subset(data, n: int):  # noqa: ANN001, ANN202 - ClassificationData
    return data if n >= len(data.labels) else data.subset(n)


def _merge(files: list[Path], out: Path) -> int:
    merged: dict = {"settings": [], "models": {}}
    methods: list[str] = []
    targets: list[float] = []
    for f in files:
        part = json.loads(f.read_text())
        merged["settings"].append(part["settings"])
        merged["models"].update(part["models"])
        for entry in part["models"].values():
            for r in entry["runs"]:
                methods += [r["method"]] if r["method"] not in methods else []
                targets += [r["target"]] if r["target"] not in targets else []
    out.write_text(json.dumps(merged, indent=2) + "\n")
    _print_table([], sorted(targets), methods, merged)
    print(f"wrote {out}")
    return 0


def run(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.merge:
        return _merge(a.merge, a.out)
    torch.set_num_threads(a.threads)
    from harness.data import load_demo_split
    from harness.demo.models import ensure_demo_model
    from harness.evaluate import evaluate_classifier
    from harness.models import load_model
    from harness.prune.baselines import method_template
    from harness.prune.cascade import run_cascade
    from harness.prune.targets import CompressionPlan, schedule_for_compression

    models = [m for m in a.models.split(",") if m]
    paths = {m: (ensure_demo_model(m, progress=False) if m in MODELS else Path(m)) for m in models}
    missing = [m for m in models if not (paths[m] / "model.safetensors").is_file()]
    if missing:
        print(f"waiting on demo models {', '.join(missing)}: run `hilt demo train` first", file=sys.stderr)
        return 1
    targets = [float(t) for t in a.targets.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    calib = load_demo_split("calib")
    recovery = _subset(load_demo_split("train"), a.recovery_n)
    test = _subset(load_demo_split(a.test_split), a.test_n)
    val = load_demo_split("val", a.val_n)
    results: dict = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "models": {},
    }
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    cuts = {g: int(n) for g, n in (c.split(":") for c in a.cascade_cuts.split(",") if c.strip())}
    grid = [dict(zip(("layer", "head", "channel"), map(float, x.split(":")), strict=True))
            for x in a.split_grid.split(",") if x.strip()]  # fmt: skip
    for name in models:
        dense = load_model(paths[name]).model
        t0 = time.perf_counter()
        dense_eval = evaluate_classifier(dense, test)
        entry = {
            "dense": {
                "params": sum(p.numel() for p in dense.parameters()),
                "accuracy": dense_eval.accuracy,
                "val_accuracy": evaluate_classifier(dense, val).accuracy,
                "per_class_accuracy": dense_eval.per_class_accuracy,
                "eval_seconds": time.perf_counter() - t0,
            },
            "runs": [],
        }
        print(
            f"{name}: dense {100 * dense_eval.accuracy:.2f}% ({entry['dense']['params']:,} params)",
            flush=True,
        )
        for target in targets:
            for spec in methods:
                method, mods = _parse_method(spec)
                loss = next((m for m in mods if m in LOSSES), a.recovery_loss)
                template, split = method_template(
                    method,
                    a.steps,
                    rank=a.rank,
                    lr=a.lr,
                    batch_size=a.batch_size,
                    calib_batches=a.calib_batches,
                    layer_criterion=a.layer_criterion,
                    head_criterion=a.head_criterion,
                    channel_criterion=a.channel_criterion,
                    head_scope=a.head_scope,
                    cascade_weights=tuple(float(w) for w in a.cascade_weights.split(",")),
                    cascade_order=tuple(a.cascade_order.split(",")),
                    recovery_loss=loss,
                    temperature=a.temperature,
                    kd_weight=a.kd_weight,
                )
                plan_cuts = cuts if method == "cascade" else {}
                base = {"method": spec, "target": target}
                try:
                    search: list[dict] = []
                    if "split" in mods:
                        split, search = _search_split(dense, target, template, plan_cuts, grid, calib, val)
                    plan = CompressionPlan(split=split, cuts=plan_cuts)
                    schedule, achieved = schedule_for_compression(dense, target, template, plan=plan)
                except HiltError as exc:
                    entry["runs"].append({**base, "error": str(exc)})
                    print(f"  {target:>5}x {spec:<22} n/a: {exc}", flush=True)
                    continue
                for seed in seeds:
                    seeded = schedule.model_copy(
                        update={"calibration": schedule.calibration.model_copy(update={"seed": seed})}
                    )
                    t1 = time.perf_counter()
                    pruned, log = run_cascade(
                        copy.deepcopy(dense), seeded, calib, eval_data=val, recovery_data=recovery
                    )
                    wall = time.perf_counter() - t1
                    ev = evaluate_classifier(pruned, test)
                    entry["runs"].append(
                        {
                            **base,
                            "seed": seed,
                            "split": split,
                            "split_search": search,
                            "achieved": achieved,
                            "params": log.final_params,
                            "accuracy": ev.accuracy,
                            "val_accuracy": log.final_accuracy,
                            "per_class_accuracy": ev.per_class_accuracy,
                            "wall_seconds": wall,
                            "schedule": json.loads(seeded.model_dump_json()),
                            "stage_log": json.loads(log.model_dump_json()),
                        }
                    )
                    print(
                        f"  {target:>5}x {spec:<22} seed {seed} {achieved:6.2f}x {log.final_params:>9,} "
                        f"params test {100 * ev.accuracy:6.2f}% val {100 * (log.final_accuracy or 0):6.2f}%  "
                        f"{wall:6.1f}s",
                        flush=True,
                    )
                    results["models"][name] = entry
                    a.out.write_text(json.dumps(results, indent=2) + "\n")  # partial results survive a stop
        results["models"][name] = entry
    results["summary"] = _summary(results, targets, methods)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    _print_table([], targets, methods, results)
    print(f"wrote {a.out}")
    return 0


def _parse_method(spec: str) -> tuple[str, set[str]]:
    """`cascade+split+kd` -> ("cascade", {"split", "kd"}); unknown modifiers are an error."""
    from harness.errors import ScheduleError

    method, *mods = spec.split("+")
    bad = [m for m in mods if m not in (*LOSSES, "split")]
    if bad:
        raise ScheduleError(f"method {spec!r}: unknown modifier {bad[0]!r}; use split, ce, kd or mix")
    return method, set(mods)


def _search_split(dense, target, template, cuts, grid, calib, val):  # noqa: ANN001, ANN202
    """The split of `grid` whose pruned model (no recovery, seed 0) is most accurate on `val`."""
    from harness.errors import HiltError
    from harness.evaluate import evaluate_classifier
    from harness.prune.cascade import run_cascade
    from harness.prune.targets import CompressionPlan, schedule_for_compression

    grans = {t.granularity for st in template.stages for t in st.targets}
    tried: list[dict] = []
    for cand in grid:
        split = {g: w for g, w in cand.items() if g in grans}
        try:
            plan = CompressionPlan(split=split, cuts=cuts, recovery_steps=0)
            sched, achieved = schedule_for_compression(dense, target, template, plan=plan)
        except HiltError as exc:
            tried.append({"split": split, "error": str(exc)})
            continue
        pruned, _ = run_cascade(copy.deepcopy(dense), sched, calib)
        acc = evaluate_classifier(pruned, val).accuracy
        tried.append({"split": split, "achieved": achieved, "val_accuracy_no_recovery": acc})
    ok = [t for t in tried if "val_accuracy_no_recovery" in t]
    if not ok:
        raise HiltError(f"{target}x: no split of the grid is reachable ({tried[0].get('error')})")
    best = max(ok, key=lambda t: t["val_accuracy_no_recovery"])
    va = 100 * best["val_accuracy_no_recovery"]
    print(f"    split search {target}x: best {best['split']} (val {va:.1f}% "
          f"before recovery, of {len(ok)} reachable)", flush=True)  # fmt: skip
    return best["split"], tried


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _summary(results: dict, targets: list[float], methods: list[str]) -> dict:
    """Per model and target: mean/std over seeds per method, the best baseline (by test mean), and the
    cascade variant chosen by mean validation accuracy, with its test mean and gap."""
    out: dict = {}
    for name, entry in results["models"].items():
        per_t: dict = {}
        for t in targets:
            cells: dict = {}
            for m in methods:
                runs = [r for r in entry["runs"] if r["method"] == m and r["target"] == t and "accuracy" in r]
                if runs:
                    cells[m] = {
                        "test": _stats([r["accuracy"] for r in runs]),
                        "val": _stats([r["val_accuracy"] or 0.0 for r in runs]),
                        "achieved": runs[0]["achieved"],
                    }
            base = {m: c for m, c in cells.items() if not m.startswith("cascade")}
            casc = {m: c for m, c in cells.items() if m.startswith("cascade")}
            best_base = max(base, key=lambda m: base[m]["test"]["mean"]) if base else None
            chosen = max(casc, key=lambda m: casc[m]["val"]["mean"]) if casc else None
            gap = (
                cells[chosen]["test"]["mean"] - cells[best_base]["test"]["mean"]
                if best_base and chosen
                else None
            )
            per_t[str(t)] = {
                "methods": cells,
                "best_baseline": best_base,
                "cascade_chosen_on_val": chosen,
                "gap_pp": None if gap is None else 100 * gap,
                "cascade_below_dense_pp": None
                if chosen is None
                else 100 * (entry["dense"]["accuracy"] - cells[chosen]["test"]["mean"]),
            }
        out[name] = per_t
    return out


def _print_table(rows: list, targets: list[float], methods: list[str], results: dict) -> None:
    summary = results.get("summary") or _summary(results, targets, methods)
    print()
    for name, per_t in summary.items():
        dense = results["models"][name]["dense"]
        print(
            f"{name}: dense {100 * dense['accuracy']:.2f}% ({dense['params']:,} params); "
            "test accuracy, mean ± sd"
        )
        head = (
            f"{'target':>7} "
            + " ".join(f"{m:>22}" for m in methods)
            + "   best baseline   cascade (val-chosen)"
        )
        print(head)
        print("-" * len(head))
        for t in targets:
            row = per_t.get(str(t), {})
            cells = []
            for m in methods:
                c = row.get("methods", {}).get(m)
                if c is None:
                    cells.append(f"{'n/a':>22}")
                    continue
                st = c["test"]
                cells.append(
                    f"{100 * st['mean']:6.2f} ±{100 * st['std']:4.1f} "
                    f"(n={st['n']})@{c['achieved']:4.1f}x".rjust(22)
                )
            bb, ch = row.get("best_baseline"), row.get("cascade_chosen_on_val")
            gap = "-" if row.get("gap_pp") is None else f"{row['gap_pp']:+.2f} pp"
            print(f"{t:>6}x " + " ".join(cells) + f"   {bb or '-':>13}   {ch or '-'} {gap}")
    print("\nwall time per run (s):")
    for name, entry in results["models"].items():
        for r in entry["runs"]:
            if "wall_seconds" in r:
                print(
                    f"  {name} {r['target']}x {r['method']} seed {r.get('seed', 0)}: "
                    f"{r['wall_seconds']:.1f}s, {r['params']:,} params"
                )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(run())
