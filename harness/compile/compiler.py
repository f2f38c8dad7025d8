"""Model dir + board profile -> artifact bundle, cached by a key over everything that decides the output.

One pipeline for every task (harness.compile.tasks: the classifier's forward, the causal LM's prefill +
decode): load (harness.models) -> the task's export (Relax module, example input, PyTorch's output)
-> the graph passes (harness.compile.lowering.GRAPH_PASSES: rewrites, BLAS offload, weight layout)
-> [MetaSchedule trials into the board's database] -> kernels scheduled (database records, hilt's
rules, DLight) -> build for the profile's target -> export_library (cross-compiled for foreign
arches) -> bundle and cache index. The same candidate for the same target is built once.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.cache import cache_root, sha256_file
from harness.compile.bundle import Bundle, TuningInfo, TuningPlan, WeightsInfo, load_bundle, write_bundle
from harness.compile.export import EXAMPLE_SEED
from harness.compile.external_weights import lift_weights, write_weights
from harness.compile.kernel_timer import KernelTimer
from harness.compile.lowering import (
    LOWERING_NAME,
    WEIGHTS_ATTR,
    LoweringInfo,
    build,
    lanes_of,
    prepare,
    schedule,
)
from harness.compile.options import CompileOptions
from harness.compile.target import export_kwargs, tvm_target
from harness.compile.tasks import CompileTask, Exported, task_class
from harness.compile.tune import Measure, TuningDatabase, database_dir_for, describe_tuning
from harness.errors import ArtifactError, CompileError
from harness.models import LoadedModel, load_model
from harness.runtime.blas import find_static_blas
from harness.versions import package_version
from profiles.schema import BoardProfile, load_profile

log = logging.getLogger(__name__)

# Bump when a change here alters what a bundle contains, so old cache entries are not reused.
# 4: causal LMs take the matmul route (blas on the local profile), tuning metadata typed (TuningInfo).
# 5: weights in weights.bin (trailing parameters of every function), not inside model.so.
COMPILE_VERSION = 5
MODEL_FILES = ("config.json", "pruning_manifest.json", "model.safetensors")

Progress = Callable[[str], None]
MATMUL_ROUTES = ("tir", "blas")
_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "riscv64": "riscv64"}

__all__ = ["CompileOptions", "CompileResult", "bundles_root", "cache_key", "compile_model", "matmul_route"]


@dataclass(frozen=True)
class CompileResult:
    bundle: Bundle
    cached: bool
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    # how this build's kernels were made; equals bundle.metadata.tuning unless the code came out
    # byte-identical to a bundle already built another way (content addressing keeps the first)
    tuning: TuningInfo = field(default_factory=TuningInfo)


def bundles_root() -> Path:
    """Where bundles live: cache_root()/bundles/<sha256>/."""
    return cache_root() / "bundles"


def _model_digest(source: Path) -> dict[str, str]:
    """Hashes of the model files that decide the weights and shapes."""
    names = {n for n in MODEL_FILES if (source / n).is_file()}
    names |= {p.name for p in source.glob("*.safetensors")}
    out = {name: sha256_file(source / name) for name in sorted(names)}
    if not out:
        raise CompileError(f"{source}: none of {', '.join(MODEL_FILES)} found; cannot key the build")
    return out


def cache_key(
    model_files: dict[str, str], profile: BoardProfile, opts: CompileOptions, tuning_digest: str
) -> str:
    """sha256 over everything that determines the bundle's contents."""
    doc = {
        "compile_version": COMPILE_VERSION,
        "model": model_files,
        "arch": profile.arch,
        "target": profile.target.as_tvm(),
        "toolchain": profile.toolchain.model_dump(),
        "seq_len": opts.seq_len,
        "example_seed": EXAMPLE_SEED,
        "lowering": LOWERING_NAME,
        "kernel_threads": opts.kernel_threads,
        "matmul": matmul_route(profile, opts),
        "weights": [opts.weights, opts.group_size if opts.weights == "int4" else 0],
        "tuning": tuning_digest,
        **({"cache_len": opts.cache_len} if opts.cache_len is not None else {}),
        "versions": {
            name: package_version(name) for name in ("apache-tvm", "apache-tvm-ffi", "torch", "transformers")
        },
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def matmul_route(profile: BoardProfile, opts: CompileOptions) -> str:
    """The weight-matmul route this build uses: the option, else the profile's default; a default of
    "blas" falls back to "tir" (logged) when this host has no static OpenBLAS for the board's arch, and
    for kernels scheduled on more than one thread: OpenBLAS's own threads then compete with TVM's pool
    for the cores (2 threads here: the blas route 0.81-1.79x ORT and erratic, tir 0.51-1.30x;
    benchmarks/compile_vs_peers_v4_2threads.json)."""
    route = opts.matmul or profile.matmul
    if opts.matmul is None and route == "blas" and opts.kernel_threads > 1:
        log.info("%s: %d kernel threads: the tir matmul route (the blas default is for 1)", profile.name,
                 opts.kernel_threads)  # fmt: skip
        return "tir"
    if route not in MATMUL_ROUTES:
        raise CompileError(f"unknown matmul route '{route}'; choose one of {', '.join(MATMUL_ROUTES)}")
    if route == "blas" and find_static_blas(profile.arch) is None:
        if opts.matmul == "blas":
            raise CompileError(
                f"the blas matmul route needs a static OpenBLAS for {profile.arch} "
                f"(Debian's libopenblas-pthread-dev:{_DEBIAN_ARCH.get(profile.arch, profile.arch)}, "
                f"installed for the host's arch or unpacked under /opt/hilt/openblas/{profile.arch}; "
                "scripts/system-deps.sh does x86_64 and aarch64); or pass --matmul tir"
            )
        log.warning(
            "no static OpenBLAS for %s here: %s bundles use the tir matmul route", profile.arch, profile.name
        )
        return "tir"
    return route


def _index_path(key: str) -> Path:
    return bundles_root() / "index" / f"{key}.json"


def _cached_bundle(key: str) -> tuple[Bundle, TuningInfo] | None:
    """The bundle an index entry names, and how the build that wrote the entry made its kernels."""
    path = _index_path(key)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        bundle = load_bundle(bundles_root() / entry["bundle"])
        tuning = entry.get("tuning")
        return bundle, TuningInfo.model_validate(tuning) if tuning else bundle.metadata.tuning
    except (ArtifactError, KeyError, ValueError, OSError) as exc:  # ValueError: bad JSON or fields
        log.warning("cache entry %s unusable (%s); rebuilding", path.name, exc)
        return None


def _write_index(key: str, bundle: Bundle, tuning: TuningInfo) -> None:
    """The cache index entry: key -> the bundle and how this build made its kernels."""
    index = _index_path(key)
    index.parent.mkdir(parents=True, exist_ok=True)
    entry = {"bundle": bundle.sha256, "tuning": tuning.model_dump(mode="json")}
    index.write_text(json.dumps(entry) + "\n")


def _resolve_profile(profile: str | BoardProfile) -> BoardProfile:
    return profile if isinstance(profile, BoardProfile) else load_profile(profile)


# torch.export keeps process-global dispatch-mode state: two exports in two threads corrupt each other
# ("ProxyTorchDispatchMode slot already occupied"), so builds in one process take turns.
_BUILD_LOCK = threading.Lock()


@contextmanager
def _building(key: str) -> Iterator[None]:
    """One process at a time builds a cache key: tuning workers that miss the same bundle at once
    (pruned models repeat) wait for the first build and take it from the cache, instead of each
    compiling it again."""
    path = bundles_root() / ".building" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
        yield


def compile_model(
    model: str | Path,
    profile: str | BoardProfile,
    options: CompileOptions | None = None,
    progress: Progress | None = None,
    timer: KernelTimer | None = None,
) -> CompileResult:
    """Build (or fetch from the cache) the bundle for `model` on `profile` (thread-safe).

    `timer` times tuning candidates on a board (`--tune-trials` for a foreign arch needs one)."""
    with _BUILD_LOCK:
        return _compile_model(model, profile, options, progress, timer)


@dataclass
class _Run:
    """One compile's state: the resolved profile and options, progress, and the time each stage took."""

    prof: BoardProfile
    opts: CompileOptions
    say: Progress
    start: float = field(default_factory=time.monotonic)
    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.stages[name] = round(time.monotonic() - t0, 3)

    def cached(self, key: str) -> CompileResult | None:
        """The cached build for `key` as this compile's result, said as cached; None on a miss."""
        if not self.opts.use_cache or (hit := _cached_bundle(key)) is None:
            return None
        bundle, tuning = hit
        self.say(f"cached bundle {bundle.sha256[:12]} for {self.prof.name}")
        return CompileResult(bundle, True, time.monotonic() - self.start, self.stages, tuning)


def _compile_model(
    model: str | Path,
    profile: str | BoardProfile,
    options: CompileOptions | None,
    progress: Progress | None,
    timer: KernelTimer | None,
) -> CompileResult:
    """The one pipeline: task export -> graph passes -> [trials] -> schedule -> build -> bundle."""
    prof = _resolve_profile(profile)
    base = options or CompileOptions()
    opts = replace(base, matmul=matmul_route(prof, base))  # resolved (and any fallback logged) once
    run = _Run(prof, opts, progress or (lambda msg: log.info("%s", msg)))
    if opts.tune_trials > 0:
        Measure.on(prof, timer)  # a foreign arch with no board to time on fails before any work
    with run.stage("load"):
        loaded = load_model(model)
    kind = task_class(loaded, model)
    if opts.tune_trials > 0 and kind.not_tunable:
        raise CompileError(kind.not_tunable)
    task = kind(loaded, opts)
    tuning = None
    if opts.tune_trials > 0 or opts.use_database:
        tuning = TuningDatabase(opts.database_dir or database_dir_for(prof))
    model_files = _model_digest(loaded.source)
    key = cache_key(model_files, prof, opts, task.tuning_key(tuning.digest() if tuning else "none"))
    if opts.tune_trials == 0 and (hit := run.cached(key)) is not None:
        return hit
    with _building(key):  # another process building the same key: wait, then take its bundle
        if opts.tune_trials == 0 and (hit := run.cached(key)) is not None:
            return hit
        return _build_bundle(run, task, loaded, key, model_files, tuning, timer)


def _build_bundle(
    run: _Run,
    task: CompileTask,
    loaded: Any,
    key: str,
    model_files: Any,
    tuning: TuningDatabase | None,
    timer: KernelTimer | None,
) -> CompileResult:
    """A cache miss: export, lower, [tune], schedule, build and write the bundle."""
    prof, opts = run.prof, run.opts
    with run.stage("export"):
        exported = _export(task, run)
    target = tvm_target(prof)
    with run.stage("lower"):
        mod = prepare(exported.mod, target, opts)
    weights = _weights_info(mod)
    plan = None
    if tuning is not None and opts.tune_trials > 0:
        with run.stage("tune"):
            run.say(f"tuning {opts.tune_trials} trials for {prof.name} into {tuning.work_dir}")
            plan = tuning.tune(mod, target, prof, trials=opts.tune_trials, say=run.say, timer=timer)
        # the database has grown: key the bundle by what it holds now
        key = cache_key(model_files, prof, opts, task.tuning_key(tuning.digest()))
        if (hit := run.cached(key)) is not None:
            return hit
    database = tuning.open() if tuning is not None and tuning.exists() else None
    with run.stage("schedule"):
        lanes = lanes_of(prof.cpu.simd_width_bytes)
        mod, lowering = schedule(mod, target, database=database, lanes=lanes, threads=opts.kernel_threads)
    info = _tuning_info(opts, tuning, plan, lowering)
    run.say(describe_tuning(info))
    mod, weight_arrays = lift_weights(mod)
    with run.stage("build"):
        run.say(f"building for {prof.name} ({prof.arch}, target {target})")
        executable = build(mod, target)
    bundle = _write(run, key, loaded, exported, executable, weight_arrays, info, weights)
    _write_index(key, bundle, info)
    elapsed = time.monotonic() - run.start
    run.say(f"{task.name} bundle {bundle.sha256[:12]} built in {elapsed:.1f} s")
    return CompileResult(bundle, cached=False, seconds=elapsed, stages=run.stages, tuning=info)


def _export(task: CompileTask, run: _Run) -> Exported:
    """The task's export with torch at the options' thread count (not leaked to the caller)."""
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, run.opts.threads))
    try:
        return task.export(run.say, run.stages)
    finally:
        torch.set_num_threads(caller_threads)


