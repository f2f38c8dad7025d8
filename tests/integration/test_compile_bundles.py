"""Real TVM builds: tiny and hand-pruned models compiled for the host, aarch64 and riscv64, run by
hilt-runner (under qemu-user for foreign arches) and compared with PyTorch; bad bundles refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from harness.compile import CompileOptions, compile_model, load_bundle
from harness.compile.bundle import Bundle
from harness.runtime import build_runtime, runner_command
from harness.runtime.toolchains import host_arch, toolchain_for
from profiles.schema import load_profile
from tests.cli_errors import one_error_line

SEQ = 16
TOL = 1e-4


def _gpt2(path: Path) -> Path:
    torch.manual_seed(1)
    cfg = GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64, num_labels=3,
        pad_token_id=63, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    GPT2ForSequenceClassification(cfg).save_pretrained(path)
    return path


def _pruned_llama(path: Path) -> Path:
    """A LLaMA (GQA + SwiGLU) with different widths per layer: heads and FFN channels cut unevenly."""
    from harness.models import get_adapter
    from harness.models.manifest import save_pruned

    torch.manual_seed(2)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, num_labels=3, pad_token_id=63,
    )  # fmt: skip
    model = LlamaForSequenceClassification(cfg).eval()
    adapter = get_adapter(model)
    adapter.remove_layers([0, 2])
    adapter.remove_heads(0, [1])  # layer 0: one KV group of two
    adapter.remove_channels(0, list(range(0, 48, 2)))  # 24 channels
    adapter.remove_channels(1, list(range(40)))  # 40 channels, both groups
    save_pruned(model, path, "sequence-classification")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"gpt2": _gpt2(root / "gpt2"), "llama-pruned": _pruned_llama(root / "llama")}


def _run(arch: str, bundle: Path, dump: Path | None = None, runtime: Path | None = None) -> tuple[int, dict]:
    pkg = build_runtime(arch)
    args = ["--bundle", str(bundle), "--warmup", "1", "--min-iters", "3", "--min-seconds", "0"]
    if dump is not None:
        args += ["--dump-output", str(dump)]
    argv, env = runner_command(pkg, args)
    if runtime is not None:  # a copy of the runtime (e.g. one without libhilt_blas)
        argv = [str(runtime / "hilt-runner") if a == str(pkg.runner) else a for a in argv]
        env["LD_LIBRARY_PATH"] = str(runtime)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{proc.stdout!r} {proc.stderr[-2000:]!r}"
    return proc.returncode, json.loads(lines[0])


def _torch_logits(model_dir: Path, bundle: Bundle) -> np.ndarray:
    from harness.models import load_model

    model = load_model(model_dir).model.eval()
    ids = torch.from_numpy(bundle.input_array().copy())
    with torch.no_grad():
        return model(ids, attention_mask=torch.ones_like(ids)).logits.numpy().reshape(-1)


def _check_on(arch: str, profile: str, model_dir: Path, tmp_path: Path, matmul: str | None = None) -> Bundle:
    tc = toolchain_for(arch)
    if not tc.native and (shutil.which(tc.cxx) is None or shutil.which(tc.emulator[0]) is None):
        pytest.skip(f"{tc.cxx} or {tc.emulator[0]} not installed")
    result = compile_model(model_dir, profile, CompileOptions(seq_len=SEQ, matmul=matmul))
    bundle = result.bundle
    assert bundle.metadata.arch == arch and bundle.metadata.profile == profile
    rc, out = _run(arch, bundle.directory, tmp_path / "out.bin")
    assert rc == 0 and out["ok"], out
    got = np.fromfile(tmp_path / "out.bin", dtype="<f4")
    assert out["output_shape"] == [1, 3] and len(out["samples_ns"]) == 3
    np.testing.assert_allclose(got, bundle.expected(), atol=TOL, rtol=0)
    np.testing.assert_allclose(got, _torch_logits(model_dir, bundle), atol=TOL, rtol=0)
    assert out["output_checksum"] == pytest.approx(float(got.astype(np.float64).sum()), abs=1e-5)
    return bundle


@pytest.mark.parametrize("name", ["gpt2", "llama-pruned"])
def test_host_bundle_matches_pytorch(models: dict[str, Path], name: str, tmp_path: Path) -> None:
    bundle = _check_on(host_arch(), "local", models[name], tmp_path)
    if name == "llama-pruned":
        manifest = bundle.manifest()
        assert manifest and manifest["family"] == "llama"


@pytest.mark.parametrize("profile", ["local", "qemu-aarch64"])
@pytest.mark.parametrize("name", ["gpt2", "llama-pruned"])
def test_blas_route_matches_pytorch(models: dict[str, Path], name: str, profile: str, tmp_path: Path) -> None:
    """Weight matmuls on the runtime's OpenBLAS (uneven pruned widths included), on the host and
    under qemu-user: the same logits as PyTorch, and the metadata says which route was taken."""
    bundle = _check_on(load_profile(profile).arch, profile, models[name], tmp_path, matmul="blas")
    assert bundle.metadata.tuning.matmul == "blas"
    from transformers.pytorch_utils import Conv1D

    from harness.models import load_model

    weights = [m for m in load_model(models[name]).model.modules() if isinstance(m, torch.nn.Linear | Conv1D)]
    assert bundle.metadata.tuning.kernels.blas_matmuls == len(weights)  # every weight matmul


def test_runner_refuses_blas_bundle_without_blas(models: dict[str, Path], tmp_path: Path) -> None:
    """A runtime built without OpenBLAS names what is missing instead of failing inside the VM."""
    bundle = compile_model(models["gpt2"], "local", CompileOptions(seq_len=SEQ, matmul="blas")).bundle
    pkg = build_runtime(host_arch())
    bare = tmp_path / "runtime"
    bare.mkdir()
    for name in pkg.files:
        if name != "libhilt_blas.so":
            shutil.copy2(pkg.directory / name, bare / name)
    rc, out = _run(host_arch(), bundle.directory, runtime=bare)
    assert rc == 2 and out["error"]["type"] == "no_blas", out
    assert "libhilt_blas.so" in out["error"]["message"] and "--matmul tir" in out["error"]["message"]
    tir = compile_model(models["gpt2"], "local", CompileOptions(seq_len=SEQ, matmul="tir")).bundle
    rc, out = _run(host_arch(), tir.directory, runtime=bare)
    assert rc == 0 and out["ok"]  # the tir route needs no BLAS


def test_blas_route_for_an_arch_without_openblas_is_one_line(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Debian 12 has no riscv64 OpenBLAS: asking for the route there is one line, exit 2."""
    from harness.cli.main import main
    from harness.runtime.blas import find_static_blas

    assert find_static_blas("riscv64") is None
    rc = main(["compile", "--model", str(models["gpt2"]), "--board", "qemu-riscv64", "--matmul", "blas"])
    assert rc == 2
    line = one_error_line(capsys)
    assert "blas matmul route needs a static OpenBLAS for riscv64" in line and "--matmul tir" in line
    rc = main(["compile", "--model", str(models["gpt2"]), "--board", "local", "--matmul", "cublas"])
    assert rc == 2
    assert "unknown matmul route 'cublas'; choose one of tir, blas" in one_error_line(capsys)


