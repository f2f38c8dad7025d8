"""Model dir + board profile -> artifact bundle, cached by a key over everything that decides the output.

Stages: load (harness.models) -> example input + PyTorch logits -> torch.export -> Relax ->
hilt's default lowering (harness.compile.lowering: graph rewrites, fused kernels) -> [MetaSchedule
trials into the board's database] -> kernels scheduled (database records, hilt's matmul rule,
DLight) -> tvm.compile for the profile's target -> export_library (cross-compiled for foreign
arches) -> bundle. The same candidate for the same target is built once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from harness.cache import cache_root, sha256_file
from harness.compile.bundle import Bundle, load_bundle, write_bundle
from harness.compile.export import EXAMPLE_SEED, example_input, to_relax
from harness.compile.kernel_timer import KernelTimer
from harness.compile.lowering import LOWERING_NAME, lanes_of, prepare, schedule
from harness.compile.target import export_kwargs, tvm_target
from harness.compile.tune import Measure, TuningDatabase, database_dir_for, describe_tuning
from harness.errors import ArtifactError, CompileError
from harness.models import LoadedModel, load_model
from harness.runtime.blas import find_static_blas
from harness.versions import package_version
from profiles.schema import BoardProfile, load_profile

log = logging.getLogger(__name__)

# Bump when a change here alters what a bundle contains, so old cache entries are not reused.
COMPILE_VERSION = 3
MODEL_FILES = ("config.json", "pruning_manifest.json", "model.safetensors")

Progress = Callable[[str], None]
MATMUL_ROUTES = ("tir", "blas")
_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "riscv64": "riscv64"}


@dataclass(frozen=True)
class CompileOptions:
    """What, besides the model and the profile, decides the bundle."""

    seq_len: int = 128
    tune_trials: int = 0
    database_dir: Path | None = None  # JSON tuning database; default: the board's (tune.database_dir_for)
    use_database: bool = True  # apply the board's tuning records (False: the default lowering alone)
    use_cache: bool = True
    threads: int = 1  # torch threads while exporting
    kernel_threads: int = 1  # threads the kernels are scheduled for (> 1: parallel outer loops)
    cache_len: int | None = None  # causal LMs: KV-cache positions (default seq_len + 128, within the model's)
    matmul: str | None = None  # "tir" | "blas" weight matmuls; None: the profile's default


@dataclass(frozen=True)
class CompileResult:
    bundle: Bundle
    cached: bool
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    # how this build's kernels were made; equals bundle.metadata.tuning unless the code came out
    # byte-identical to a bundle already built another way (content addressing keeps the first)
    tuning: dict[str, Any] = field(default_factory=dict)


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


def _cached_bundle(key: str) -> tuple[Bundle, dict[str, Any]] | None:
    """The bundle an index entry names, and how the build that wrote the entry made its kernels."""
    path = _index_path(key)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        bundle = load_bundle(bundles_root() / entry["bundle"])
        return bundle, entry.get("tuning") or bundle.metadata.tuning
    except (ArtifactError, KeyError, json.JSONDecodeError, OSError) as exc:
        log.warning("cache entry %s unusable (%s); rebuilding", path.name, exc)
        return None


def _cache_hit(
    key: str, prof: BoardProfile, say: Progress, start: float, stages: dict[str, float]
) -> CompileResult | None:
    """The cached build for `key` as this compile's result, said as cached; None on a miss."""
    hit = _cached_bundle(key)
    if hit is None:
        return None
    bundle, tuning = hit
    say(f"cached bundle {bundle.sha256[:12]} for {prof.name}")
    return CompileResult(bundle, cached=True, seconds=time.monotonic() - start, stages=stages, tuning=tuning)


def _resolve_profile(profile: str | BoardProfile) -> BoardProfile:
    return profile if isinstance(profile, BoardProfile) else load_profile(profile)


# torch.export keeps process-global dispatch-mode state: two exports in two threads corrupt each other
# ("ProxyTorchDispatchMode slot already occupied"), so builds in one process take turns.
_BUILD_LOCK = threading.Lock()


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