def _weights_info(mod: Any) -> WeightsInfo:
    """What the weight-quant graph pass recorded on the module (fp32: nothing)."""
    raw = mod.attrs.get(WEIGHTS_ATTR) if mod.attrs is not None else None
    if raw is None:
        return WeightsInfo()
    info = json.loads(str(raw))
    return WeightsInfo(
        format=info["format"],
        group_size=info["group_size"],
        table_format=info["table_format"],
        weights=len(info["quantized"]),
        fp32_mb=round(info["fp32_bytes"] / 1e6, 3),
        stored_mb=round(info["stored_bytes"] / 1e6, 3),
        kept_fp32=info["kept_fp32"],
    )


def _write(
    run: _Run,
    key: str,
    loaded: LoadedModel,
    exported: Exported,
    executable: Any,
    weight_arrays: list[np.ndarray],
    tuning: TuningInfo,
    weights: WeightsInfo,
) -> Bundle:
    """Link model.so for the profile's arch into a staging dir, write the weights beside it, and
    finish it as a bundle."""
    root = bundles_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    write_weights(staging, weight_arrays)
    with run.stage("link"):
        try:
            executable.export_library(str(staging / "model.so"), **export_kwargs(run.prof))
        except CompileError:
            raise
        except Exception as exc:  # the cross toolchain reports through TVM's own errors
            raise CompileError(f"linking model.so for {run.prof.arch} failed: {exc}") from exc
    meta = {**_build_metadata(run, key, loaded), **exported.metadata, "tuning": tuning, "weights": weights}
    return write_bundle(
        staging,
        root,
        input_name=exported.input_name,
        input_array=exported.input_array,
        expected=exported.expected,
        manifest=_manifest_of(loaded.source),
        metadata=meta,
    )


