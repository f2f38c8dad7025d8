"""Cascade vs one-shot, layer-only and width-only pruning at equal total-parameter compression.

For each demo model and each target compression (2x, 4x, 8x, 13.8x by default), every method is a
schedule for the same runner with the same total LoRA recovery budget; the compression helper turns
the target into per-stage ratios. Scoring uses the demo calibration split, recovery trains on a
prefix of the training split, accuracy is measured on the held-out test split.

    .venv/bin/python benchmarks/cascade_vs_oneshot.py            # full settings
    .venv/bin/python benchmarks/cascade_vs_oneshot.py --quick    # reduced: fewer steps, smaller test set

Prints one table and writes JSON next to this file (or --out). Does not train demo models: if they are
missing it says so (run `hilt demo train`).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import torch

from harness.errors import HiltError

ROOT = Path(__file__).resolve().parent
MODELS = ("demo-gpt2", "demo-llama")
TARGETS = (2.0, 4.0, 8.0, 13.8)


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
    from harness.demo.models import demo_model_dir
    from harness.evaluate import evaluate_classifier
    from harness.models import load_model
    from harness.prune.baselines import method_template
    from harness.prune.cascade import run_cascade
    from harness.prune.targets import schedule_for_compression

    models = [m for m in a.models.split(",") if m]
    paths = {m: (demo_model_dir(m) if m in MODELS else Path(m)) for m in models}
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
    rows = []
    for name in models:
        dense = load_model(paths[name]).model
        t0 = time.perf_counter()
        dense_eval = evaluate_classifier(dense, test)
        entry = {
            "dense": {
                "params": sum(p.numel() for p in dense.parameters()),
                "accuracy": dense_eval.accuracy,
                "per_class_accuracy": dense_eval.per_class_accuracy,
                "eval_seconds": time.perf_counter() - t0,
            },
            "runs": [],
        }
        rows.append((name, "dense", 1.0, 1.0, entry["dense"]["params"], dense_eval.accuracy, 0.0))
        print(
            f"{name}: dense {100 * dense_eval.accuracy:.2f}% ({entry['dense']['params']:,} params)",
            flush=True,
        )
        for target in targets:
            for method in methods:
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
                )
                run_entry: dict = {"method": method, "target": target}
                try:
                    schedule, achieved = schedule_for_compression(dense, target, template, split)
                except HiltError as exc:
                    run_entry["error"] = str(exc)
                    entry["runs"].append(run_entry)
                    rows.append((name, method, target, None, None, None, None))
                    print(f"  {target:>5}x {method:<13} n/a: {exc}", flush=True)
                    continue
                t1 = time.perf_counter()
                model = copy.deepcopy(dense)
                pruned, log = run_cascade(model, schedule, calib, eval_data=val, recovery_data=recovery)
                wall = time.perf_counter() - t1
                ev = evaluate_classifier(pruned, test)
                run_entry.update(
                    achieved=achieved,
                    params=log.final_params,
                    accuracy=ev.accuracy,
                    per_class_accuracy=ev.per_class_accuracy,
                    wall_seconds=wall,
                    schedule=json.loads(schedule.model_dump_json()),
                    stage_log=json.loads(log.model_dump_json()),
                )
                entry["runs"].append(run_entry)
                rows.append((name, method, target, achieved, log.final_params, ev.accuracy, wall))
                print(
                    f"  {target:>5}x {method:<13} {achieved:6.2f}x {log.final_params:>9,} params "
                    f"{100 * ev.accuracy:6.2f}%  {wall:6.1f}s",
                    flush=True,
                )
                results["models"][name] = entry
                a.out.write_text(json.dumps(results, indent=2) + "\n")  # partial results survive a stop
        results["models"][name] = entry
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(rows, targets, methods, results)
    print(f"wrote {a.out}")
    return 0


def _print_table(rows: list, targets: list[float], methods: list[str], results: dict) -> None:
    print()
    head = (
        f"{'model':<11} {'target':>6} "
        + " ".join(f"{m:>13}" for m in methods)
        + "   best baseline  cascade-best"
    )
    print(head)
    print("-" * len(head))
    for name, entry in results["models"].items():
        dense = entry["dense"]
        print(f"{name:<11} {'dense':>6}  {100 * dense['accuracy']:.2f}%  ({dense['params']:,} params)")
        for t in targets:
            acc = {}
            cells = []
            for m in methods:
                r = next((r for r in entry["runs"] if r["method"] == m and r["target"] == t), None)
                if r is None or "accuracy" not in r:
                    cells.append(f"{'-' if r is None else 'n/a':>13}")  # n/a: target out of reach
                    continue
                acc[m] = r["accuracy"]
                cells.append(f"{100 * r['accuracy']:6.2f}%@{r['achieved']:4.1f}x")
            base = {m: v for m, v in acc.items() if m != "cascade"}
            best = max(base.values()) if base else None
            gap = f"{100 * (acc['cascade'] - best):+.2f} pp" if best is not None and "cascade" in acc else "-"
            best_s = f"{100 * best:.2f}%" if best is not None else "-"
            print(f"{name:<11} {t:>5}x " + " ".join(cells) + f"   {best_s:>13}  {gap:>11}")
    print("\nwall time per run (s):")
    for name, entry in results["models"].items():
        for r in entry["runs"]:
            if "wall_seconds" in r:
                print(
                    f"  {name} {r['target']}x {r['method']}: {r['wall_seconds']:.1f}s, {r['params']:,} params"
                )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(run())