def _compile_model(
    model: str | Path,
    profile: str | BoardProfile,
    options: CompileOptions | None,
    progress: Progress | None,
    timer: KernelTimer | None,
) -> CompileResult:
    prof = _resolve_profile(profile)
    base = options or CompileOptions()
    opts = replace(base, matmul=matmul_route(prof, base))  # resolved (and any fallback logged) once
    say = progress or (lambda msg: log.info("%s", msg))
    start = time.monotonic()
    stages: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        stages[name] = round(time.monotonic() - t0, 3)

    if opts.tune_trials > 0:
        Measure.on(prof, timer)  # a foreign arch with no board to time on fails before any work
    t0 = time.monotonic()
    loaded = load_model(model)
    if loaded.task not in ("sequence-classification", "causal-lm"):
        raise CompileError(
            f"{model}: task {loaded.task} is not compiled yet; only sequence-classification and causal-lm"
        )
    stage("load", t0)
    if loaded.task == "causal-lm":
        if opts.tune_trials > 0:
            raise CompileError("kernel tuning trials are not wired for causal LMs yet; drop --tune-trials")
        return _compile_causal(loaded, prof, opts, say, start, stages)

    tuning = None
    if opts.tune_trials > 0 or opts.use_database:
        tuning = TuningDatabase(opts.database_dir or database_dir_for(prof))
    key = cache_key(_model_digest(loaded.source), prof, opts, tuning.digest() if tuning else "none")
    if opts.use_cache and opts.tune_trials == 0:
        hit = _cache_hit(key, prof, say, start, stages)
        if hit is not None:
            return hit

    t0 = time.monotonic()
    caller_threads = torch.get_num_threads()  # the export's thread count must not leak to the caller
    torch.set_num_threads(max(1, opts.threads))
    try:
        example = example_input(loaded.model, opts.seq_len)
        say(f"exporting {loaded.family} model (seq_len {opts.seq_len}) with torch.export")
        mod = to_relax(loaded.model, example)
    finally:
        torch.set_num_threads(caller_threads)
    stage("export", t0)

    target = tvm_target(prof)
    t0 = time.monotonic()
    mod = prepare(mod, target, matmul=str(opts.matmul))
    stage("lower", t0)
    plan = None
    if tuning is not None and opts.tune_trials > 0:
        t0 = time.monotonic()
        say(f"tuning {opts.tune_trials} trials for {prof.name} into {tuning.work_dir}")
        plan = tuning.tune(mod, target, prof, trials=opts.tune_trials, say=say, timer=timer)
        stage("tune", t0)
        # the database has grown: key the bundle by what it holds now
        key = cache_key(_model_digest(loaded.source), prof, opts, tuning.digest())
        if opts.use_cache:
            hit = _cache_hit(key, prof, say, start, stages)
            if hit is not None:
                return hit
    database = tuning.open() if tuning is not None and tuning.exists() else None
    t0 = time.monotonic()
    mod, lowering = schedule(
        mod, target, database=database, lanes=lanes_of(prof.cpu.simd_width_bytes), threads=opts.kernel_threads
    )
    stage("schedule", t0)
    tuning_info = _tuning_info(opts, tuning, plan, lowering)
    say(describe_tuning(tuning_info))

    t0 = time.monotonic()
    say(f"building for {prof.name} ({prof.arch}, target {target})")
    executable = _build(mod, target)
    stage("build", t0)

    t0 = time.monotonic()
    root = bundles_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        executable.export_library(str(staging / "model.so"), **export_kwargs(prof))
    except CompileError:
        raise
    except Exception as exc:  # the cross toolchain reports through TVM's own errors
        raise CompileError(f"linking model.so for {prof.arch} failed: {exc}") from exc
    stage("link", t0)
    manifest = _manifest_of(loaded.source)
    meta = {
        **_build_metadata(prof, key, loaded, start),
        "tuning": tuning_info,
    }
    bundle = write_bundle(
        staging,
        root,
        input_name=example.name,
        input_array=example.input_ids,
        expected=example.expected,
        manifest=manifest,
        metadata=meta,
    )
    index = _index_path(key)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"bundle": bundle.sha256, "tuning": tuning_info}) + "\n")
    elapsed = time.monotonic() - start
    say(f"bundle {bundle.sha256[:12]} built in {elapsed:.1f} s")
    return CompileResult(bundle, cached=False, seconds=elapsed, stages=stages, tuning=tuning_info)


def _tuning_info(
    opts: CompileOptions, tuning: TuningDatabase | None, plan: Any, lowering: Any
) -> dict[str, Any]:
    """How the bundle's kernels were made: what `hilt report` and the tuner show per bundle."""
    mode = "trials" if opts.tune_trials > 0 else ("db" if tuning is not None else "off")
    info: dict[str, Any] = {
        "mode": mode,
        "lowering": lowering.lowering,
        "matmul": "blas" if lowering.blas_matmuls else "tir",
        "database": str(tuning.work_dir) if tuning is not None else None,
        "records": tuning.num_records() if tuning is not None else 0,
        "timed_on": sorted(tuning.sources()) if tuning is not None else [],
        "trials": opts.tune_trials,
        "tasks": lowering.kernels,
        "scheduled_kernels": lowering.from_database,
        "kernels": lowering.as_dict(),
    }
    if plan is not None:
        info["plan"] = plan.as_dict()
    return info


def _build_metadata(prof: BoardProfile, key: str, loaded: LoadedModel, start: float) -> dict[str, Any]:
    """What every bundle's metadata.json says about its build: versions, target, time, key."""
    return {
        "hilt_version": package_version("hilt"),
        "tvm_version": package_version("apache-tvm"),
        "tvm_ffi_version": package_version("apache-tvm-ffi"),
        "profile": prof.name,
        "target": prof.target.as_tvm(),
        "arch": prof.arch,
        "build_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - start, 3),
        "cache_key": key,
        "model_family": loaded.family,
    }


