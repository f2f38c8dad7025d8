"""Quantized weights through the one compile pipeline: `--weights int8|int4` bundles store codes and
scales (not fp32), and hilt-runner's outputs equal the PyTorch reference of the same rounding
(harness.quant) on x86_64 and, under qemu-user, aarch64 and riscv64; bad formats are one line."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli.main import main
from harness.compile import CompileOptions, compile_model
from harness.compile.causal import greedy_reference
from harness.models import load_model
from harness.quant import quantize_model, weight_format
from tests.cli_errors import assert_bad_weights_refused
from tests.integration.test_compile_bundles import _run
from tests.integration.test_compile_causal_bundle import _runner
from tests.unit.llm_tiny import save_tiny_lm
from tests.unit.prune_tiny import tiny_model

ARCHES = [("x86_64", "local"), ("aarch64", "qemu-aarch64"), ("riscv64", "qemu-riscv64")]


def _reference(model_dir: Path, fmt: str, group: int) -> torch.nn.Module:
    model = copy.deepcopy(load_model(model_dir).model)
    quantize_model(model, weight_format(fmt), group)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("wq") / "lm", "llama")


@pytest.mark.parametrize(("arch", "profile"), ARCHES)
def test_int4_causal_bundle_generates_the_references_tokens(
    tiny_lm: Path, arch: str, profile: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    opts = CompileOptions(seq_len=8, cache_len=32, weights="int4", group_size=16)
    bundle = compile_model(tiny_lm, profile, opts).bundle
    w = bundle.metadata.weights
    assert (w.format, w.group_size, w.table_format) == ("int4", 16, "int8")
    assert w.stored_mb < w.fp32_mb / 3
    kernels = bundle.metadata.tuning.kernels
    assert kernels is not None and kernels.quant_matmul >= 2  # prefill's and decode's, by hilt's quant rule
    causal = bundle.metadata.causal
    assert causal is not None
    ref_ids, ref_logits = greedy_reference(_reference(tiny_lm, "int4", 16), bundle.input_array(), 16)
    assert causal.expected_ids == ref_ids  # the bundle records the quantized model's continuation
    dump = tmp_path / "logits.bin"
    code, out = _runner(bundle.directory, "--new-tokens", "16", "--dump-output", str(dump), arch=arch)
    assert code == 0 and out["generated_ids"] == ref_ids, out
    logits = np.fromfile(dump, dtype="<f4").reshape(16, causal.vocab)
    ref = np.stack(ref_logits)
    assert float(np.abs(logits - ref).max()) <= 1e-3 * float(np.abs(ref).max())


def test_int8_classifier_bundle_matches_the_reference(tmp_path: Path) -> None:
    src = tmp_path / "cls"
    tiny_model("gpt2", layers=2).save_pretrained(src)
    bundle = compile_model(src, "local", CompileOptions(seq_len=16, weights="int8")).bundle
    assert bundle.metadata.weights.format == "int8" and bundle.metadata.weights.table_format == ""
    code, out = _run("x86_64", bundle.directory, tmp_path / "out.bin")
    assert code == 0 and out["ok"], out
    got = np.fromfile(tmp_path / "out.bin", dtype="<f4")
    ids = torch.from_numpy(bundle.input_array().copy())
    with torch.no_grad():
        ref = _reference(src, "int8", 0)(ids, attention_mask=torch.ones_like(ids)).logits.numpy()
    np.testing.assert_allclose(got, ref.reshape(-1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(bundle.expected(), ref.reshape(-1), atol=1e-6, rtol=0)


def test_bad_weight_formats_are_one_line(tiny_lm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compile", "--model", str(tiny_lm), "--board", "local", "--seq-len", "8"]
    assert_bad_weights_refused(main, args, capsys)


@pytest.mark.parametrize(("family", "fmt"), [("gpt2", "int4"), ("gemma3", "int4"), ("qwen2", "int8")])
def test_the_pass_computes_the_references_arithmetic_in_every_family(family: str, fmt: str) -> None:
    """The weight-quant pass alone (TVM's stock build): Conv1D weights read by their input axis
    (GPT-2), MQA with q/k norms and a tied table kept int8 (Gemma 3), biases left fp32 (Qwen2)."""
    import tvm
    from tvm import relax

    from harness.compile.causal import CachedStep
    from harness.compile.steps import CausalBuild, step_module, tvm_greedy
    from harness.compile.weight_quant import quantize_weights
    from tests.unit.llm_tiny import tiny_causal

    torch.set_num_threads(1)
    model = tiny_causal(family, 64)
    reference = copy.deepcopy(model)
    report = quantize_model(reference, weight_format(fmt), 16)
    step = CachedStep(model, 32)
    mod, info = quantize_weights(step_module(step, 8), weight_format(fmt), 16)
    assert info.weights == len(report.quantized) and info.table_format == report.table_format
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    exe = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
    prompt = np.random.default_rng(0).integers(0, 64, (1, 5))
    ids, logits = tvm_greedy(CausalBuild(exe, step.layout, 8, None), prompt, 16)
    ref_ids, ref_logits = greedy_reference(reference, prompt, 16)
    assert ids == ref_ids
    assert max(float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits, strict=True)) <= 1e-4
