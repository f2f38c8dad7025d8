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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
    p.add_argument(
        "--calib-n", type=int, default=None, help="calibration windows (default: all; causal LMs: 16)"
    )
    p.add_argument("--seq-len", type=int, default=128, help="causal LMs: tokens per text window")
    p.add_argument("--text", type=Path, default=None, help="causal LMs: a UTF-8 corpus (default: built-in)")
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
        for name, entry in part["models"].items():  # one file per target of a model: pool its runs
            if name in merged["models"]:
                merged["models"][name]["runs"] += entry["runs"]
            else:
                merged["models"][name] = entry
        for entry in part["models"].values():
            for r in entry["runs"]:
                methods += [r["method"]] if r["method"] not in methods else []
                targets += [r["target"]] if r["target"] not in targets else []
    merged["summary"] = _summary(merged, sorted(targets), methods)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    _print_table([], sorted(targets), methods, merged)
    print(f"wrote {out}")
    return 0


@dataclass
class _Task:
    """What one model is pruned, recovered and judged on: its data splits and its metric."""

    metric: str  # "accuracy" (higher is better) or "perplexity" (lower is better)
    calib: Any
    recovery: Any
    val: Any
    test: Any
    measure: Callable[[Any, Any], float]
    describe: dict

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    def fmt(self, v: float | None) -> str:
        if v is None:
            return "n/a"
        return f"{100 * v:6.2f}%" if self.higher_is_better else f"ppl {v:8.2f}"


def _classifier_task(a: argparse.Namespace) -> _Task:
    from harness.data import load_demo_split
    from harness.evaluate import evaluate_classifier

    calib = load_demo_split("calib")
    return _Task(
        metric="accuracy",
        calib=calib if a.calib_n is None else _subset(calib, a.calib_n),
        recovery=_subset(load_demo_split("train"), a.recovery_n),
        val=load_demo_split("val", a.val_n),
        test=_subset(load_demo_split(a.test_split), a.test_n),
        measure=lambda m, d: evaluate_classifier(m, d).accuracy,
        describe={"data": "demo bearing task", "test_split": a.test_split},
    )


def _lm_task(model_dir: Path, a: argparse.Namespace) -> _Task:
    """Text windows in the model's tokens: calibration and recovery from their own splits; the
    evaluation split's first `--val-n` windows choose (val), the next `--test-n` report (test)."""
    from harness.data.text import model_text_split
    from harness.evaluate import evaluate_perplexity

    def split(which: str, n: int | None):  # noqa: ANN202 - TextWindows
        return model_text_split(model_dir, which, a.text, a.seq_len, n)  # type: ignore[arg-type]

    ev = split("eval", a.val_n + a.test_n)
    if len(ev) <= a.val_n:
        raise SystemExit(f"the evaluation split has {len(ev)} windows, not more than --val-n {a.val_n}")
    val = replace(ev, input_ids=ev.input_ids[: a.val_n], labels=ev.labels[: a.val_n])
    test = replace(ev, input_ids=ev.input_ids[a.val_n :], labels=ev.labels[a.val_n :])
    return _Task(
        metric="perplexity",
        calib=split("calib", a.calib_n or 16),
        recovery=split("recovery", a.recovery_n),
        val=val,
        test=test,
        measure=lambda m, d: evaluate_perplexity(m, d.input_ids, batch_size=4).perplexity,
        describe={
            "corpus": ev.corpus,
            "corpus_sha256": ev.corpus_sha256,
            "seq_len": a.seq_len,
            "val_windows": len(val),
            "test_windows": len(test),
        },
    )


