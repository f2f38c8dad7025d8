"""Build libtvm_ffi + libtvm_runtime + hilt-runner for an arch with CMake, once per (arch, versions).

Sources: the C++ that ships inside the installed apache-tvm-ffi and apache-tvm wheels, plus hilt's
runner and compat headers in device_agents/runner. Results live in cache_root()/runtime/<arch>-<key>/,
where key hashes everything that determines the binaries, so a build is never repeated.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.cache import cache_root, sha256_file
from harness.errors import CompileError
from harness.runtime.blas import find_static_blas
from harness.runtime.toolchains import ARCHES, Toolchain, require_emulator, require_tools, toolchain_for
from harness.versions import package_version
from hilt_base.hashing import tree_hash

log = logging.getLogger(__name__)

RUNNER_SOURCE = Path(__file__).resolve().parents[2] / "device_agents" / "runner"
RUNTIME_FILES = ("hilt-runner", "libtvm_runtime.so", "libtvm_ffi.so")
BLAS_FILE = "libhilt_blas.so"  # present when the arch's static OpenBLAS was found at build time
RECORD_NAME = "runtime.json"
RECORD_VERSION = 1
MIN_CMAKE = (3, 26)
# What strip does to each shipped file: the static symbol tables go (`.symtab`, `.strtab`; a Release
# build has no debug sections), the dynamic symbols the runner, dlopen and bundles resolve stay. The
# board never reads the rest: 13-16 % of the runner and TVM libraries, 2-6 % of libhilt_blas.so (README).
STRIP_ARGS = ("--strip-unneeded",)

__all__ = ["ARCHES", "RuntimePackage", "build_runtime", "runner_command", "runtime_dir"]


@dataclass(frozen=True)
class RuntimePackage:
    """A built board runtime: where it is, what is in it (name -> sha256) and what built it."""

    arch: str
    directory: Path
    files: dict[str, str]
    versions: dict[str, str]
    sha256: str
    build_seconds: float | None = None  # None when it came from the cache
    version: int = RECORD_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def runner(self) -> Path:
        return self.directory / "hilt-runner"

    @property
    def has_blas(self) -> bool:
        """Whether bundles lowered with the BLAS matmul route run on this runtime."""
        return BLAS_FILE in self.files

    def to_json(self) -> str:
        data = asdict(self)
        data["directory"] = str(self.directory)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def load(cls, directory: Path) -> RuntimePackage:
        """Read runtime.json and check every file still has its recorded hash."""
        record = directory / RECORD_NAME
        try:
            data = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CompileError(f"runtime record {record} is unreadable ({exc}); rebuild (--force)") from exc
        if data.get("version") != RECORD_VERSION:
            got = data.get("version")
            raise CompileError(f"runtime record {record} has version {got}, want {RECORD_VERSION}")
        for name, digest in data["files"].items():
            path = directory / name
            if not path.is_file() or sha256_file(path) != digest:
                raise CompileError(f"runtime file {path} is missing or changed; rebuild with --force")
        return cls(
            arch=data["arch"],
            directory=directory,
            files=dict(data["files"]),
            versions=dict(data["versions"]),
            sha256=data["sha256"],
            build_seconds=None,
            extra=dict(data.get("extra", {})),
        )


# the runtime's tree hash is the bundle's: one definition, in the agent's wire module
files_digest = tree_hash


def _site_packages() -> tuple[Path, Path]:
    """Install roots of tvm_ffi and tvm, located without importing tvm (slow, and not needed)."""
    import importlib.util

    roots = []
    for name in ("tvm_ffi", "tvm"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise CompileError(f"python package {name} is not installed; run the project's set-up")
        roots.append(Path(next(iter(spec.submodule_search_locations))))
    ffi_root, tvm_root = roots
    if not (ffi_root / "src" / "ffi" / "object.cc").is_file():
        raise CompileError(f"{ffi_root} lacks the tvm-ffi C++ sources (src/ffi); reinstall apache-tvm-ffi")
    if not (tvm_root / "src" / "runtime" / "vm" / "vm.cc").is_file():
        raise CompileError(f"{tvm_root} lacks the TVM runtime sources (src/runtime); reinstall apache-tvm")
    return ffi_root, tvm_root


def _cmake() -> str:
    """A cmake >= 3.26: the venv's (pip `cmake`) first, then PATH."""
    candidates = [Path(sys.executable).parent / "cmake", shutil.which("cmake")]
    for cand in candidates:
        if not cand or not Path(cand).exists():
            continue
        out = subprocess.run([str(cand), "--version"], capture_output=True, text=True, check=False).stdout
        try:
            version = tuple(int(p) for p in out.split()[2].split(".")[:2])
        except (IndexError, ValueError):
            continue
        if version >= MIN_CMAKE:
            return str(cand)
    raise CompileError("cmake >= 3.26 not found; install it with `pip install cmake` (pinned in pyproject)")


