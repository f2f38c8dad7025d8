"""TVM (untuned and MetaSchedule-tuned) against torch eager and ONNX Runtime on the demo models.

Same CPU, same thread count, batch 1, one run: dense and a 4x-pruned variant of each demo model.
Prints median / p90 latency, ratios to torch and ORT, achieved GFLOP/s and its share of the peak
measured here with a large matmul. Writes compile_vs_peers.json next to this file.

    .venv/bin/python benchmarks/compile_vs_peers.py --trials 256 --threads 1

Needs the `bench` extra (onnx, onnxruntime). Untrained demo-sized weights are used when the demo
models are not trained yet (latency does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from harness.compile import CompileOptions, compile_model
from harness.compile.export import _LogitsOnly, example_input
from harness.runtime import build_runtime, runner_command
from harness.runtime.toolchains import host_arch

log = logging.getLogger("compile_vs_peers")
HERE = Path(__file__).resolve().parent


def _model_dir(name: str, work: Path) -> Path:
    """The trained demo model if present, else the same architecture with seeded random weights."""
    from harness.demo.configs import MODEL_CONFIGS
    from harness.demo.models import demo_model_dir

    d = demo_model_dir(name)
    if (d / "config.json").is_file() and (d / "model.safetensors").is_file():
        return d
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(MODEL_CONFIGS[name]())
    out = work / f"{name}-random"
    model.save_pretrained(out)
    log.warning("%s is not trained; benchmarking random weights of the same shape", name)
    return out


def _prune_4x(src: Path, family: str, out: Path) -> Path:
    """Half the layers, half the heads (KV groups for GQA), half the FFN channels: ~4x fewer block params."""
    from harness.models import get_adapter, load_model
    from harness.models.manifest import save_pruned

    model = load_model(src).model.eval()
    adapter = get_adapter(model)
    n = adapter.num_layers()
    adapter.remove_layers(list(range(0, n, 2)))
    for layer in range(adapter.num_layers()):
        groups = adapter.attention_shape(layer).num_kv_groups
        adapter.remove_heads(layer, list(range(max(1, groups // 2))))
        adapter.remove_channels(layer, list(range(adapter.num_channels(layer) // 2)))
    save_pruned(model, out, "sequence-classification")
    return out


def _stats(samples_ns: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)), "n": int(arr.size)}


def _time(fn: Callable[[], object], warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        out.append(float(time.perf_counter_ns() - t0))
    return out


def _flops(model: torch.nn.Module, ids: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _LogitsOnly(model)(ids)
    return int(counter.get_total_flops())


def _peak_flops(threads: int) -> float:
    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best_ns = min(_time(lambda: a @ b, 1, 5))
    return 2 * n**3 / (best_ns * 1e-9)  # FLOP/s


def _ort(model: torch.nn.Module, ids: torch.Tensor, threads: int, work: Path, iters: int) -> list[float]:
    import onnxruntime as ort

    path = work / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(_LogitsOnly(model), (ids,), str(path), input_names=["input_ids"], dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy()}
    return _time(lambda: sess.run(None, feed), 5, iters)


def _runner(bundle_dir: Path, threads: int, iters: int) -> list[float]:
    pkg = build_runtime(host_arch())
    args = ["--bundle", str(bundle_dir), "--warmup", "5", "--min-iters", str(iters), "--min-seconds", "1"]
    argv, env = runner_command(pkg, [*args, "--threads", str(threads)])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=1800)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out.get("ok"):
        raise RuntimeError(f"hilt-runner failed: {out}")
    return [float(s) for s in out["samples_ns"]]


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # tuning measurements use the same thread count
    work = Path(tempfile.mkdtemp(prefix="hilt-peers-"))
    peak = _peak_flops(args.threads)
    log.info("peak %.1f GFLOP/s (%d threads, 2048^3 fp32 matmul)", peak / 1e9, args.threads)
    db = Path(args.database) if args.database else None
    rows = []
    for name in args.models:
        dense = _model_dir(name, work)
        family = "gpt2" if "gpt2" in name else "llama"
        variants = {"dense": dense, "pruned-4x": _prune_4x(dense, family, work / f"{name}-p4")}
        for variant, model_dir in variants.items():
            from harness.models import load_model

            model = load_model(model_dir).model.eval()
            ex = example_input(model, args.seq_len)
            ids = torch.from_numpy(ex.input_ids)
            flops = _flops(model, ids)
            row: dict = {"model": name, "variant": variant, "gflop": flops / 1e9}
            with torch.no_grad():
                row["torch"] = _stats(_time(lambda m=model, x=ids: _LogitsOnly(m)(x), 5, args.iters))
            row["ort"] = _stats(_ort(model, ids, args.threads, work, args.iters))
            untuned = compile_model(model_dir, "local", CompileOptions(seq_len=args.seq_len)).bundle
            row["tvm_untuned"] = _stats(_runner(untuned.directory, args.threads, max(3, args.iters // 10)))
            t0 = time.monotonic()
            tuned_opts = CompileOptions(seq_len=args.seq_len, tune_trials=args.trials, database_dir=db)
            tuned = compile_model(model_dir, "local", tuned_opts).bundle
            row["tune_seconds"] = round(time.monotonic() - t0, 1)
            row["tuning"] = tuned.metadata.tuning
            row["tvm_tuned"] = _stats(_runner(tuned.directory, args.threads, args.iters))
            for key in ("torch", "ort", "tvm_untuned", "tvm_tuned"):
                s = row[key]
                s["gflops"] = flops / (s["median_ms"] / 1e3) / 1e9
                s["peak_share"] = s["gflops"] * 1e9 / peak
                s["vs_torch"] = s["median_ms"] / row["torch"]["median_ms"]
                s["vs_ort"] = s["median_ms"] / row["ort"]["median_ms"]
            rows.append(row)
            log.info("%s %s done", name, variant)
    return {
        "threads": args.threads,
        "seq_len": args.seq_len,
        "trials": args.trials,
        "peak_gflops": peak / 1e9,
        "torch_version": torch.__version__,
        "rows": rows,
    }


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"batch 1, seq {result['seq_len']}, {result['threads']} thread(s), "
        f"peak {result['peak_gflops']:.1f} GFLOP/s, tuned = {result['trials']} trials"
    )
    for col in (
        "model",
        "variant",
        "engine",
        "median ms",
        "p90 ms",
        "vs torch",
        "vs ORT",
        "GFLOP/s",
        "% peak",
    ):
        table.add_column(col, justify="right" if col not in ("model", "variant", "engine") else "left")
    for row in result["rows"]:
        for key in ("torch", "ort", "tvm_untuned", "tvm_tuned"):
            s = row[key]
            table.add_row(
                row["model"],
                row["variant"],
                key,
                f"{s['median_ms']:.2f}",
                f"{s['p90_ms']:.2f}",
                f"{s['vs_torch']:.2f}x",
                f"{s['vs_ort']:.2f}x",
                f"{s['gflops']:.2f}",
                f"{100 * s['peak_share']:.1f}",
            )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo-gpt2", "demo-llama"])
    parser.add_argument("--trials", type=int, default=256, help="MetaSchedule trials per model variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--database", default=None, help="tuning database dir (default: the cache's)")
    parser.add_argument("--out", default=str(HERE / "compile_vs_peers.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


if __name__ == "__main__":
    main()
