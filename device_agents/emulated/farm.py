"""`hilt farm up/status/down`: bring emulated boards up from cached images, report them, tear them down.

`up` is idempotent (running boards are left alone, dead ones are cleaned and restarted); `down`
stops only what the state file says this farm started and unmounts everything it mounted.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FarmError, HiltError
from harness.runtime import build_runtime
from hilt_base import hashing
from profiles.schema import load_profile

from .board import RuntimeFiles, free_port, start_user_board, stop_board
from .farmfile import write_farm_file
from .host import apt_mirror, ensure_binfmt, require_root, require_tools
from .paths import FarmPaths
from .rootfs import ProgressFn, RootfsImage, ensure_image, file_lock, suite_for
from .state import BoardState, FarmState, load_state, save_state
from .system import ensure_system_image, power_cycle, require_system, start_system_board

log = logging.getLogger(__name__)

ARCHES = ("aarch64", "riscv64")
PROFILES = {"aarch64": "qemu-aarch64", "riscv64": "qemu-riscv64"}
SHORT = {"aarch64": "a64", "riscv64": "rv64"}


@dataclass(frozen=True)
class UpResult:
    """What `up` did: the whole farm now, and which boards this call started (empty: a no-op)."""

    state: FarmState
    started: list[str]


@dataclass(frozen=True)
class BoardStatus:
    name: str
    arch: str
    mode: str
    ssh_port: int
    serial_host: str
    running: bool
    processes: dict[str, bool]
    runtime: str | None


def board_name(arch: str, index: int, mode: str = "user") -> str:
    return f"qemu-{SHORT[arch]}-{'vm-' if mode == 'system' else ''}{index}"


def parse_arches(text: str) -> list[str]:
    arches = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in arches if a not in ARCHES]
    if bad or not arches:
        raise FarmError(f"unknown arch {', '.join(bad) or '(none)'}; choose from {','.join(ARCHES)}")
    return list(dict.fromkeys(arches))


def _runtime_for(arch: str) -> RuntimeFiles:
    """The board runtime from the compiler side (built or cached), described as the agent stores it."""
    try:
        package = build_runtime(arch)
    except HiltError as exc:
        raise FarmError(
            f"cannot build the {arch} board runtime ({exc}); fix that or pass --no-runtime"
        ) from None
    files = dict(package.files)
    # the same tree hash and versions record that device_agents.bench ships, so it finds them installed
    versions = {"arch": arch, **{str(k): str(v) for k, v in dict(package.versions).items()}}
    return RuntimeFiles(Path(package.directory), files, hashing.tree_hash(files), versions)


def _prepare(
    arches: list[str], paths: FarmPaths, mirror: str, with_runtime: bool, progress: ProgressFn | None
) -> tuple[dict[str, RootfsImage], dict[str, RuntimeFiles | None]]:
    """Images and board runtimes for every arch, side by side: on a cold cache the debootstraps
    (mostly download and dpkg waits) overlap the runtime cross-builds."""
    for arch in arches:
        ensure_binfmt(arch)
    with ThreadPoolExecutor(max_workers=2 * len(arches)) as pool:
        images = {arch: pool.submit(ensure_image, paths.images, arch, mirror, progress) for arch in arches}
        runtimes = {arch: pool.submit(_runtime_for, arch) for arch in arches if with_runtime}
        return (
            {arch: future.result() for arch, future in images.items()},
            {arch: runtimes[arch].result() if arch in runtimes else None for arch in arches},
        )


def up(
    arches: list[str],
    mode: str = "user",
    paths: FarmPaths | None = None,
    count: int = 1,
    mirror: str | None = None,
    with_runtime: bool = True,
    progress: ProgressFn | None = None,
) -> UpResult:
    """Build (once) and start `count` boards per arch; boards already running stay as they are."""
    if mode not in ("user", "system"):
        raise FarmError(f"unknown mode '{mode}'; choose user or system")
    if count < 1:
        raise FarmError("--count must be at least 1")
    for arch in arches:
        suite_for(arch)
        if mode == "system":
            require_system(arch)
    require_root()
    require_tools()
    paths = paths or FarmPaths.default()
    with file_lock(paths.lock_file):
        state = load_state(paths.state_file)
        wanted = [(arch, board_name(arch, i, mode)) for arch in arches for i in range(count)]
        todo = []
        for arch, name in wanted:
            existing = state.board(name)
            if existing is not None and all(p.alive() for p in existing.processes):
                log.info("board %s already running", name)
                continue
            if existing is not None:
                log.warning("board %s is partly down; restarting it", name)
                stop_board(existing)
                state.boards.remove(existing)
                save_state(paths.state_file, state)
            todo.append((arch, name))
        if todo:
            source = mirror or apt_mirror()
            images, runtimes = _prepare(sorted({a for a, _ in todo}), paths, source, with_runtime, progress)
            for arch, name in todo:
                runtime = runtimes[arch]
                start = load_profile(PROFILES[arch]).transport.port or 2222
                port = free_port(start, {b.ssh_port for b in state.boards})
                if mode == "system":
                    image = ensure_system_image(paths.images, images[arch])
                    start_board = start_system_board
                else:
                    image, start_board = images[arch], start_user_board
                board = start_board(name, PROFILES[arch], image, paths.board_dir(name), port, runtime)
                state.boards.append(board)
                save_state(paths.state_file, state)
        write_farm_file(paths.farm_file, state.boards)
        return UpResult(state, [name for _, name in todo])


def status(paths: FarmPaths | None = None) -> list[BoardStatus]:
    paths = paths or FarmPaths.default()
    out = []
    for board in load_state(paths.state_file).boards:
        procs = {p.role: p.alive() for p in board.processes}
        out.append(
            BoardStatus(
                name=board.name,
                arch=board.arch,
                mode=board.mode,
                ssh_port=board.ssh_port,
                serial_host=board.serial_host,
                running=bool(procs) and all(procs.values()),
                processes=procs,
                runtime=board.runtime_sha256,
            )
        )
    return out


def down(paths: FarmPaths | None = None, names: list[str] | None = None) -> list[str]:
    """Stop the farm's boards (or the named ones); returns the names stopped."""
    paths = paths or FarmPaths.default()
    if not paths.state_file.exists():
        return []
    require_root()
    with file_lock(paths.lock_file):
        state = load_state(paths.state_file)
        chosen = [b for b in state.boards if names is None or b.name in names]
        unknown = sorted(set(names or []) - {b.name for b in state.boards})
        if unknown:
            raise FarmError(f"no farm board named {', '.join(unknown)} (running: {_names(state.boards)})")
        stopped = []
        for board in chosen:
            stop_board(board)
            state.boards.remove(board)
            save_state(paths.state_file, state)
            stopped.append(board.name)
        if state.boards:
            write_farm_file(paths.farm_file, state.boards)
        else:
            paths.state_file.unlink(missing_ok=True)
            paths.farm_file.unlink(missing_ok=True)
            boards_dir = paths.state / "boards"
            if boards_dir.is_dir() and not any(boards_dir.iterdir()):
                boards_dir.rmdir()
        return stopped


def _names(boards: list[BoardState]) -> str:
    return ", ".join(b.name for b in boards) or "none"


def reboot(name: str, paths: FarmPaths | None = None) -> float:
    """Power-cycle a system-mode board and wait until it answers SSH again; returns the seconds taken."""
    paths = paths or FarmPaths.default()
    require_root()
    with file_lock(paths.lock_file):
        state = load_state(paths.state_file)
        board = state.board(name)
        if board is None:
            raise FarmError(f"no farm board named {name} (running: {_names(state.boards)})")
        return power_cycle(board)
