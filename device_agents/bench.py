"""Measure on a board: own it through the board pool, ship the runtime and a bundle (only what the
agent lacks), run, record.

Also `check_boards`: hello to every farm board in parallel.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agents.agent import wire
from device_agents.inventory import Board, Farm
from device_agents.pool import BoardPool, Held, busy_message
from device_agents.records import LineQuality, MeasurementRecord
from device_agents.transports import Transport, open_transport
from harness.compile.bundle import Bundle, load_bundle
from harness.errors import ArtifactError, ConfigError, HiltError
from harness.runtime import BLAS_FILE, RuntimePackage, build_runtime
from hilt_base import hashing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateOptions:
    """`hilt-runner --generate`: a prompt of `prompt_tokens` (None: the bundle's example prompt),
    then `new_tokens` greedy tokens; time to first token and every decode step are recorded."""

    new_tokens: int = 16
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class BenchOptions:
    warmup: int = 5
    min_iters: int = 20
    min_seconds: float = 1.0
    threads: int = 1
    cores: tuple[int, ...] = ()
    idle_seconds: float = 0.5
    timeout_s: float = 300.0
    power: bool = True
    meter: dict[str, Any] | None = None
    holder: str = ""  # who the board's bench lock names while this runs; "" = user@host (pid)
    wait_s: float = 0.0  # board busy: wait up to this long for its bench lock (0: fail at once)
    generate: GenerateOptions | None = None  # causal-LM bundles: greedy generation instead of one pass


def as_bundle(bundle: Path | Bundle) -> Bundle:
    """A bundle verified once: one the caller already holds (e.g. from its compile) is used as it is."""
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


def bundle_tree(bundle: Path | Bundle) -> tuple[str, dict[str, Path]]:
    """A verified bundle's hash and its files (those `metadata.json` lists, plus metadata.json)."""
    bundle = as_bundle(bundle)
    files = {name: bundle.directory / name for name in sorted(bundle.metadata.files)}
    files["metadata.json"] = bundle.directory / "metadata.json"
    return bundle.sha256, files


def ship_tree(transport: Transport, kind: str, files: dict[str, Path], tree: str, **extra: Any) -> str:
    """Upload the files the agent lacks, then have it assemble the tree; returns the tree hash.

    Files are content-addressed on the board: a candidate bundle of a study that shares its
    runtime-independent files (inputs, weights, ...) with one already sent ships only what differs."""
    if tree in transport.request("has", {"hashes": [tree]}, timeout=10.0)["held"]:
        return tree
    hashes = {n: hashing.sha256_file(str(p)) for n, p in files.items()}
    held = set(transport.request("has", {"hashes": sorted(set(hashes.values()))}, timeout=30.0)["held"])
    known = len(held)
    for name, path in files.items():
        if hashes[name] not in held:
            log.info("board %s: uploading %s (%d bytes)", transport.name, name, path.stat().st_size)
            transport.upload(path)
            held.add(hashes[name])  # two names with one content: sent once
    log.info("board %s: %s %s: %d files already there, %d sent", transport.name, kind, tree[:12], known,
             len(held) - known)  # fmt: skip
    transport.request("install", {"kind": kind, "hash": tree, "files": hashes, **extra}, timeout=120.0)
    return tree


def runtime_files(arch: str, *, blas: bool = True) -> tuple[str, dict[str, Path], dict[str, Any]]:
    """The board runtime (hilt-runner + TVM runtime libraries) for an arch, built or cached.

    `blas=False` leaves libhilt_blas out: the runner loads it only for a blas-route bundle, and it
    is most of the runtime's bytes (OpenBLAS with kernels for every core of the arch)."""
    return _runtime_tree(build_runtime(arch), blas)


def _runtime_tree(pkg: RuntimePackage, blas: bool) -> tuple[str, dict[str, Path], dict[str, Any]]:
    arch = pkg.arch
    directory = Path(pkg.directory)
    names = sorted(n for n in pkg.files if blas or n != BLAS_FILE)
    files = {name: directory / name for name in names}
    if wire.RUNNER_NAME not in files:
        raise ArtifactError(f"runtime for {arch} in {directory} has no {wire.RUNNER_NAME}")
    tree = hashing.tree_hash({n: pkg.files[n] for n in names})
    versions = {"arch": arch, **{str(k): str(v) for k, v in dict(pkg.versions).items()}}
    if not blas and BLAS_FILE in pkg.files:
        versions["blas"] = f"not shipped ({BLAS_FILE} goes with the first blas-route bundle)"
    return tree, files, versions


def ship_runtime(
    transport: Transport, arch: str, bundle: Path | Bundle | None
) -> tuple[str, dict[str, Path]]:
    """Ship the runtime a board needs for `bundle` (None: the self-test): libhilt_blas only with a
    blas-route bundle, or where the full runtime is installed already; a board that gets its first
    blas bundle later receives just that file (the others are on the board by content). A blas
    bundle for a runtime built without the library is refused before anything is sent."""
    pkg = build_runtime(arch)
    tree, files, versions = _runtime_tree(pkg, blas=True)
    if bundle is not None:
        _check_runtime_serves(bundle, files, arch)
    if not _uses_blas(bundle) and BLAS_FILE in files:
        if tree not in transport.request("has", {"hashes": [tree]}, timeout=10.0)["held"]:
            tree, files, versions = _runtime_tree(pkg, blas=False)
    ship_tree(transport, "runtime", files, tree, versions=versions)
    return tree, files


def _uses_blas(bundle: Path | Bundle | None) -> bool:
    """Whether a bundle was lowered on the blas route (its matmuls call libhilt_blas)."""
    return bundle is not None and as_bundle(bundle).metadata.tuning.matmul == "blas"


def _check_runtime_serves(bundle: Path | Bundle, runtime: dict[str, Path], arch: str) -> None:
    """A bundle lowered on the blas route calls libhilt_blas: refuse before shipping to a runtime
    built without it (this host had no static OpenBLAS for the arch)."""
    bundle = as_bundle(bundle)
    if bundle.metadata.tuning.matmul == "blas" and BLAS_FILE not in runtime:
        raise ArtifactError(
            f"bundle {bundle.directory.name} uses the blas matmul route but the {arch} runtime has no "
            f"{BLAS_FILE}; provide OpenBLAS for {arch} (scripts/system-deps.sh) and rebuild it, or "
            "recompile with --matmul tir"
        )


def run_bench(
    transport: Transport, board: Board, bundle: Path | Bundle | None, options: BenchOptions
) -> MeasurementRecord:
    """On an open transport: ship what is missing, bench a bundle (or the runner's self-test), record."""
    hello = transport.hello
    arch = str(hello.get("arch"))
    if arch != board.profile.arch:
        raise ConfigError(
            f"board {board.name} reports arch {arch} but its profile '{board.profile.name}' says "
            f"{board.profile.arch}; fix the farm file"
        )
    if bundle is not None:
        bundle = as_bundle(bundle)  # verified once, for the runtime check and the upload
    rt_tree, _ = ship_runtime(transport, arch, bundle)
    args: dict[str, Any] = {
        "runtime": rt_tree,
        "warmup": options.warmup,
        "min_iters": options.min_iters,
        "min_seconds": options.min_seconds,
        "threads": options.threads,
        "cores": list(options.cores),
        "idle_seconds": options.idle_seconds,
        "power": options.power,
        "power_model": board.profile.power.model_dump(),
    }
    if options.meter:
        args["meter"] = options.meter
    if options.generate is not None:
        args["generate"] = {
            "new_tokens": options.generate.new_tokens,
            "prompt_tokens": options.generate.prompt_tokens,
        }
    args["holder"] = options.holder or default_holder()
    args["wait_s"] = options.wait_s
    weights = "fp32"
    if bundle is None:
        args["selftest"] = True
        artifact = "selftest"
    else:
        held = as_bundle(bundle)  # verified once
        weights = held.metadata.weights.format
        artifact, files = bundle_tree(held)
        ship_tree(transport, "bundle", files, artifact)
        args["bundle"] = artifact
    result = transport.request("bench", args, timeout=options.timeout_s + options.wait_s)
    record = MeasurementRecord.from_agent(
        result,
        board=board.name,
        profile=board.profile.name,
        transport=transport.kind,
        artifact=artifact,
        runtime=rt_tree,
        hello=hello,
    )
    line = LineQuality.model_validate(transport.line.as_dict()) if transport.framed else None
    return record.model_copy(update={"emulated": board.profile.emulated, "line": line, "weights": weights})


def bench_any(
    boards: list[Board],
    bundle: Path | None,
    options: BenchOptions | None = None,
    *,
    pool: BoardPool | None = None,
    wait_s: float = 0.0,
) -> MeasurementRecord:
    """Own the first of `boards` whose machine is free (waiting up to `wait_s`), measure, release.

    A bundle of None runs the runner's self-test. The record says which machine was held and how
    long the measurement waited for it; BoardBusyError when none came free.
    """
    pool = pool or BoardPool()
    with pool.hold(boards, wait_s) as held:
        return measure_held(held, bundle, options)


def measure_held(
    held: Held, bundle: Path | Bundle | None, options: BenchOptions | None = None
) -> MeasurementRecord:
    """Measure on a board the caller owns through the pool: open, bench, close."""
    with open_transport(held.board) as transport:
        record = run_bench(transport, held.board, bundle, options or BenchOptions())
    return record.model_copy(update={"machine": held.board.machine, "pool_wait_s": held.waited_s})


def bench_board(
    board: Board,
    bundle: Path | None,
    options: BenchOptions | None = None,
    *,
    pool: BoardPool | None = None,
    wait_s: float = 0.0,
) -> MeasurementRecord:
    """Own one board through the pool, measure one bundle, release."""
    return bench_any([board], bundle, options, pool=pool, wait_s=wait_s)


def default_holder() -> str:
    """How a busy board names this process: user@host (pid N)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


@dataclass
class BoardStatus:
    board: str
    profile: str
    transport: str
    reachable: bool
    hello: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    busy: str = ""  # who measures on it now: the pool's lease on its machine, or the agent's lock
    line: dict[str, Any] = field(default_factory=dict)  # serial: the transport's line counters


def check_board(board: Board, pool: BoardPool | None = None) -> BoardStatus:
    """Hello (which runs no measurement, so it needs no lease) plus who holds the board, if anyone."""
    status = BoardStatus(board.name, board.profile.name, board.transport.kind, False)
    holder = pool.leases.holder_of(board.machine) if pool else None
    if holder is not None:
        status.busy = busy_message(board, holder)
    try:
        with open_transport(board) as transport:
            status.hello = dict(transport.hello)
            status.reachable = True
            status.line = transport.line.as_dict() if transport.framed else {}
    except HiltError as exc:
        status.error = str(exc)
    lock = status.hello.get("bench_lock") or {}
    if not status.busy and lock.get("holder"):
        status.busy = (
            f"board {board.name} busy: held by {lock['holder']} (agent lock) since {lock.get('since')}"
        )
    return status


def check_boards(farm: Farm, workers: int = 8, pool: BoardPool | None = None) -> list[BoardStatus]:
    """Hello to each board in parallel; one status per board, in farm order."""
    if not farm.boards:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(farm.boards))) as threads:
        return list(threads.map(lambda b: check_board(b, pool), farm.boards))
