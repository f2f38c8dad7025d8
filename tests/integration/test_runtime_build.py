"""Board runtime builds (cached per arch) and hilt-runner's self-test, natively and under qemu-user."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.errors import CompileError
from harness.runtime import ARCHES, RuntimePackage, build_runtime, runner_command
from harness.runtime.blas import find_static_blas
from harness.runtime.toolchains import host_arch, toolchain_for


def _report(request: pytest.FixtureRequest, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="module", params=ARCHES)
def runtime(request: pytest.FixtureRequest) -> RuntimePackage:
    arch = request.param
    tc = toolchain_for(arch)
    if not tc.native and (shutil.which(tc.cxx) is None or shutil.which(tc.emulator[0]) is None):
        pytest.skip(f"{tc.cxx} or {tc.emulator[0]} not installed")
    pkg = build_runtime(arch)
    how = f"built in {pkg.build_seconds:.1f} s" if pkg.build_seconds is not None else "from cache"
    _report(request, f"[hilt] {arch} runtime {how}: {pkg.directory}")
    return pkg


def _run(pkg: RuntimePackage, args: list[str], timeout: float = 300) -> tuple[int, dict]:
    argv, env = runner_command(pkg, args)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"want exactly one JSON line, got {proc.stdout!r} / {proc.stderr!r}"
    return proc.returncode, json.loads(lines[0])


def _reference_checksum() -> float:
    n = 128
    i = np.arange(n * n)
    a = (((i % 17) - 8) / 8.0).astype(np.float32).reshape(n, n)
    b = (((i % 13) - 6) / 6.0).astype(np.float32).reshape(n, n)
    return float((a.astype(np.float64) @ b.astype(np.float64)).sum())


def test_runtime_contents(runtime: RuntimePackage) -> None:
    blas = find_static_blas(runtime.arch)  # libhilt_blas where this host has OpenBLAS for the arch
    expected = {"hilt-runner", "libtvm_runtime.so", "libtvm_ffi.so"} | (
        {"libhilt_blas.so"} if blas else set()
    )
    assert set(runtime.files) == expected and runtime.has_blas == (blas is not None)
    assert runtime.versions["blas"] == (blas.label if blas else "none")
    assert runtime.versions["tvm"] and runtime.versions["tvm-ffi"]
    again = build_runtime(runtime.arch)  # second call: the cache, no rebuild
    assert again.build_seconds is None and again.sha256 == runtime.sha256
    machine = {"x86_64": "X86-64", "aarch64": "AArch64", "riscv64": "RISC-V"}[runtime.arch]
    for name in expected:
        out = subprocess.run(
            ["readelf", "-h", str(runtime.directory / name)], capture_output=True, text=True, check=True
        )
        assert machine in out.stdout, name
        sections = subprocess.run(
            ["readelf", "-S", "-W", str(runtime.directory / name)], capture_output=True, text=True, check=True
        ).stdout
        assert ".dynsym" in sections and ".symtab" not in sections, f"{name} is not stripped"
    assert runtime.versions["strip"] == "--strip-unneeded"


def test_selftest_prints_one_json_line(runtime: RuntimePackage) -> None:
    rc, out = _run(runtime, ["--selftest", "--warmup", "2", "--min-iters", "7", "--min-seconds", "0"])
    assert rc == 0 and out["ok"] is True
    assert set(out) == {
        "ok",
        "runner_version",
        "tvm_version",
        "warmup",
        "samples_ns",
        "peak_rss_kb",
        "output_checksum",
        "output_shape",
        "threads",
    }
    assert out["warmup"] == 2 and len(out["samples_ns"]) == 7
    assert all(isinstance(s, int) and s > 0 for s in out["samples_ns"])
    assert out["output_shape"] == [128, 128] and out["peak_rss_kb"] > 0
    assert out["output_checksum"] == pytest.approx(_reference_checksum(), rel=1e-4)


def test_selftest_runs_until_min_seconds() -> None:
    pkg = build_runtime(host_arch())
    rc, out = _run(pkg, ["--selftest", "--warmup", "0", "--min-iters", "1", "--min-seconds", "0.2"])
    assert rc == 0
    assert sum(out["samples_ns"]) >= 0.15e9  # the loop checks wall time, samples only the calls
    assert len(out["samples_ns"]) > 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--warmup", "1"], "exactly one of --bundle DIR or --selftest"),
        (["--selftest", "--bogus"], "unknown argument '--bogus'"),
        (["--selftest", "--min-iters", "x"], "--min-iters needs a non-negative integer"),
        (["--selftest", "--bundle", "/x"], "exactly one of"),
        (["--selftest", "--arg", "float32:4"], "--arg belongs to --time-kernel"),
        (["--time-kernel", "/k.so", "--selftest"], "takes no --bundle, --selftest or --generate"),
        (["--time-kernel", "/k.so", "--arg", "float32"], "is not DTYPE:SHAPE"),
        (["--time-kernel", "/k.so", "--arg", "nonsense:4"], "unknown dtype"),
        (["--time-kernel", "/k.so", "--arg", "float32:4xq"], "needs a non-negative integer"),
    ],
)
def test_bad_command_line(args: list[str], match: str) -> None:
    rc, out = _run(build_runtime(host_arch()), args)
    assert rc == 1 and out["ok"] is False and match in out["error"]["message"]


def test_tampered_runtime_is_detected(tmp_path: Path) -> None:
    pkg = build_runtime(host_arch())
    copy = tmp_path / "rt"
    shutil.copytree(pkg.directory, copy)
    assert RuntimePackage.load(copy).sha256 == pkg.sha256
    (copy / "libtvm_ffi.so").write_bytes(b"broken")
    with pytest.raises(CompileError, match="libtvm_ffi.so is missing or changed"):
        RuntimePackage.load(copy)
    (copy / "runtime.json").write_text("{")
    with pytest.raises(CompileError, match="unreadable"):
        RuntimePackage.load(copy)
