"""TVM (hilt's default lowering, and tuned) against torch eager and ONNX Runtime on the demo models.

Same CPU, same thread count, batch 1, one run: dense, 4x- and 13.8x-pruned variants of each demo
model. For each: torch eager, ORT, TVM tir and TVM blas (hilt's lowering with no tuning records,
`--kernel-tuning off`, on each weight-matmul route: hilt's TensorIR schedule, or OpenBLAS in the board
runtime; the row's `default_route` is the profile's), TVM tuned (the profile's route plus `trials:N`
into one database shared by all variants; its trial count and tuning time are in the row). Prints
median / p90 latency, ratios to ORT, achieved GFLOP/s against a peak measured here (the best of
several large torch matmuls at the same thread count), and for the TVM rows the top kernels (and
hilt.blas calls) with their share of the time and GFLOP/s. Writes compile_vs_peers.json next to
this file, with the CPU model, its vector flags and the load average before and after.

    .venv/bin/python benchmarks/compile_vs_peers.py --trials 24 --threads 1

Engines are measured in interleaved rounds (torch, ORT, TVM tir, TVM blas, TVM tuned, three times), so
load from other work on the machine falls on all of them alike.

Needs the `bench` extra (onnx, onnxruntime). Untrained demo-sized weights are used when the demo
models are not trained yet (latency does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.compile import CompileOptions, compile_model
from harness.compile.export import _LogitsOnly, example_input
from harness.compile.tune import KernelTuning
from harness.runtime import build_runtime, runner_command
from harness.runtime.in_process import load_host_blas
from harness.runtime.toolchains import host_arch

log = logging.getLogger("compile_vs_peers")
HERE = Path(__file__).resolve().parent
ENGINES = ("torch", "ort", "tvm_tir", "tvm_blas", "tvm_tuned")
ROUTES = ("tir", "blas")  # the default lowering's two weight-matmul routes, each measured
ROUNDS = 3  # measurement rounds per variant, engines interleaved


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


def _prune(src: Path, out: Path, layer_every: int, keep_channels: int | None) -> Path:
    """Keep every `layer_every`-th layer, half the heads (KV groups for GQA), and `keep_channels` FFN
    channels (None: half): the structural cuts the tuner makes, without recovery (latency only)."""
    from harness.models import get_adapter, load_model
    from harness.models.manifest import save_pruned

    model = load_model(src).model.eval()
    adapter = get_adapter(model)
    adapter.remove_layers(list(range(0, adapter.num_layers(), layer_every)))  # the adapter takes kept indices
    for layer in range(adapter.num_layers()):
        groups = adapter.attention_shape(layer).num_kv_groups
        adapter.remove_heads(layer, list(range(max(1, groups // 2))))
        have = adapter.num_channels(layer)
        keep = have // 2 if keep_channels is None else min(have, keep_channels)
        adapter.remove_channels(layer, list(range(keep)))
    save_pruned(model, out, "sequence-classification")
    return out


# variant -> (layer_every, FFN channels kept); the achieved parameter compression is in the JSON
VARIANTS: dict[str, dict[str, tuple[int, int | None]]] = {
    "demo-gpt2": {"pruned-4x": (2, None), "pruned-13.8x": (4, 72)},
    "demo-llama": {"pruned-4x": (2, None), "pruned-13.8x": (4, 128)},
}


def _stats(samples_ns: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {
        "median_ms": float(np.median(arr)),
        "p10_ms": float(np.percentile(arr, 10)),
        "p90_ms": float(np.percentile(arr, 90)),
        "n": int(arr.size),
    }


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


def _peak_flops(threads: int) -> dict[str, Any]:
    """The best fp32 matmul rate torch reaches here: several sizes, best of many runs (a loaded
    machine only lowers single runs, so the best is the closest to the core's real peak)."""
    torch.set_num_threads(threads)
    best: dict[str, float] = {}
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        ns = min(_time(lambda a=a, b=b: a @ b, 3, 15 if n < 2048 else 8))
        best[str(n)] = 2 * n**3 / (ns * 1e-9) / 1e9
    return {"gflops": max(best.values()), "by_size_gflops": best, "method": "torch matmul, best run"}


def _cpu() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and "model" not in info:
            info["model"] = value.strip()
        if key.strip() == "flags" and "vector_flags" not in info:
            flags = value.split()
            info["vector_flags"] = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx")))
    return info


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def export_onnx(model: torch.nn.Module, ids: torch.Tensor, path: Path) -> Path:
    """The model's logits as an ONNX graph with one input, `input_ids`, for ORT."""
    with torch.no_grad():
        torch.onnx.export(_LogitsOnly(model), (ids,), str(path), input_names=["input_ids"], dynamo=False)
    return path


def _ort(model: torch.nn.Module, ids: torch.Tensor, threads: int, work: Path) -> Callable[[int], list[float]]:
    """An ORT session for the model; returns a function timing `iters` runs of it."""
    import onnxruntime as ort

    path = export_onnx(model, ids, work / "model.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy()}
    return lambda iters: _time(lambda: sess.run(None, feed), 5, iters)


def _runner(
    bundle_dir: Path,
    threads: int,
    iters: int,
    arch: str | None = None,
    warmup: int = 5,
    env_extra: dict[str, str] | None = None,
) -> list[float]:
    """hilt-runner, the board runtime, on this host (under qemu-user for a foreign `arch`): what a
    deployed bundle runs as. `env_extra` adds to its environment (e.g. QEMU_CPU)."""
    pkg = build_runtime(arch or host_arch())
    args = [
        "--bundle",
        str(bundle_dir),
        "--warmup",
        str(warmup),
        "--min-iters",
        str(iters),
        "--min-seconds",
        "0",
    ]
    argv, env = runner_command(pkg, [*args, "--threads", str(threads)])
    env |= env_extra or {}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=1800)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out.get("ok"):
        raise RuntimeError(f"hilt-runner failed: {out}")
    return [float(s) for s in out["samples_ns"]]


def _kernel_flops(model: torch.nn.Module, seq_len: int, profile: Any, matmul: str) -> dict[str, float]:
    """FLOPs of one call of each kernel of hilt's lowering (names as the VM calls them)."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    from harness.compile.export import to_relax
    from harness.compile.lowering import prepare
    from harness.compile.target import tvm_target

    mod = prepare(to_relax(model, example_input(model, seq_len)), tvm_target(profile), matmul=matmul)
    out = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                out[gv.name_hint] = float(estimate_tir_flops(tvm.IRModule({"main": func})))
            except Exception:  # noqa: BLE001 - kernels the estimator cannot read count as 0 FLOPs
                out[gv.name_hint] = 0.0
    return out


def _hook_overhead_ns() -> float:
    """What one before/after pair of the Python instrument hook costs by itself (subtracted)."""
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        t1 = time.perf_counter_ns()
        samples.append(t1 - t0)
    return float(np.median(samples))


def _top_kernels(
    bundle_dir: Path, flops: dict[str, float], iters: int, threads: int, top: int = 6
) -> list[dict[str, Any]]:
    """Per-kernel time of the bundle in this process (VM instrument hook around every kernel call,
    the hilt.blas.* calls included; shares are of the summed kernel time, GFLOP/s from TVM's FLOP
    estimate of each TensorIR kernel)."""
    import tvm
    from tvm import relax

    from harness.compile.external_weights import read_weights

    hook_ns = _hook_overhead_ns()
    load_host_blas(threads)  # blas-route bundles call hilt.blas.*
    lib = tvm.runtime.load_module(str(bundle_dir / "model.so"))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    weights = read_weights(bundle_dir)  # the functions take the bundle's weights after their inputs
    ids = np.fromfile(bundle_dir / "input.bin", dtype=np.int64)
    spec = json.loads((bundle_dir / "input.json").read_text())
    x = tvm.runtime.tensor(ids.reshape(spec["shape"]))
    totals: dict[str, float] = {}
    calls: dict[str, int] = {}
    started: list[int] = [0]

    def instrument(_func: Any, symbol: str, before: bool, _ret: Any, *_args: Any) -> int:
        if symbol.startswith("vm.builtin"):  # allocation and bookkeeping, not kernels
            return 0
        if before:
            started[0] = time.perf_counter_ns()
        else:
            spent = time.perf_counter_ns() - started[0] - hook_ns
            totals[symbol] = totals.get(symbol, 0.0) + max(0.0, spent)
            calls[symbol] = calls.get(symbol, 0) + 1
        return 0

    vm["main"](x, *weights)
    vm.set_instrument(tvm.runtime.convert(instrument))
    for _ in range(iters):
        vm["main"](x, *weights)
    whole = sum(totals.values()) or 1.0
    rows = []
    for symbol, ns in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        per_call_s = ns / calls[symbol] * 1e-9
        f = flops.get(symbol, 0.0)
        rows.append(
            {
                "kernel": symbol,
                "share": ns / whole,
                "ms_per_run": ns / iters / 1e6,
                "calls_per_run": calls[symbol] // iters,
                "gflops": f / per_call_s / 1e9 if f else None,
            }
        )
    return rows


def _compression(dense: Path, pruned: Path) -> float:
    from harness.models import load_model
    from harness.models.manifest import count_parameters

    return count_parameters(load_model(dense).model) / count_parameters(load_model(pruned).model)


def run(args: argparse.Namespace) -> dict:
    from profiles.schema import load_profile

    torch.set_num_threads(args.threads)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # tuning measurements use the same thread count
    work = Path(tempfile.mkdtemp(prefix="hilt-peers-"))
    load_before = _load()
    peak = _peak_flops(args.threads)
    log.info("peak %.1f GFLOP/s (%d threads, %s)", peak["gflops"], args.threads, peak["by_size_gflops"])
    db = Path(args.database) if args.database else work / "tuning-db"
    profile = load_profile("local")
    rows = []
    for name in args.models:
        from harness.models import load_model

        dense = _model_dir(name, work)
        variants = {"dense": dense}
        for variant, (every, keep) in VARIANTS[name].items():
            if variant in args.variants:
                variants[variant] = _prune(dense, work / f"{name}-{variant}", every, keep)
        variants = {k: v for k, v in variants.items() if k in args.variants}
        for variant, model_dir in variants.items():
            model = load_model(model_dir).model.eval()
            ex = example_input(model, args.seq_len)
            ids = torch.from_numpy(ex.input_ids)
            flops = _flops(model, ids)
            row: dict = {"model": name, "variant": variant, "gflop": flops / 1e9, "load_start": _load()}
            row["compression"] = round(_compression(dense, model_dir), 2)
            threads = {"kernel_threads": args.threads}  # parallel outer loops when measured with > 1 thread
            off_fields = KernelTuning.parse("off").compile_fields()
            defaults = {
                route: compile_model(
                    model_dir,
                    profile,
                    CompileOptions(seq_len=args.seq_len, matmul=route, **threads, **off_fields),
                ).bundle
                for route in ROUTES
            }
            row["default_route"] = profile.matmul
            t0 = time.monotonic()
            tuned_opts = CompileOptions(
                seq_len=args.seq_len, tune_trials=args.trials, database_dir=db, **threads
            )
            built = compile_model(model_dir, profile, tuned_opts)
            tuned = built.bundle
            row["tune_seconds"] = round(time.monotonic() - t0, 1)
            row["tuning"] = built.tuning.model_dump(mode="json")

            def eager(iters: int, m: torch.nn.Module = model, x: torch.Tensor = ids) -> list[float]:
                with torch.no_grad():
                    return _time(lambda: _LogitsOnly(m)(x), 5, iters)

            engines = {
                "torch": eager,
                "ort": _ort(model, ids, args.threads, work),
                "tvm_tir": lambda iters, d=defaults["tir"].directory: _runner(d, args.threads, iters),
                "tvm_blas": lambda iters, d=defaults["blas"].directory: _runner(d, args.threads, iters),
                "tvm_tuned": lambda iters, d=tuned.directory: _runner(d, args.threads, iters),
            }
            samples: dict[str, list[float]] = {k: [] for k in engines}
            for _ in range(ROUNDS):  # interleaved: load that comes and goes hits every engine alike
                for key, fn in engines.items():
                    samples[key] += fn(max(3, args.iters // ROUNDS))
            for key in engines:
                row[key] = _stats(samples[key])
            for route, bundle in defaults.items():
                kflops = _kernel_flops(model, args.seq_len, profile, route)
                kernels = bundle.metadata.tuning.kernels
                row[f"tvm_{route}"]["kernels"] = kernels.as_dict() if kernels is not None else {}
                row[f"tvm_{route}"]["bundle"] = bundle.sha256
                row[f"tvm_{route}"]["top_kernels"] = _top_kernels(bundle.directory, kflops, 10, args.threads)
            kflops = _kernel_flops(model, args.seq_len, profile, profile.matmul)
            row["tvm_tuned"]["kernels"] = row["tuning"]["kernels"] or {}
            row["tvm_tuned"]["bundle"] = tuned.sha256  # == the default's when no record beat hilt's schedule
            row["tvm_tuned"]["top_kernels"] = _top_kernels(tuned.directory, kflops, 10, args.threads)
            for key in ENGINES:
                s = row[key]
                s["gflops"] = flops / (s["median_ms"] / 1e3) / 1e9
                s["peak_share"] = s["gflops"] / peak["gflops"]
                s["vs_torch"] = s["median_ms"] / row["torch"]["median_ms"]
                s["vs_ort"] = s["median_ms"] / row["ort"]["median_ms"]
            row["load_end"] = _load()
            rows.append(row)
            log.info(
                "%s %s: ORT %.2f ms, TVM tir %.2f ms (%.2fx), blas %.2f ms (%.2fx), tuned %.2f ms (%.2fx), "
                "load %s",
                name, variant, row["ort"]["median_ms"], row["tvm_tir"]["median_ms"], row["tvm_tir"]["vs_ort"],
                row["tvm_blas"]["median_ms"], row["tvm_blas"]["vs_ort"], row["tvm_tuned"]["median_ms"],
                row["tvm_tuned"]["vs_ort"],
                row["load_end"],
            )  # fmt: skip
    return {
        "threads": args.threads,
        "seq_len": args.seq_len,
        "trials": args.trials,
        "trials_note": "new MetaSchedule trials per variant, heavy kernels by FLOP share, into one "
        "database shared by all variants; hilt's own schedule of each (matmul, row reduction, "
        "elementwise) is measured and recorded first",
        "peak": peak,
        "peak_gflops": peak["gflops"],
        "cpu": _cpu(),
        "load_avg_start": load_before,
        "load_avg_end": _load(),
        "torch_version": torch.__version__,
        "versions": _versions(),
        "rows": rows,
    }


def _versions() -> dict[str, str]:
    from harness.versions import package_version

    return {n: package_version(n) for n in ("apache-tvm", "torch", "onnxruntime", "transformers")}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cpu = result.get("cpu", {})
    table = Table(
        title=f"{cpu.get('model', '?')}: batch 1, seq {result['seq_len']}, {result['threads']} thread(s), "
        f"peak {result['peak_gflops']:.1f} GFLOP/s, tuned = {result['trials']} new trials per variant"
    )
    cols = ("model", "variant", "engine", "median ms", "p10-p90 ms", "vs ORT", "GFLOP/s", "% peak", "notes")
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "variant", "engine", "notes") else "right")
    for row in result["rows"]:
        for key in ENGINES:
            s = row[key]
            note = ""
            if key == "tvm_tuned":
                k = s.get("kernels", {})
                note = f"{row['tune_seconds']:.0f} s tuning, {k.get('from_database', 0)} kernels from records"
            elif key == f"tvm_{row.get('default_route', '')}":
                note = "profile default"
            elif key == "torch":
                note = f"{row['compression']:.1f}x params"
            table.add_row(
                row["model"], row["variant"], key, f"{s['median_ms']:.2f}",
                f"{s['p10_ms']:.2f}-{s['p90_ms']:.2f}", f"{s['vs_ort']:.2f}x", f"{s['gflops']:.1f}",
                f"{100 * s['peak_share']:.0f}", note,
            )  # fmt: skip
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo-gpt2", "demo-llama"])
    parser.add_argument("--trials", type=int, default=64, help="new MetaSchedule trials per model variant")
    parser.add_argument("--variants", nargs="+", default=["dense", "pruned-4x", "pruned-13.8x"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--database", default=None, help="tuning database dir (default: a fresh one)")
    parser.add_argument("--out", default=str(HERE / "compile_vs_peers.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


if __name__ == "__main__":
    main()
