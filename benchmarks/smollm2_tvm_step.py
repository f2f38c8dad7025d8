"""SmolLM2-135M (or any imported / pruned causal LM) through hilt's causal-LM step with TVM, untuned.

Builds the prefill (one bucket) and decode steps for this x86 host, runs a real prompt from the
built-in corpus's evaluation split plus greedy decode, and compares every step's logits with
PyTorch's own (HF KV cache). Prints build time, time to first token, per-token decode latency and
tokens/s, and the largest logits difference; writes smollm2_tvm_step.json next to this file.

    .venv/bin/python benchmarks/smollm2_tvm_step.py --model smollm2-135m --prompt 128 --new 16 --threads 1

Untuned: the matmuls are TVM's default loops (no MetaSchedule records, no DLight), so this measures
correctness and the starting point of the performance work, not a deployable speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def cpu_facts() -> dict[str, object]:
    """CPU model name and its vector flags (machines differ from day to day)."""
    name, flags = platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == platform.machine():
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    vector = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx")) or f == "f16c")
    return {"cpu": name, "vector_flags": vector, "cores": os.cpu_count()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens (= the prefill bucket)")
    ap.add_argument("--new", type=int, default=16, help="greedy new tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "smollm2_tvm_step.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))

    import tvm
    from tvm import relax

    from harness.compile.causal import greedy_reference
    from harness.compile.steps import build_causal
    from harness.data.text import model_text_split
    from harness.models import load_model

    loaded = load_model(args.model)
    model = loaded.model
    prompt = model_text_split(loaded.source, "eval", None, args.prompt, 1).input_ids.numpy()
    with torch.no_grad():
        t0 = time.perf_counter()
        model(input_ids=torch.from_numpy(prompt), use_cache=True)
        torch_ttft = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_ids, ref_logits = greedy_reference(model, prompt, args.new)
    torch_s = time.perf_counter() - t0
    target = tvm.target.Target({"kind": "llvm", "num-cores": args.threads})
    max_len = args.prompt + args.new
    t0 = time.perf_counter()
    build = build_causal(model, target, bucket=args.prompt, max_len=max_len)
    build_s = time.perf_counter() - t0

    dev = tvm.cpu()
    vm = relax.VirtualMachine(build.executable, dev)
    prefill, decode = vm["prefill"], vm["decode"]

    def arr(x: np.ndarray) -> object:
        return tvm.runtime.tensor(x, dev)

    caches = [arr(c.numpy()) for c in build.layout.empty()]
    t0 = time.perf_counter()
    out = prefill(arr(prompt.astype(np.int64)), arr(np.array([0], dtype=np.int64)), *caches)
    logits = [out[0].numpy()[0, -1]]
    ttft = time.perf_counter() - t0
    caches, ids, pos, per_token = list(out[1:]), [], args.prompt, []
    for i in range(args.new):
        ids.append(int(np.argmax(logits[-1])))
        if i == args.new - 1:
            break
        t0 = time.perf_counter()
        out = decode(
            arr(np.array([[ids[-1]]], dtype=np.int64)), arr(np.array([pos], dtype=np.int64)), *caches
        )
        caches, pos = list(out[1:]), pos + 1
        logits.append(out[0].numpy()[0, -1])
        per_token.append(time.perf_counter() - t0)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits, strict=True))
    result = {
        "model": args.model,
        "params": sum(p.numel() for p in model.parameters()),
        "prompt_tokens": args.prompt,
        "new_tokens": args.new,
        "threads": args.threads,
        **cpu_facts(),
        "tvm_untuned": True,
        "build_seconds": round(build_s, 1),
        "time_to_first_token_s": round(ttft, 3),
        "decode_ms_median": round(1000 * float(np.median(per_token)), 1),
        "decode_tokens_per_s": round(1 / float(np.median(per_token)), 2),
        "torch_eager_time_to_first_token_s": round(torch_ttft, 3),
        "torch_eager_decode_tokens_per_s": round((args.new - 1) / max(1e-9, torch_s - torch_ttft), 2),
        "same_ids_as_torch": ids == ref_ids,
        "max_abs_logits_diff": diff,
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
