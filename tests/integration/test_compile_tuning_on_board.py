"""Kernel tuning timed on a board through its agent: MetaSchedule builds each candidate into a shared
library for the board's arch, the agent times it with `hilt-runner --time-kernel`, and the records
land in the board's database, where the next compile (no trials) applies them.

The local board (this host, through a real agent subprocess) runs everywhere; the emulated aarch64
board, over SSH and over its serial line, needs root and the farm's rootfs image (shared cache).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from device_agents import bench, inventory
from device_agents.bench import runtime_files, ship_tree
from device_agents.kernel_timing import BoardKernelTimer, tuning_on
from device_agents.transports.local import LocalTransport
from harness.cli.main import main
from harness.compile import CompileOptions, compile_model
from harness.compile.kernel_timer import Evaluator, KernelJob
from harness.compile.tune import TuningDatabase
from harness.errors import RemoteError
from hilt_base import hashing
from tests.integration.test_compile_tuning import _tiny

SEQ = 8
TRIALS = 8  # one round of one kernel: the plan tunes the heaviest task


def _applies(model: Path, profile: str, db: Path, where: str) -> Path:
    """The next compile (no trials) takes kernels from the board-timed records and says who timed them."""
    result = compile_model(model, profile, CompileOptions(seq_len=SEQ, database_dir=db, use_cache=False))
    info = result.tuning
    assert info.mode == "db" and info.trials == 0, info
    assert info.kernels is not None and info.kernels.from_database >= 1, info
    assert where in info.timed_on, info
    return result.bundle.directory


def _expected_logits(model: Path, bundle_dir: Path) -> np.ndarray:
    from harness.compile import load_bundle
    from harness.models import load_model

    ids = torch.from_numpy(load_bundle(bundle_dir).input_array().copy())
    with torch.no_grad():
        return load_model(model).model.eval()(ids, attention_mask=torch.ones_like(ids)).logits.numpy()


def test_the_local_boards_agent_times_trials_and_the_next_compile_applies_them(tmp_path: Path) -> None:
    model, db = _tiny(tmp_path / "m", seed=0), tmp_path / "db"
    board = inventory.default_farm().board("local")
    with tuning_on(board) as timer:
        opts = CompileOptions(seq_len=SEQ, tune_trials=TRIALS, database_dir=db)
        tuned = compile_model(model, "local", opts, timer=timer)
        assert timer.timed >= TRIALS  # every trial (and hilt's seed schedule) went through the agent
    assert tuned.tuning.mode == "trials" and TuningDatabase(db).num_records() >= 1
    sources = TuningDatabase(db).sources()
    assert list(sources) == ["board local over local"]
    assert sources["board local over local"]["emulated"] is False
    _applies(model, "local", db, "board local over local")


def test_time_kernels_refuses_bad_requests_and_reports_a_bad_candidate(tmp_path: Path) -> None:
    """A malformed request is one typed error; a candidate that is not a kernel gets its own error
    while the others in the batch are timed."""
    tree, files, versions = runtime_files(os.uname().machine)
    with LocalTransport("local", cache=tmp_path / "cache") as t:
        ship_tree(t, "runtime", files, tree, versions=versions)
        for args, needle in [
            ({"runtime": tree}, "needs 'kernels'"),
            ({"runtime": tree, "kernels": [{"sha": "0" * 64}]}, "needs 'sha'"),
            ({"runtime": tree, "kernels": [{"sha": "0" * 64, "args": [["TENSOR", "f32", [-1]]]}]}, "TENSOR"),
            ({"runtime": tree, "kernels": [{"sha": "0" * 64, "args": []}]}, "upload these kernels first"),
            ({"runtime": "nope", "kernels": [{"sha": "0" * 64, "args": []}]}, "needs 'runtime'"),
        ]:
            with pytest.raises(RemoteError, match=needle):
                t.request("time_kernels", args, timeout=30.0)
        board = inventory.default_farm().board("local")
        timer = BoardKernelTimer(t, board)
        junk = tmp_path / "junk" / "kernel.so"
        junk.parent.mkdir()
        junk.write_bytes(b"not a shared library")
        good = _matmul_kernel(tmp_path / "good")
        args = [["TENSOR", "float32", shape] for shape in ([16, 32], [32, 8], [16, 8])]
        jobs = [KernelJob(junk, args), KernelJob(good, args), KernelJob(good, args)]  # a repeat: same sha
        timings = timer.time(jobs, Evaluator(number=2, repeat=3))
        assert timings[0].error and "bad_kernel" in timings[0].error and not timings[0].run_secs
        for timing in timings[1:]:
            assert timing.error is None and len(timing.run_secs) == 3 and min(timing.run_secs) > 0
        # timed candidates are consumed: the board's store does not grow with a tuning session
        sha = hashing.sha256_file(str(good))
        assert t.request("has", {"hashes": [sha]}, timeout=10.0)["held"] == []


def _matmul_kernel(directory: Path) -> Path:
    import tvm
    from tvm import te

    a, b = te.placeholder((16, 32), name="A"), te.placeholder((32, 8), name="B")
    k = te.reduce_axis((0, 32), "k")
    c = te.compute((16, 8), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b, c])}), target="llvm")
    directory.mkdir()
    lib.export_library(str(directory / "kernel.so"))
    return directory / "kernel.so"


# ---------------------------------------------------------------- the emulated aarch64 board

emulated = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("debootstrap", "socat", "update-binfmts")),
    reason="the emulated farm needs root, debootstrap, socat and qemu-user-static (scripts/system-deps.sh)",
)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from device_agents.emulated import FarmPaths, down, up

    paths = FarmPaths(images=FarmPaths.default().images, state=tmp_path_factory.mktemp("tune-farm"))
    up(["aarch64"], paths=paths)
    try:
        yield paths.farm_file
    finally:
        down(paths)


@emulated
def test_tuning_for_the_emulated_board_over_ssh_from_the_cli(farm: Path, tmp_path: Path) -> None:
    """`hilt compile --board qemu-aarch64 --tune-trials N` finds the farm's board with that profile and
    tunes on it; the tuned bundle's logits on the board match PyTorch."""
    model, db = _tiny(tmp_path / "m", seed=1), tmp_path / "db"
    argv = ["compile", "--model", str(model), "--board", "qemu-aarch64", "--tune-trials", str(TRIALS),
            "--database", str(db), "--seq-len", str(SEQ), "--farm", str(farm)]  # fmt: skip
    assert main(argv) == 0
    where = "board qemu-a64-0 (emulated) over ssh"
    assert TuningDatabase(db).sources()[where]["emulated"] is True
    bundle_dir = _applies(model, "qemu-aarch64", db, where)
    board = inventory.load_farm(farm).board("qemu-a64-0")
    options = bench.BenchOptions(warmup=0, min_iters=1, min_seconds=0.0, idle_seconds=0.0, power=False)
    record = bench.bench_board(board, bundle_dir, options)
    expected = _expected_logits(model, bundle_dir)
    assert record.output_checksum == pytest.approx(float(expected.astype(np.float64).sum()), abs=1e-4)


