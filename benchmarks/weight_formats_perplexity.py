"""Perplexity of a causal LM in each weight format (harness.quant's PyTorch reference: the rounding the
compiled bundle computes with), on the built-in corpus's evaluation split. Prints a table, writes JSON.

    .venv/bin/python benchmarks/weight_formats_perplexity.py --model smollm2-135m --windows 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from smollm2_tvm_step import cpu_facts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--formats", nargs="+", default=["fp32", "int8", "int4"])
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--windows", type=int, default=0, help="evaluation windows (0: the whole split)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or HERE / f"weight_formats_perplexity_{args.model}.json"
    rows = []
    hilt = str(Path(sys.executable).with_name("hilt"))
    for fmt in args.formats:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ppl.json"
            cmd = [hilt, "models", "perplexity", "--model", args.model, "--weights", fmt]
            cmd += ["--group-size", str(args.group_size), "--windows", str(args.windows)]
            cmd += ["--threads", str(args.threads), "--json", str(path)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            rows.append(json.loads(path.read_text()))
        print(f"{fmt}: perplexity {rows[-1]['perplexity']:.3f}", flush=True)
    base = rows[0]["perplexity"] if rows and rows[0]["weights"] == "fp32" else None
    print(f"{'format':<8} {'weights MB':>10} {'perplexity':>11} {'vs fp32':>8}")
    for r in rows:
        ratio = f"{r['perplexity'] / base:.4f}" if base else "-"
        r["vs_fp32"] = None if base is None else round(r["perplexity"] / base, 4)
        print(f"{r['weights']:<8} {r['weight_mb']:>10.1f} {r['perplexity']:>11.3f} {ratio:>8}")
    out.write_text(json.dumps({"model": args.model, "rows": rows, **cpu_facts()}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
