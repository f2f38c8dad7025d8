"""libhilt_blas goes only to boards that need it: the runner loads it only for a blas-route bundle,
and it is most of a runtime's bytes. Against the real agent (local transport); the runtime and the
bundles' routes are stand-ins, so what is counted is what `ship_runtime` decides to send."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from device_agents import bench
from device_agents.transports.local import LocalTransport
from harness.errors import ArtifactError
from harness.runtime import BLAS_FILE, RuntimePackage
from hilt_base import hashing


def _runtime(directory: Path, blas: bool) -> RuntimePackage:
    directory.mkdir()
    sizes = {"hilt-runner": 3_000, "libtvm_runtime.so": 9_000, "libtvm_ffi.so": 5_000}
    if blas:
        sizes[BLAS_FILE] = 60_000
    for name, size in sizes.items():
        (directory / name).write_bytes(os.urandom(size))
    files = {name: hashing.sha256_file(str(directory / name)) for name in sizes}
    return RuntimePackage("x86_64", directory, files, {"blas": "openblas"}, hashing.tree_hash(files))


@pytest.fixture()
def routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle directory named `blas-*` was lowered on the blas route, any other on tir."""

    def load(path: Path) -> Any:
        route = "blas" if Path(path).name.startswith("blas") else "tir"
        tuning = SimpleNamespace(matmul=route)
        return SimpleNamespace(directory=Path(path), metadata=SimpleNamespace(tuning=tuning))

    monkeypatch.setattr(bench, "load_bundle", load)


class Counting(LocalTransport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def upload(self, path: Path | str) -> str:
        self.sent.append(Path(path).name)
        return super().upload(path)


def test_blas_is_shipped_with_the_first_blas_bundle_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, routes: None
) -> None:
    pkg = _runtime(tmp_path / "rt", blas=True)
    monkeypatch.setattr(bench, "build_runtime", lambda arch: pkg)
    full = hashing.tree_hash(pkg.files)
    cache = tmp_path / "cache"
    with Counting("lean", cache=cache) as t:
        lean, files = bench.ship_runtime(t, "x86_64", None)  # the self-test
        assert sorted(t.sent) == ["hilt-runner", "libtvm_ffi.so", "libtvm_runtime.so"]
        assert lean != full and BLAS_FILE not in files
        assert not (cache / "runtime" / lean / BLAS_FILE).exists()
        assert (cache / "runtime" / lean / "hilt-runner").is_file()
        t.sent.clear()
        assert bench.ship_runtime(t, "x86_64", tmp_path / "tir-1")[0] == lean and t.sent == []
        tree, files = bench.ship_runtime(t, "x86_64", tmp_path / "blas-1")
        assert tree == full and t.sent == [BLAS_FILE]  # the rest is on the board already
        assert (cache / "runtime" / full / BLAS_FILE).read_bytes() == (pkg.directory / BLAS_FILE).read_bytes()
        t.sent.clear()
        assert bench.ship_runtime(t, "x86_64", tmp_path / "tir-2")[0] == full and t.sent == []  # kept


def test_a_runtime_without_blas_serves_tir_and_refuses_blas_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, routes: None
) -> None:
    pkg = _runtime(tmp_path / "rt", blas=False)
    monkeypatch.setattr(bench, "build_runtime", lambda arch: pkg)
    with Counting("no-blas", cache=tmp_path / "cache") as t:
        assert bench.ship_runtime(t, "x86_64", tmp_path / "tir-1")[0] == hashing.tree_hash(pkg.files)
        t.sent.clear()
        with pytest.raises(ArtifactError) as info:
            bench.ship_runtime(t, "x86_64", tmp_path / "blas-1")
    message = str(info.value)
    assert "\n" not in message and "blas matmul route" in message and "--matmul tir" in message
    assert t.sent == []  # refused before anything was sent