@emulated
def test_tuning_for_the_emulated_board_over_its_serial_line(farm: Path, tmp_path: Path) -> None:
    model, db = _tiny(tmp_path / "m", seed=2), tmp_path / "db"
    board = inventory.load_farm(farm).board("qemu-a64-0-serial")
    with tuning_on(board) as timer:
        opts = CompileOptions(seq_len=SEQ, tune_trials=TRIALS, database_dir=db)
        compile_model(model, "qemu-aarch64", opts, timer=timer)
        assert timer.timed >= TRIALS and timer.transport.kind == "serial"
    _applies(model, "qemu-aarch64", db, "board qemu-a64-0-serial (emulated) over serial")


def test_foreign_arch_tuning_without_a_board_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HILT_FARM", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./farm.toml: the default farm, which has no riscv64 board
    model = _tiny(tmp_path / "m", seed=0)
    argv = ["compile", "--model", str(model), "--board", "qemu-riscv64", "--tune-trials", "8"]
    capsys.readouterr()  # what saving the model printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has none; add one (hilt farm up" in err[0], err


def test_tune_on_a_board_of_another_profile_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HILT_FARM", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = ["compile", "--model", str(tmp_path / "unused"), "--board", "qemu-aarch64", "--tune-trials", "8",
            "--tune-on", "local"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--tune-on local: its profile is local, the bundle's is qemu-aarch64" in err[0], err
