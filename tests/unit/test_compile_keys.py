"""Cache keys, example inputs, toolchains: what decides a build, and clear errors for bad requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from harness.compile.bundle import bundle_hash
from harness.compile.compiler import CompileOptions, cache_key, matmul_route
from harness.compile.export import example_input
from harness.errors import CompileError
from harness.runtime.build import files_digest
from harness.runtime.toolchains import host_arch, toolchain_for
from profiles.schema import load_profile

MODEL = {"config.json": "a" * 64, "model.safetensors": "b" * 64}


def test_cache_key_changes_with_everything_that_decides_the_bundle() -> None:
    local, a64 = load_profile("local"), load_profile("qemu-aarch64")
    base = cache_key(MODEL, local, CompileOptions(), "none")
    assert base == cache_key(dict(MODEL), local, CompileOptions(), "none")
    assert base != cache_key({**MODEL, "model.safetensors": "c" * 64}, local, CompileOptions(), "none")
    assert base != cache_key(MODEL, a64, CompileOptions(), "none")
    assert base != cache_key(MODEL, local, CompileOptions(seq_len=64), "none")
    assert base != cache_key(MODEL, local, CompileOptions(), "db-digest")
    # caching and export threads do not change what is built
    assert base == cache_key(MODEL, local, CompileOptions(use_cache=False, threads=2), "none")


def _tiny() -> GPT2ForSequenceClassification:
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2, num_labels=3, pad_token_id=5
    )
    return GPT2ForSequenceClassification(cfg).eval()


def test_example_input_is_seeded_and_avoids_pad() -> None:
    model = _tiny()
    a, b = example_input(model, 8), example_input(model, 8)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    assert a.input_ids.shape == (1, 8) and a.input_ids.dtype == np.int64
    assert not (a.input_ids == 5).any()
    assert a.expected.shape == (1, 3) and a.expected.dtype == np.float32
    with torch.no_grad():
        ref = model(torch.from_numpy(a.input_ids), attention_mask=torch.ones(1, 8, dtype=torch.long)).logits
    np.testing.assert_allclose(a.expected, ref.numpy(), atol=1e-6)


@pytest.mark.parametrize(("seq_len", "match"), [(0, "seq_len must be >= 1"), (9, "exceeds the model's 8")])
def test_bad_seq_len_is_refused(seq_len: int, match: str) -> None:
    with pytest.raises(CompileError, match=match):
        example_input(_tiny(), seq_len)


def test_toolchains() -> None:
    assert toolchain_for(host_arch()).native
    rv = toolchain_for("riscv64") if host_arch() != "riscv64" else toolchain_for("x86_64")
    assert rv.prefix.endswith("-linux-gnu-") and rv.emulator
    assert toolchain_for("riscv64").extra_libs == (["atomic"] if host_arch() != "riscv64" else [])
    with pytest.raises(CompileError, match="unknown arch 'mips'"):
        toolchain_for("mips")


def test_runtime_and_bundle_hash_agree() -> None:
    files = {"x": "1" * 64, "a": "2" * 64}
    assert files_digest(files) == bundle_hash(files)


def test_tuning_budget_goes_to_the_costliest_kernels() -> None:
    from harness.compile.tune import plan_budget

    costs = [("reshape", 1.0), ("matmul_big", 1e6), ("softmax", 1e3), ("matmul", 1e5)]
    assert [t.name for t in plan_budget(costs, 8).tasks] == ["matmul_big"]
    assert [t.name for t in plan_budget(costs, 128).tasks] == ["matmul_big"]  # 91% of the FLOPs: all of it
    assert {t.name for t in plan_budget(costs, 10_000).tasks} <= {"matmul_big", "matmul"}  # never the tail


def test_the_blas_default_is_for_one_kernel_thread() -> None:
    """The local profile's blas default holds at 1 thread; with parallel kernels it is tir (OpenBLAS's
    threads would compete with TVM's pool); an explicit route is kept either way."""
    from harness.runtime.blas import find_static_blas

    local = load_profile("local")
    assert local.matmul == "blas"
    one = "blas" if find_static_blas(local.arch) is not None else "tir"
    assert matmul_route(local, CompileOptions()) == one
    assert matmul_route(local, CompileOptions(kernel_threads=2)) == "tir"
    assert matmul_route(local, CompileOptions(kernel_threads=2, matmul="tir")) == "tir"
    if one == "blas":
        assert matmul_route(local, CompileOptions(kernel_threads=2, matmul="blas")) == "blas"