@pytest.mark.parametrize(("arch", "profile"), [("aarch64", "qemu-aarch64"), ("riscv64", "qemu-riscv64")])
def test_cross_bundle_matches_pytorch_under_qemu(
    models: dict[str, Path], arch: str, profile: str, tmp_path: Path
) -> None:
    bundle = _check_on(arch, profile, models["llama-pruned"], tmp_path)
    out = subprocess.run(
        ["readelf", "-h", str(bundle.model_path)], capture_output=True, text=True, check=True
    )
    assert {"aarch64": "AArch64", "riscv64": "RISC-V"}[arch] in out.stdout


def test_second_compile_comes_from_cache(models: dict[str, Path]) -> None:
    first = compile_model(models["gpt2"], "local", CompileOptions(seq_len=SEQ))
    again = compile_model(models["gpt2"], "local", CompileOptions(seq_len=SEQ))
    assert again.cached and again.bundle.sha256 == first.bundle.sha256
    assert again.seconds < 30


def test_compile_leaves_the_callers_torch_threads_alone(models: dict[str, Path]) -> None:
    """The export runs on opts.threads; the tuner's pruning afterwards must keep its own thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compile_model(models["gpt2"], "local", CompileOptions(seq_len=SEQ, threads=1, use_cache=False))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.fixture()
def host_bundle(models: dict[str, Path], tmp_path: Path) -> Path:
    bundle = compile_model(models["gpt2"], "local", CompileOptions(seq_len=SEQ)).bundle
    copy = tmp_path / bundle.sha256
    shutil.copytree(bundle.directory, copy)
    return copy


def test_runner_refuses_tampered_library(host_bundle: Path) -> None:
    with (host_bundle / "model.so").open("ab") as fh:
        fh.write(b"\0")
    rc, out = _run(host_arch(), host_bundle)
    assert rc == 2 and out == {
        "ok": False,
        "error": {"type": "hash_mismatch", "message": out["error"]["message"]},
    }
    assert "model.so has sha256" in out["error"]["message"]


def test_runner_refuses_missing_file(host_bundle: Path) -> None:
    (host_bundle / "input.bin").unlink()
    rc, out = _run(host_arch(), host_bundle)
    assert rc == 2 and out["error"]["type"] == "missing_file"
    assert "input.bin is missing" in out["error"]["message"]


def test_runner_refuses_misnamed_bundle(host_bundle: Path) -> None:
    renamed = host_bundle.parent / ("f" * 64)
    host_bundle.rename(renamed)
    rc, out = _run(host_arch(), renamed)
    assert rc == 2 and out["error"]["type"] == "hash_mismatch"
    assert "contents hash to" in out["error"]["message"]


def test_runner_refuses_bad_metadata(host_bundle: Path) -> None:
    (host_bundle / "metadata.json").write_text("[1, 2")
    rc, out = _run(host_arch(), host_bundle)
    assert rc == 2 and out["error"]["type"] == "bad_bundle"


def test_runner_refuses_wrong_arch(models: dict[str, Path]) -> None:
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("aarch64 cross compiler not installed")
    foreign = compile_model(models["gpt2"], "qemu-aarch64", CompileOptions(seq_len=SEQ)).bundle
    rc, out = _run(host_arch(), foreign.directory)
    assert rc == 2 and out["error"]["type"] == "wrong_arch"
    assert "built for aarch64" in out["error"]["message"]
    assert load_bundle(foreign.directory).metadata.arch == "aarch64"


def test_cli_compile_and_runtime(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    assert main(["compile", "--model", str(models["gpt2"]), "--board", "local", "--seq-len", str(SEQ)]) == 0
    out = capsys.readouterr()
    assert "bundle" in out.out
    assert main(["compile", "--model", str(models["gpt2"]), "--board", "no-such-board"]) == 2
    assert "no-such-board" in one_error_line(capsys)
    assert main(["compile", "--model", "/nonexistent/model", "--board", "local"]) == 2
    assert "does not exist" in one_error_line(capsys)
    from harness.runtime import build_runtime

    build_runtime(host_arch())  # built here if no earlier test did: no dependence on test order
    capsys.readouterr()
    assert main(["runtime", "build", "--arch", host_arch()]) == 0
    assert "from cache" in capsys.readouterr().out
    assert main(["runtime", "build", "--arch", "mips"]) == 2
    assert "unknown arch 'mips'" in one_error_line(capsys)


def test_bench_refuses_blas_bundle_for_a_runtime_without_blas(models: dict[str, Path]) -> None:
    """`hilt bench` checks before shipping anything: a blas-route bundle needs libhilt_blas.so."""
    from device_agents.bench import _check_runtime_serves
    from harness.errors import ArtifactError

    blas = compile_model(models["gpt2"], "local", CompileOptions(seq_len=SEQ, matmul="blas")).bundle
    tir = compile_model(models["gpt2"], "local", CompileOptions(seq_len=SEQ, matmul="tir")).bundle
    pkg = build_runtime(host_arch())
    without = {name: pkg.directory / name for name in pkg.files if name != "libhilt_blas.so"}
    arch = host_arch()
    with pytest.raises(ArtifactError, match=f"blas matmul route but the {arch} runtime has no libhilt_blas"):
        _check_runtime_serves(blas.directory, without, arch)
    _check_runtime_serves(tir.directory, without, arch)  # the tir route needs none
    _check_runtime_serves(blas.directory, {name: pkg.directory / name for name in pkg.files}, arch)


def test_runner_maps_the_weights_file_and_refuses_a_misaligned_entry(host_bundle: Path) -> None:
    """The weights live in weights.bin (model.so is code); a weights.json entry off the 64-byte grid
    the kernels assume is refused as a bad bundle (its hashes made to match, so only that is wrong)."""
    import hashlib

    meta = json.loads((host_bundle / "metadata.json").read_text())
    assert {"weights.bin", "weights.json"} <= set(meta["files"])
    spec = json.loads((host_bundle / "weights.json").read_text())
    first = spec["tensors"][0]
    head = (host_bundle / "weights.bin").read_bytes()[first["offset"] : first["offset"] + 256]
    assert len(head) == 256 and head not in (host_bundle / "model.so").read_bytes()  # not baked in
    spec["tensors"][0]["offset"] += 4
    (host_bundle / "weights.json").write_text(json.dumps(spec))
    meta["files"]["weights.json"] = hashlib.sha256((host_bundle / "weights.json").read_bytes()).hexdigest()
    (host_bundle / "metadata.json").write_text(json.dumps(meta))
    renamed = host_bundle.parent / "edited"  # not named by a hash, so the runner checks the files only
    host_bundle.rename(renamed)
    rc, out = _run(host_arch(), renamed)
    assert rc == 2 and out["error"]["type"] == "bad_bundle"
    assert "64-byte aligned" in out["error"]["message"]