def _compiler_version(tc: Toolchain) -> str:
    out = subprocess.run([tc.cxx, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def _source_digest() -> str:
    """Hash of hilt's runner sources (CMakeLists, runner, compat headers)."""
    h = hashlib.sha256()
    for path in sorted(RUNNER_SOURCE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(RUNNER_SOURCE)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _versions(tc: Toolchain) -> dict[str, str]:
    return {
        "hilt": package_version("hilt"),
        "tvm": package_version("apache-tvm"),
        "tvm-ffi": package_version("apache-tvm-ffi"),
        "compiler": _compiler_version(tc),
        "runner_source": _source_digest()[:16],
        "blas": blas.label if (blas := find_static_blas(tc.arch)) else "none",
        "strip": " ".join(STRIP_ARGS),  # in the key: a runtime built before stripping is rebuilt
    }


def runtime_dir(arch: str) -> Path:
    """Where the runtime for `arch` with the current sources and versions lives (built or not)."""
    tc = toolchain_for(arch)
    key = hashlib.sha256(json.dumps(_versions(tc), sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "runtime" / f"{arch}-{key}"


def _toolchain_file(tc: Toolchain, path: Path) -> Path:
    processor = {"aarch64": "aarch64", "riscv64": "riscv64", "x86_64": "x86_64"}[tc.arch]
    path.write_text(
        "set(CMAKE_SYSTEM_NAME Linux)\n"
        f"set(CMAKE_SYSTEM_PROCESSOR {processor})\n"
        f"set(CMAKE_C_COMPILER {tc.cc})\n"
        f"set(CMAKE_CXX_COMPILER {tc.cxx})\n"
        "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)\n"
        "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)\n"
        "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)\n"
    )
    return path


def _run_logged(cmd: list[str], logfile: Path, what: str) -> None:
    with logfile.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
        raise CompileError(f"{what} failed (exit {proc.returncode}); full log {logfile}; last lines:\n{tail}")


def _build(tc: Toolchain, out_dir: Path, versions: dict[str, str], jobs: int) -> float:
    ffi_root, tvm_root = _site_packages()
    cmake = _cmake()
    require_tools(tc)
    # A persistent build tree per arch: a changed runner recompiles in seconds, not minutes.
    work = out_dir.parent / f"cmake-{tc.arch}"
    if (work / "CMakeCache.txt").is_file() and _cache_source(work) != str(RUNNER_SOURCE):
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)
    logfile = out_dir.parent / f"build-{tc.arch}.log"
    logfile.write_text("")
    start = time.monotonic()
    try:
        configure = [
            cmake,
            "-S",
            str(RUNNER_SOURCE),
            "-B",
            str(work),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DTVM_FFI_ROOT={ffi_root}",
            f"-DTVM_ROOT={tvm_root}",
            f"-DHILT_RUNNER_VERSION={versions['hilt']}",
            f"-DHILT_TVM_VERSION={versions['tvm']}",
            f"-DHILT_EXTRA_LIBS={';'.join(tc.extra_libs)}",
        ]
        blas = find_static_blas(tc.arch)
        if blas is not None:
            configure += [f"-DHILT_BLAS_LIBRARY={blas.library}", f"-DHILT_BLAS_INCLUDE={blas.include}"]
        else:  # clear what a kept build tree may remember
            configure += ["-DHILT_BLAS_LIBRARY=", "-DHILT_BLAS_INCLUDE="]
            log.info("no static OpenBLAS for %s: the runtime serves the TensorIR matmul route only", tc.arch)
        if not tc.native:
            toolchain_file = _toolchain_file(tc, work.parent / f"{work.name}.cmake")
            configure.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain_file}")
        log.info("configuring the %s runtime in %s", tc.arch, work)
        try:
            _run_logged(configure, logfile, f"cmake configure for {tc.arch}")
        except CompileError:
            log.warning("configure failed in the kept build tree; retrying from scratch")
            shutil.rmtree(work)
            work.mkdir()
            _run_logged(configure, logfile, f"cmake configure for {tc.arch}")
        log.info("building the %s runtime with %d jobs (log: %s)", tc.arch, jobs, logfile)
        _run_logged([cmake, "--build", str(work), "-j", str(jobs)], logfile, f"runtime build for {tc.arch}")
        staging = Path(tempfile.mkdtemp(prefix=f".{tc.arch}-", dir=out_dir.parent))
        names = [*RUNTIME_FILES, *([BLAS_FILE] if blas is not None else [])]
        for name in names:
            shutil.copy2(work / name, staging / name)
        strip_files(tc, [staging / name for name in names], logfile)
        elapsed = time.monotonic() - start
        files = {name: sha256_file(staging / name) for name in names}
        pkg = RuntimePackage(
            arch=tc.arch,
            directory=out_dir,
            files=files,
            versions=versions,
            sha256=files_digest(files),
            build_seconds=elapsed,
        )
        (staging / RECORD_NAME).write_text(pkg.to_json())
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
        return elapsed
    except CompileError:
        shutil.rmtree(work, ignore_errors=True)  # next attempt starts clean
        raise


def strip_files(tc: Toolchain, paths: list[Path], logfile: Path) -> None:
    """Strip the shipped copies in place with the arch's own strip (the build tree keeps its files)."""
    _run_logged([tc.strip, *STRIP_ARGS, *map(str, paths)], logfile, f"strip for {tc.arch}")


def _cache_source(work: Path) -> str:
    """The source directory a kept CMake build tree was configured for."""
    for line in (work / "CMakeCache.txt").read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            return line.split("=", 1)[1]
    return ""


def build_runtime(arch: str, *, force: bool = False, jobs: int | None = None) -> RuntimePackage:
    """The runtime for `arch`, from the cache or built now (build_seconds says which)."""
    tc = toolchain_for(arch)
    versions = _versions(tc)
    out_dir = runtime_dir(arch)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same runtime
        if not force and (out_dir / RECORD_NAME).is_file():
            try:
                pkg = RuntimePackage.load(out_dir)
                log.info("runtime for %s from cache: %s", arch, out_dir)
                return pkg
            except CompileError as exc:
                log.warning("cached runtime unusable, rebuilding: %s", exc)
        elapsed = _build(tc, out_dir, versions, jobs or os.cpu_count() or 1)
        log.info("built the %s runtime in %.1f s", arch, elapsed)
        pkg = RuntimePackage.load(out_dir)
        return RuntimePackage(**{**pkg.__dict__, "build_seconds": elapsed})


def runner_command(pkg: RuntimePackage, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv (with qemu-user for a foreign arch) and environment that run hilt-runner here."""
    tc = toolchain_for(pkg.arch)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(pkg.directory)
    return [*require_emulator(tc), str(pkg.runner), *args], env