def _build(mod: Any, target: Any) -> Any:
    """tvm.compile of a module already legalized, fused and scheduled: only the lowering passes run,
    so fusion cannot merge scheduled kernels into new, unscheduled ones."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(m: Any, _ctx: Any) -> Any:
        with target:
            passes = cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target)
            return tvm.transform.Sequential(passes)(m)

    try:
        return tvm.compile(mod, target=target, relax_pipeline=pipeline)
    except Exception as exc:  # TVM raises its own error types
        raise CompileError(f"TVM build failed for {target}: {type(exc).__name__}: {exc}") from exc


def _manifest_of(source: Path) -> dict[str, Any]:
    path = source / "pruning_manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CompileError(f"{path}: not valid JSON ({exc})") from exc


def _causal_lengths(model: torch.nn.Module, opts: CompileOptions) -> tuple[int, int]:
    """(prefill bucket, cache length): the bucket is --seq-len; the cache defaults to 128 more
    positions, within what the model was trained for."""
    cfg = model.config
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    bucket = opts.seq_len
    max_len = opts.cache_len if opts.cache_len is not None else bucket + 128
    if opts.cache_len is None and max_pos is not None:
        max_len = min(max_len, int(max_pos))
    if bucket >= max_len:
        raise CompileError(
            f"--seq-len {bucket} leaves no room to decode in a KV cache of {max_len} positions; "
            "pass a smaller --seq-len or a larger --cache-len"
        )
    return bucket, max_len


def _compile_causal(
    loaded: LoadedModel,
    prof: BoardProfile,
    opts: CompileOptions,
    say: Progress,
    start: float,
    stages: dict[str, float],
) -> CompileResult:
    """A causal LM: one executable with `prefill` and `decode` (KV caches in and out), an example
    prompt, and PyTorch's greedy continuation of it with the logits each token came from."""
    import numpy as np

    from harness.compile.bundle import CausalSpec
    from harness.compile.causal import build_causal, greedy_reference

    bucket, max_len = _causal_lengths(loaded.model, opts)
    tuning = TuningDatabase(opts.database_dir or database_dir_for(prof)) if opts.use_database else None
    digest = tuning.digest() if tuning is not None else "none"
    key = cache_key(_model_digest(loaded.source), prof, opts, f"causal:{bucket}:{max_len}:{digest}")
    if opts.use_cache:
        hit = _cache_hit(key, prof, say, start, stages)
        if hit is not None:
            return hit
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, opts.threads))
    try:
        t0 = time.monotonic()
        prompt_len = min(bucket, 16)
        prompt = example_input(loaded.model, prompt_len).input_ids
        new_tokens = min(16, max_len - prompt_len)
        ids, logits = greedy_reference(loaded.model, prompt, new_tokens)
        stages["reference"] = round(time.monotonic() - t0, 3)
        target = tvm_target(prof)
        say(f"exporting and building {loaded.family} prefill ({bucket} tokens) + decode for {prof.name}")
        t0 = time.monotonic()
        database = tuning.open() if tuning is not None and tuning.exists() else None
        build = build_causal(
            loaded.model,
            target,
            bucket=bucket,
            max_len=max_len,
            lanes=lanes_of(prof.cpu.simd_width_bytes),
            threads=opts.kernel_threads,
            database=database,
        )
        stages["build"] = round(time.monotonic() - t0, 3)
    finally:
        torch.set_num_threads(caller_threads)
    t0 = time.monotonic()
    root = bundles_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        build.executable.export_library(str(staging / "model.so"), **export_kwargs(prof))
    except Exception as exc:  # the cross toolchain reports through TVM's own errors
        raise CompileError(f"linking model.so for {prof.arch} failed: {exc}") from exc
    stages["link"] = round(time.monotonic() - t0, 3)
    causal = CausalSpec(
        bucket=bucket,
        max_len=max_len,
        cache=[(kv, hd) for kv, hd in build.layout.layers],
        vocab=int(loaded.model.config.vocab_size),
        expected_ids=ids,
    )
    meta = {
        **_build_metadata(prof, key, loaded, start),
        "task": "causal-lm",
        "causal": causal.model_dump(),
        "tuning": {
            "mode": "db" if database is not None else "off",
            "database": str(tuning.work_dir) if tuning is not None else None,
            "trials": 0,
            "lowering": build.lowering.lowering if build.lowering else "stock",
            "kernels": build.lowering.as_dict() if build.lowering else {},
        },
    }
    bundle = write_bundle(
        staging,
        root,
        input_name="input_ids",
        input_array=prompt,
        expected=np.stack(logits),
        manifest=_manifest_of(loaded.source),
        metadata=meta,
    )
    index = _index_path(key)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"bundle": bundle.sha256, "tuning": meta["tuning"]}) + "\n")
    elapsed = time.monotonic() - start
    say(f"causal-LM bundle {bundle.sha256[:12]} built in {elapsed:.1f} s")
    return CompileResult(bundle, cached=False, seconds=elapsed, stages=stages, tuning=meta["tuning"])
