"""Decode speed against how full the KV cache is, and against its size: hilt's bundle of a causal LM
(hilt-runner --generate through the local agent), one weight format, one thread count.

    .venv/bin/python benchmarks/decode_vs_cache_fill.py --model smollm2-135m --weights int4

Rows: a 1,024-slot cache with 128 and with 900 prompt tokens in it (issue 27's goal: tokens/s at 900
>= 0.8x at 128), and a 256-slot cache with the same 128 (what the cache's size alone costs). The
1,024-slot bundle prefills a 960-token bucket (its prompt padded), so its TTFT is not comparable.
Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from smollm2_tvm_step import cpu_facts  # noqa: E402


def measure(model: str, weights: str, bucket: int, cache: int, prompt: int, new: int, runs: int) -> dict:
    """Compile (cached) and bench one (bucket, cache) bundle with `prompt` tokens in it."""
    from device_agents.bench import BenchOptions, GenerateOptions, bench_board
    from device_agents.inventory import find_farm
    from harness.compile import CompileOptions, compile_model

    board = find_farm(None).board("local")
    opts = CompileOptions(seq_len=bucket, cache_len=cache, kernel_threads=1, weights=weights)
    bundle = compile_model(model, board.profile, opts).bundle
    bench = BenchOptions(
        warmup=1, min_iters=runs, min_seconds=0.0, threads=1, power=False, idle_seconds=0.0,
        timeout_s=7200, generate=GenerateOptions(new_tokens=new, prompt_tokens=prompt),
    )  # fmt: skip
    g = bench_board(board, bundle.directory, bench, wait_s=600).generation
    assert g is not None and g.decode is not None
    return {
        "cache_slots": cache,
        "bucket": bucket,
        "prompt_tokens": prompt,
        "filled_at_first_step": prompt,
        "filled_at_last_step": prompt + new - 1,
        "decode_tokens_per_s": round(g.decode_tokens_per_s, 2),
        "decode_min_ms": round(g.decode.min_ns / 1e6, 3),
        "decode_median_ms": round(g.decode.median_ns / 1e6, 3),
        "decode_p90_ms": round(g.decode.p90_ns / 1e6, 3),
        "ttft_ms": round(g.ttft_median_ns / 1e6, 1),
        "runs": len(g.ttft_ns),
        "bundle": bundle.sha256[:16],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--weights", default="int4")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "decode_vs_cache_fill.json")
    args = ap.parse_args()
    cases = [(960, 1024, 128), (960, 1024, 900), (128, 256, 128)]
    rows = []
    for bucket, cache, prompt in cases:
        print(
            f"[{time.strftime('%H:%M:%S')}] cache {cache} slots, {prompt} filled ({args.weights})", flush=True
        )
        rows.append(measure(args.model, args.weights, bucket, cache, prompt, args.new, args.runs))
        result = {
            "model": args.model, "weights": args.weights, "threads": 1, "new": args.new, "rows": rows,
            **cpu_facts(), "load": os.getloadavg(),
        }  # fmt: skip
        speed = [r["decode_tokens_per_s"] for r in rows]
        if len(rows) >= 2:
            result["fill_ratio_900_vs_128"] = round(speed[1] / speed[0], 3)
        if len(rows) >= 3:
            result["size_ratio_1024_vs_256"] = round(speed[0] / speed[2], 3)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'slots':>6} {'filled':>7} {'tok/s':>8} {'median ms':>10} {'p90 ms':>8}")
    for r in rows:
        print(
            f"{r['cache_slots']:>6} {r['prompt_tokens']:>7} {r['decode_tokens_per_s']:>8.2f} "
            f"{r['decode_median_ms']:>10.2f} {r['decode_p90_ms']:>8.2f}"
        )
    print(
        f"900 vs 128 filled: {result.get('fill_ratio_900_vs_128')}x (goal >= 0.8); "
        f"1024 vs 256 slots at 128 filled: {result.get('size_ratio_1024_vs_256')}x"
    )
    print(f"written to {args.out}; CPU {cpu_facts()['cpu']}, load {os.getloadavg()}")


if __name__ == "__main__":
    main()
