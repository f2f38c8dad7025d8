"""ONNX Runtime's aarch64 wheel against hilt's TVM bundles inside the emulated aarch64 board. EMULATED.

qemu-user translates every aarch64 instruction on this x86_64 host, so the absolute times say nothing
about a real Cortex-A72; what the table shows is how the engines' aarch64 code compares under the
same translation, on the same emulated CPU, with the same thread count, in one run (engines
interleaved). Every figure in the JSON is labelled `emulated`.

- Emulated CPU: `qemu-aarch64-static` with `QEMU_CPU=cortex-a72` (qemu-user's `-cpu`) for both
  engines. ORT's cpuinfo reads /proc/cpuinfo and /sys/devices/system/cpu/{possible,present}; under
  qemu-user those are the x86 host's and ORT's import segfaults, so ORT runs with a qemu `-L` prefix
  that holds the board's rootfs plus a Cortex-A72's /proc/cpuinfo and one-CPU sysfs lists (the files a
  real A72 kernel shows).
- ORT: the aarch64 CPython 3.11 wheel of the host's ORT version (and its dependencies), downloaded from
  PyPI once into `$HILT_CACHE/peers/`, run by the emulated board rootfs's own python3 (Debian bookworm).
- TVM: bundles of the `qemu-aarch64` profile (Cortex-A72 target) on both weight-matmul routes, no
  tuning records (`--kernel-tuning off`), run by hilt-runner, the board runtime, under the same qemu.

    .venv/bin/python benchmarks/compile_vs_peers_emulated.py [--models demo-gpt2 demo-llama] [--iters 6]

Needs the emulated aarch64 rootfs (`hilt farm up`, or any test run that starts the emulated farm) and
network access to PyPI the first time. Writes compile_vs_peers_emulated.json next to this file.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from harness.cache import cache_root
from harness.compile import CompileOptions, compile_model
from harness.compile.export import example_input
from harness.compile.tune import KernelTuning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_vs_peers import (  # noqa: E402
    ROUTES,
    VARIANTS,
    _compression,
    _cpu,
    _load,
    _model_dir,
    _prune,
    _runner,
    _stats,
    export_onnx,
)

log = logging.getLogger("compile_vs_peers_emulated")
HERE = Path(__file__).resolve().parent
ARCH = "aarch64"
QEMU = "qemu-aarch64-static"
QEMU_CPU = "cortex-a72"  # the qemu-aarch64 profile's target; qemu-user reads it from $QEMU_CPU
PYTHON_TAG = "cp311"  # the bookworm rootfs's python3
ENGINES = ("ort", "tvm_tir", "tvm_blas")
QEMU_ENV = {"QEMU_CPU": QEMU_CPU}
ROUNDS = 2
# what /proc/cpuinfo shows on one Cortex-A72 core (MIDR 0x410fd083)
A72_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

"""
ORT_TIMER = """
import json, sys, time
import numpy as np
import onnxruntime as ort
path, ids_path, threads, warmup, iters = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
feed = {"input_ids": np.load(ids_path)}
for _ in range(warmup):
    sess.run(None, feed)
samples = []
for _ in range(iters):
    t0 = time.perf_counter_ns()
    sess.run(None, feed)
    samples.append(time.perf_counter_ns() - t0)
print(json.dumps({"ort": ort.__version__, "samples_ns": samples}))
"""


def _rootfs() -> Path:
    from device_agents.emulated.paths import FarmPaths
    from device_agents.emulated.rootfs import cached_image

    image = cached_image(FarmPaths.default().images, ARCH)
    if image is None:
        raise SystemExit("no emulated aarch64 rootfs yet: run `hilt farm up` (or the test suite) first")
    return Path(image.path)


def _ort_site(version: str) -> Path:
    """The aarch64 ORT wheel and its dependencies, unpacked once under the cache."""
    site = cache_root() / "peers" / f"onnxruntime-{version}-{PYTHON_TAG}-{ARCH}"
    if (site / "onnxruntime").is_dir():
        return site
    wheels = site.with_suffix(".wheels")
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
        "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64",
        "--python-version", PYTHON_TAG[2:], "--implementation", "cp", "--abi", PYTHON_TAG,
        "-d", str(wheels), f"onnxruntime=={version}",
    ]  # fmt: skip
    log.info("downloading ORT %s for %s %s", version, ARCH, PYTHON_TAG)
    subprocess.run(cmd, check=True, timeout=600)
    tmp = site.with_suffix(".tmp")
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
    tmp.replace(site)
    return site


def _prefix(rootfs: Path) -> Path:
    """A qemu `-L` prefix: the board's rootfs, with a Cortex-A72's /proc/cpuinfo and one-CPU sysfs lists."""
    prefix = cache_root() / "peers" / f"{ARCH}-{QEMU_CPU}-prefix"
    cpu = prefix / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    (prefix / "proc").mkdir(exist_ok=True)
    (prefix / "proc" / "cpuinfo").write_text(A72_CPUINFO)
    for name in ("possible", "present", "online"):
        (cpu / name).write_text("0\n")
    for entry in rootfs.iterdir():
        link = prefix / entry.name
        if entry.name not in ("proc", "sys") and not link.exists():
            link.symlink_to(entry)
    return prefix


def _ort_emulated(model: torch.nn.Module, ids: torch.Tensor, work: Path, env: dict) -> dict:
    """Exports the model to ONNX here; returns what runs ORT on it inside the emulated board."""
    work.mkdir(parents=True, exist_ok=True)
    path, ids_path, timer = (
        export_onnx(model, ids, work / "model.onnx"),
        work / "ids.npy",
        work / "ort_timer.py",
    )
    np.save(ids_path, ids.numpy())
    timer.write_text(ORT_TIMER)
    python = str(env["rootfs"] / "usr" / "bin" / "python3")
    argv = [QEMU, "-L", str(env["prefix"]), python, str(timer), str(path), str(ids_path)]
    return {
        "argv": argv,
        "env": {"PYTHONPATH": str(env["site"]), "PATH": "/usr/bin:/bin", "QEMU_CPU": QEMU_CPU},
    }