def _tuning_info(
    opts: CompileOptions, tuning: TuningDatabase | None, plan: Any, lowering: LoweringInfo
) -> TuningInfo:
    """How the bundle's kernels were made: what `hilt report` and the tuner show per bundle."""
    return TuningInfo(
        mode="trials" if opts.tune_trials > 0 else ("db" if tuning is not None else "off"),
        lowering=lowering.lowering,
        matmul="blas" if lowering.blas_matmuls else "tir",
        database=str(tuning.work_dir) if tuning is not None else None,
        records=tuning.num_records() if tuning is not None else 0,
        timed_on=sorted(tuning.sources()) if tuning is not None else [],
        trials=opts.tune_trials,
        tasks=lowering.kernels,
        scheduled_kernels=lowering.from_database,
        kernels=lowering,
        plan=TuningPlan.model_validate(plan.as_dict()) if plan is not None else None,
    )


def _build_metadata(run: _Run, key: str, loaded: LoadedModel) -> dict[str, Any]:
    """What every bundle's metadata.json says about its build: versions, target, time, key."""
    return {
        "hilt_version": package_version("hilt"),
        "tvm_version": package_version("apache-tvm"),
        "tvm_ffi_version": package_version("apache-tvm-ffi"),
        "profile": run.prof.name,
        "target": run.prof.target.as_tvm(),
        "arch": run.prof.arch,
        "build_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - run.start, 3),
        "cache_key": key,
        "model_family": loaded.family,
    }


def _manifest_of(source: Path) -> dict[str, Any]:
    path = source / "pruning_manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CompileError(f"{path}: not valid JSON ({exc})") from exc
