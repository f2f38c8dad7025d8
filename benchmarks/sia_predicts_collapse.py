"""Does the SIA verdict predict where accuracy collapses? Both demo models, one-shot criterion pruning.

For each demo model: the SIA table per granularity (metrics with 95% bootstrap intervals, verdict
per removed fraction, predictable horizon), then a criterion-driven one-shot prune (all granularities
scored once on the dense model, removed together, no recovery) at 2x / 4x / 8x / 13.8x total-parameter
compression, with its test accuracy. A (model, ratio) pair is *predicted safe* when every
granularity the schedule removes stays within its SIA horizon; it *collapsed* when accuracy fell
more than 20 pp below dense. The agreement count says how often the two match.

    .venv/bin/python benchmarks/sia_predicts_collapse.py [--models demo-gpt2,demo-llama] [--test-n 2000]

Prints the tables and writes JSON next to this file. Needs the demo models (`hilt demo train`).
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


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="demo-gpt2,demo-llama")
    p.add_argument("--targets", default=",".join(str(t) for t in TARGETS))
    p.add_argument("--test-n", type=int, default=2000)
    p.add_argument("--ratios", default="0.25,0.5,0.75,0.9", help="removed fractions SIA tests")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "sia_predicts_collapse.json")
    return p.parse_args(argv)


def _removed_by_granularity(schedule) -> dict[str, float]:  # noqa: ANN001
    kept: dict[str, float] = {}
    for stage in schedule.stages:
        for t in stage.targets:
            kept[t.granularity] = kept.get(t.granularity, 1.0) * t.ratio
    return {g: 1.0 - k for g, k in kept.items()}


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    torch.set_num_threads(args.threads)
    from harness.data import load_demo_split
    from harness.demo.models import demo_model_dir
    from harness.evaluate import evaluate_classifier
    from harness.models import load_model
    from harness.prune.baselines import method_template
    from harness.prune.cascade import run_cascade
    from harness.prune.targets import schedule_for_compression
    from harness.sia import check_sia
    from harness.sia.empirical import EmpiricalConfig

    calib = load_demo_split("calib")
    test = load_demo_split("test", args.test_n)
    ratios = tuple(float(r) for r in args.ratios.split(","))
    out: dict = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "models": {}}
    agree = total = 0
    for name in args.models.split(","):
        if not demo_model_dir(name).is_dir():
            print(f"{name}: not trained; run `hilt demo train --model {name}` first", file=sys.stderr)
            return 1
        dense = load_model(name).model
        dense_acc = evaluate_classifier(dense, test).accuracy
        t0 = time.perf_counter()
        report = check_sia(dense, calib.input_ids, calib.labels, config=EmpiricalConfig(ratios=ratios))
        sia_s = time.perf_counter() - t0
        sv = report.structural
        print(f"\n== {name}: dense test accuracy {dense_acc:.2%}; attention {sv.attention}, FFN {sv.ffn}")
        print(
            f"SIA check: {sia_s:.0f} s, {sum(r.forward_passes for r in report.results)} batch forward passes"
        )
        print(f"{'granularity':<12}{'fidelity ρ':<24}{'removed':<9}{'additivity ρ':<24}{'rel. error':<24}"
              f"{'stability τ':<24}verdict")  # fmt: skip
        horizons = {}
        for r in report.results:
            horizons[r.granularity] = r.horizon_removed
            for i, x in enumerate(r.ratios):
                print(f"{(r.granularity + ' (' + r.criterion + ')') if i == 0 else '':<12}"
                      f"{str(r.fidelity) if i == 0 else '':<24}{x.removed_fraction:<9.0%}"
                      f"{str(x.additivity_spearman):<24}{str(x.additivity_error):<24}{str(x.stability):<24}"
                      f"{x.verdict}")  # fmt: skip
            print(f"{'':<12}predictable horizon: {r.horizon_removed:.0%} removed")
        rows = []
        print(f"\n{'target':<8}{'achieved':<10}{'accuracy':<10}{'drop pp':<9}"
              f"{'removed (layer/head/channel)':<32}{'SIA says':<12}{'collapsed':<10}agree")  # fmt: skip
        for target in (float(t) for t in args.targets.split(",")):
            template, split = method_template("one-shot", 0)
            try:
                schedule, achieved = schedule_for_compression(dense, target, template, split)
            except Exception as exc:  # noqa: BLE001 - report unreachable targets and go on
                print(f"{target:<8}unreachable: {exc}")
                continue
            model, _ = run_cascade(copy.deepcopy(dense), schedule, calib)
            acc = evaluate_classifier(model, test).accuracy
            removed = _removed_by_granularity(schedule)
            safe = all(removed[g] <= horizons.get(g, 0.0) + 1e-9 for g in removed if removed[g] > 0)
            collapsed = (dense_acc - acc) * 100 > COLLAPSE_PP
            ok = safe != collapsed
            agree += ok
            total += 1
            rm = "/".join(f"{removed.get(g, 0):.0%}" for g in ("layer", "head", "channel"))
            print(f"{target:<8}{achieved:<10.2f}{acc:<10.2%}{(dense_acc - acc) * 100:<9.1f}{rm:<32}"
                  f"{'safe' if safe else 'unsafe':<12}{str(collapsed):<10}{ok}")  # fmt: skip
            rows.append({"target": target, "achieved": achieved, "accuracy": acc, "removed": removed,
                         "sia_safe": safe, "collapsed": collapsed, "agree": ok})  # fmt: skip
        out["models"][name] = {"dense_accuracy": dense_acc, "sia": report.to_dict(), "sia_seconds": sia_s,
                               "one_shot": rows}  # fmt: skip
    print(
        f"\nagreement: {agree}/{total} (model, ratio) pairs (collapse = > {COLLAPSE_PP:.0f} pp below dense)"
    )
    out["agreement"] = {"agree": agree, "total": total}
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