def run(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.merge:
        return _merge(a.merge, a.out)
    torch.set_num_threads(a.threads)
    from harness.demo.models import ensure_demo_model
    from harness.models import load_model
    from harness.models.loading import resolve_model_dir
    from harness.prune.baselines import method_template
    from harness.prune.cascade import run_cascade
    from harness.prune.targets import CompressionPlan, schedule_for_compression

    models = [m for m in a.models.split(",") if m]
    paths = {
        m: (ensure_demo_model(m, progress=False) if m in MODELS else resolve_model_dir(m)) for m in models
    }
    missing = [m for m in models if not (paths[m] / "model.safetensors").is_file()]
    if missing:
        print(f"waiting on demo models {', '.join(missing)}: run `hilt demo train` first", file=sys.stderr)
        return 1
    targets = [float(t) for t in a.targets.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    results: dict = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "models": {},
    }
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    cuts = {g: int(n) for g, n in (c.split(":") for c in a.cascade_cuts.split(",") if c.strip())}
    grid = [dict(zip(("layer", "head", "channel"), map(float, x.split(":")), strict=True))
            for x in a.split_grid.split(",") if x.strip()]  # fmt: skip
    for name in models:
        loaded = load_model(paths[name])
        dense = loaded.model
        task = _lm_task(paths[name], a) if loaded.task == "causal-lm" else _classifier_task(a)
        calib, recovery, val, test = task.calib, task.recovery, task.val, task.test
        t0 = time.perf_counter()
        dense_test = task.measure(dense, test)
        entry = {
            "metric": task.metric,
            "data": task.describe,
            "dense": {
                "params": sum(p.numel() for p in dense.parameters()),
                task.metric: dense_test,
                f"val_{task.metric}": task.measure(dense, val),
                "eval_seconds": time.perf_counter() - t0,
            },
            "runs": [],
        }
        print(f"{name}: dense {task.fmt(dense_test)} ({entry['dense']['params']:,} params)", flush=True)
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
                        split, search = _search_split(dense, target, template, plan_cuts, grid, task)
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
                    value = task.measure(pruned, test)
                    val_value = log.final_perplexity if task.metric == "perplexity" else log.final_accuracy
                    entry["runs"].append(
                        {
                            **base,
                            "seed": seed,
                            "split": split,
                            "split_search": search,
                            "achieved": achieved,
                            "params": log.final_params,
                            task.metric: value,
                            f"val_{task.metric}": val_value,
                            "wall_seconds": wall,
                            "schedule": json.loads(seeded.model_dump_json()),
                            "stage_log": json.loads(log.model_dump_json()),
                        }
                    )
                    print(
                        f"  {target:>5}x {spec:<22} seed {seed} {achieved:6.2f}x {log.final_params:>9,} "
                        f"params test {task.fmt(value)} val {task.fmt(val_value)}  "
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


def _search_split(dense, target, template, cuts, grid, task):  # noqa: ANN001, ANN202
    """The split of `grid` whose pruned model (no recovery, seed 0) scores best on the validation data."""
    from harness.errors import HiltError
    from harness.prune.cascade import run_cascade
    from harness.prune.targets import CompressionPlan, schedule_for_compression

    grans = {t.granularity for st in template.stages for t in st.targets}
    key = f"val_{task.metric}_no_recovery"
    tried: list[dict] = []
    for cand in grid:
        split = {g: w for g, w in cand.items() if g in grans}
        try:
            plan = CompressionPlan(split=split, cuts=cuts, recovery_steps=0)
            sched, achieved = schedule_for_compression(dense, target, template, plan=plan)
        except HiltError as exc:
            tried.append({"split": split, "error": str(exc)})
            continue
        pruned, _ = run_cascade(copy.deepcopy(dense), sched, task.calib)
        tried.append({"split": split, "achieved": achieved, key: task.measure(pruned, task.val)})
    ok = [t for t in tried if key in t]
    if not ok:
        raise HiltError(f"{target}x: no split of the grid is reachable ({tried[0].get('error')})")
    pick = max if task.higher_is_better else min
    best = pick(ok, key=lambda t: t[key])
    print(f"    split search {target}x: best {best['split']} (val {task.fmt(best[key])} "
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
    cascade variant chosen by its mean validation score, with its test mean and gap. Accuracy gaps are
    in pp (cascade minus baseline); perplexity gaps are ratios (cascade over baseline, < 1 is better)."""
    out: dict = {}
    for name, entry in results["models"].items():
        metric = entry.get("metric", "accuracy")
        higher = metric == "accuracy"
        pick = max if higher else min
        worst = 0.0 if higher else float("inf")  # a run that logged no validation score
        per_t: dict = {}
        for t in targets:
            cells: dict = {}
            for m in methods:
                runs = [r for r in entry["runs"] if r["method"] == m and r["target"] == t and metric in r]
                if runs:
                    cells[m] = {
                        "test": _stats([r[metric] for r in runs]),
                        "val": _stats([r[f"val_{metric}"] or worst for r in runs]),
                        "achieved": runs[0]["achieved"],
                    }
            base = {m: c for m, c in cells.items() if not m.startswith("cascade")}
            casc = {m: c for m, c in cells.items() if m.startswith("cascade")}
            best_base = pick(base, key=lambda m: base[m]["test"]["mean"]) if base else None
            chosen = pick(casc, key=lambda m: casc[m]["val"]["mean"]) if casc else None
            row: dict = {"methods": cells, "best_baseline": best_base, "cascade_chosen_on_val": chosen}
            both = best_base is not None and chosen is not None
            c_mean = cells[chosen]["test"]["mean"] if chosen else None
            dense = entry["dense"][metric]
            if higher:
                row["gap_pp"] = 100 * (c_mean - cells[best_base]["test"]["mean"]) if both else None
                row["cascade_below_dense_pp"] = None if c_mean is None else 100 * (dense - c_mean)
            else:
                row["gap_ratio"] = c_mean / cells[best_base]["test"]["mean"] if both else None
                row["cascade_over_dense"] = None if c_mean is None else c_mean / dense
            per_t[str(t)] = row
        out[name] = per_t
    return out


def _cell(metric: str, c: dict) -> str:
    st = c["test"]
    if metric == "accuracy":
        v = f"{100 * st['mean']:6.2f} ±{100 * st['std']:4.1f}"
    else:
        v = f"{st['mean']:7.1f} ±{st['std']:5.1f}"
    return f"{v} (n={st['n']})@{c['achieved']:4.1f}x".rjust(24)


def _print_table(rows: list, targets: list[float], methods: list[str], results: dict) -> None:
    summary = results.get("summary") or _summary(results, targets, methods)
    print()
    for name, per_t in summary.items():
        entry = results["models"][name]
        metric, dense = entry.get("metric", "accuracy"), entry["dense"]
        shown = f"{100 * dense[metric]:.2f}%" if metric == "accuracy" else f"perplexity {dense[metric]:.2f}"
        print(f"{name}: dense {shown} ({dense['params']:,} params); test {metric}, mean ± sd")
        head = (
            f"{'target':>7} "
            + " ".join(f"{m:>24}" for m in methods)
            + "   best baseline   cascade (val-chosen)"
        )
        print(head)
        print("-" * len(head))
        for t in targets:
            row = per_t.get(str(t), {})
            cells = [
                _cell(metric, row["methods"][m]) if m in row.get("methods", {}) else f"{'n/a':>24}"
                for m in methods
            ]
            bb, ch = row.get("best_baseline"), row.get("cascade_chosen_on_val")
            if metric == "accuracy":
                gap = "-" if row.get("gap_pp") is None else f"{row['gap_pp']:+.2f} pp"
            else:
                gap = "-" if row.get("gap_ratio") is None else f"{row['gap_ratio']:.3f}x the baseline"
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
