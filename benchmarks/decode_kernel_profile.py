"""Where a causal bundle's decode step spends its time, per kernel: the bundle's `decode` in this
process (VM instrument hook around every kernel call), one thread, after a prefill of the example
prompt. Prints the top kernels and writes JSON.

    .venv/bin/python benchmarks/decode_kernel_profile.py --model smollm2-135m --weights int4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TVM_NUM_THREADS", "1")  # one thread, as the runner's --threads 1
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from smollm2_tvm_step import cpu_facts  # noqa: E402


def profile(bundle_dir: Path, steps: int) -> tuple[list[dict[str, Any]], float]:
    """Per-kernel ms per decode step (sorted), and the whole step's median ms without the hook."""
    import tvm

    from harness.compile.bundle import load_bundle
    from harness.compile.causal import CacheLayout
    from harness.compile.external_weights import BundleVM

    bundle = load_bundle(bundle_dir)
    causal = bundle.metadata.causal
    assert causal is not None
    vm = BundleVM(bundle_dir)
    caches = [tvm.runtime.tensor(c.numpy()) for c in CacheLayout(causal.max_len, tuple(causal.cache)).empty()]
    prompt = bundle.input_array()[:, : causal.bucket]
    ids = np.zeros((1, causal.bucket), dtype=np.int64)
    ids[0, : prompt.shape[1]] = prompt[0]
    vm["prefill"](tvm.runtime.tensor(ids), tvm.runtime.tensor(np.array([0])), *caches)
    pos = prompt.shape[1]

    def step() -> None:
        vm["decode"](tvm.runtime.tensor(np.array([[1]])), tvm.runtime.tensor(np.array([pos])), *caches)

    whole = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        whole.append(time.perf_counter() - t0)
    totals: dict[str, float] = {}
    started = [0]

    def instrument(_func: Any, symbol: str, before: bool, _ret: Any, *_args: Any) -> int:
        if symbol.startswith("vm.builtin"):
            return 0
        if before:
            started[0] = time.perf_counter_ns()
        else:
            totals[symbol] = totals.get(symbol, 0.0) + time.perf_counter_ns() - started[0]
        return 0

    vm.vm.set_instrument(tvm.runtime.convert(instrument))
    for _ in range(steps):
        step()
    rows = [
        {"kernel": k, "ms_per_step": round(v / steps / 1e6, 4)}
        for k, v in sorted(totals.items(), key=lambda kv: -kv[1])
    ]
    return rows, 1e3 * float(np.median(whole))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--weights", default="int4")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--cache-len", type=int, default=192)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from harness.compile import CompileOptions, compile_model

    opts = CompileOptions(seq_len=args.prompt, cache_len=args.cache_len, weights=args.weights)
    bundle = compile_model(args.model, "local", opts).bundle
    rows, step_ms = profile(bundle.directory, args.steps)
    total = sum(r["ms_per_step"] for r in rows)
    print(f"decode step {step_ms:.2f} ms (median, no hook); kernels sum to {total:.2f} ms")
    for r in rows[: args.top]:
        print(f"  {r['ms_per_step']:8.3f} ms  {100 * r['ms_per_step'] / total:5.1f}%  {r['kernel']}")
    out = args.out or HERE / f"decode_kernel_profile_{args.weights}.json"
    result = {"model": args.model, "weights": args.weights, "step_ms": round(step_ms, 3), "kernels": rows}
    out.write_text(json.dumps({**result, **cpu_facts(), "load": os.getloadavg()}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