def _time_ort(cmd: dict, iters: int) -> list[float]:
    proc = subprocess.run(
        [*cmd["argv"], "1", "1", str(iters)], env=cmd["env"], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(f"emulated ORT failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return [float(s) for s in json.loads(proc.stdout.strip().splitlines()[-1])["samples_ns"]]


def run(args: argparse.Namespace) -> dict:
    from harness.models import load_model
    from harness.versions import package_version
    from profiles.schema import load_profile

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="hilt-peers-emulated-"))
    rootfs = _rootfs()
    ort_version = package_version("onnxruntime")
    env = {"rootfs": rootfs, "prefix": _prefix(rootfs), "site": _ort_site(ort_version)}
    profile = load_profile("qemu-aarch64")
    off = KernelTuning.parse("off").compile_fields()
    rows = []
    for name in args.models:
        dense = _model_dir(name, work)
        variants = {"dense": dense}
        for variant, (every, keep) in VARIANTS[name].items():
            if variant in args.variants:
                variants[variant] = _prune(dense, work / f"{name}-{variant}", every, keep)
        for variant, model_dir in variants.items():
            if variant not in args.variants:
                continue  # the dense model, when only pruned variants are asked for
            model = load_model(model_dir).model.eval()
            ids = torch.from_numpy(example_input(model, args.seq_len).input_ids)
            row: dict = {"model": name, "variant": variant, "emulated": True, "load_start": _load()}
            row["compression"] = round(_compression(dense, model_dir), 2)
            bundles = {
                route: compile_model(
                    model_dir,
                    profile,
                    CompileOptions(seq_len=args.seq_len, matmul=route, kernel_threads=1, **off),
                ).bundle
                for route in ROUTES
            }
            ort_cmd = _ort_emulated(model, ids, work / f"{name}-{variant}-onnx", env)
            engines = {"ort": lambda n, c=ort_cmd: _time_ort(c, n)} | {
                f"tvm_{r}": lambda n, d=b.directory: _runner(d, 1, n, ARCH, warmup=1, env_extra=QEMU_ENV)
                for r, b in bundles.items()
            }
            samples: dict[str, list[float]] = {k: [] for k in engines}
            t0 = time.monotonic()
            for _ in range(ROUNDS):  # interleaved, so load that comes and goes hits every engine alike
                for key, fn in engines.items():
                    samples[key] += fn(max(2, args.iters // ROUNDS))
            for key in engines:
                row[key] = _stats(samples[key]) | {"emulated": True}
                row[key]["vs_ort"] = row[key]["median_ms"] / row["ort"]["median_ms"] if key != "ort" else 1.0
            for route, bundle in bundles.items():
                row[f"tvm_{route}"]["bundle"] = bundle.sha256
                row[f"tvm_{route}"]["profile_default"] = route == profile.matmul
            row["measure_seconds"] = round(time.monotonic() - t0, 1)
            row["load_end"] = _load()
            rows.append(row)
            log.info(
                "%s %s (emulated): ORT %.0f ms, TVM tir %.0f ms (%.2fx), blas %.0f ms (%.2fx)",
                name, variant, row["ort"]["median_ms"], row["tvm_tir"]["median_ms"], row["tvm_tir"]["vs_ort"],
                row["tvm_blas"]["median_ms"], row["tvm_blas"]["vs_ort"],
            )  # fmt: skip
    return {
        "emulated": True,
        "note": "qemu-user on an x86_64 host: ratios between engines, not a board's speed",
        "qemu": f"{QEMU} with QEMU_CPU={QEMU_CPU} (ORT: -L rootfs prefix with a Cortex-A72 /proc/cpuinfo)",
        "host": _cpu().get("model", "unknown"),
        "host_cpu": _cpu(),
        "threads": 1,
        "seq_len": args.seq_len,
        "profile": profile.name,
        "versions": {
            "onnxruntime_aarch64": ort_version,
            "apache-tvm": package_version("apache-tvm"),
            "qemu": _qemu_version(),
        },
        "rows": rows,
    }


def _qemu_version() -> str:
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"EMULATED ({QEMU}, QEMU_CPU={QEMU_CPU}, on {result['host']}): batch 1, "
                  f"seq {result['seq_len']}, 1 thread, profile {result['profile']}")  # fmt: skip
    for col in ("model", "variant", "engine", "median ms", "p10-p90 ms", "vs ORT", "notes"):
        table.add_column(col, justify="left" if col in ("model", "variant", "engine", "notes") else "right")
    for row in result["rows"]:
        for key in ENGINES:
            s = row[key]
            note = "profile default" if s.get("profile_default") else ""
            note = f"{row['compression']:.1f}x params" if key == "ort" else note
            table.add_row(
                row["model"], row["variant"], key, f"{s['median_ms']:.0f}",
                f"{s['p10_ms']:.0f}-{s['p90_ms']:.0f}", f"{s['vs_ort']:.2f}x", note,
            )  # fmt: skip
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo-gpt2", "demo-llama"])
    parser.add_argument("--variants", nargs="+", default=["dense", "pruned-4x", "pruned-13.8x"])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--iters", type=int, default=6, help="timed runs per engine (split over rounds)")
    parser.add_argument("--out", default=str(HERE / "compile_vs_peers_emulated.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


if __name__ == "__main__":
    main()
