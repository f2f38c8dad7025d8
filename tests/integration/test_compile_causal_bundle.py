"""Causal-LM bundles end to end on this host: `hilt prune` a tiny LM, `hilt compile` it into one
executable with prefill and decode, and `hilt-runner --generate` produces PyTorch's greedy tokens
from the logits PyTorch computes (<= 1e-4), with time to first token and every decode step timed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli.main import main
from harness.compile import CompileOptions, compile_model
from harness.compile.causal import greedy_reference
from harness.models import get_adapter, load_model
from harness.runtime import build_runtime, runner_command
from harness.runtime.toolchains import host_arch
from tests.cli_errors import one_error_line
from tests.unit.llm_tiny import save_tiny_lm
from tests.unit.test_prune_causal import ARGS as PRUNE_ARGS
from tests.unit.test_prune_causal import CASCADE as SCHEDULE


def _pruned_lm(tmp_path: Path, family: str) -> Path:
    src = save_tiny_lm(tmp_path / "lm", family)
    (tmp_path / "s.json").write_text(json.dumps(SCHEDULE))
    out = tmp_path / "pruned"
    args = ["prune", "--model", str(src), "--schedule", str(tmp_path / "s.json"), "--out", str(out)]
    assert main([*args, *PRUNE_ARGS]) == 0
    return out


def _runner(bundle: Path, *args: str, arch: str | None = None) -> tuple[int, dict]:
    """hilt-runner --generate on this host (under qemu-user for a foreign arch)."""
    argv, env = runner_command(
        build_runtime(arch or host_arch()),
        ["--bundle", str(bundle), "--generate", "--warmup", "0", "--min-iters", "1", "--min-seconds", "0"]
        + list(args),
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_pruned_causal_bundle_generates_pytorchs_tokens(family: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pruned = _pruned_lm(tmp_path, family)
    loaded = load_model(pruned)
    assert get_adapter(loaded.model).num_layers() == 2  # a layer, heads and channels are gone
    bundle = compile_model(pruned, "local", CompileOptions(seq_len=8, cache_len=32)).bundle
    causal = bundle.metadata.causal
    assert bundle.metadata.task == "causal-lm" and causal is not None
    assert (causal.bucket, causal.max_len, len(causal.cache)) == (8, 32, 2)
    prompt = bundle.input_array()
    ref_ids, ref_logits = greedy_reference(loaded.model, prompt, 16)
    assert causal.expected_ids == ref_ids  # what the bundle records is PyTorch's continuation

    code, out = _runner(bundle.directory, "--new-tokens", "16", "--dump-output", str(tmp_path / "logits.bin"))
    assert code == 0 and out["ok"] and out["mode"] == "generate", out
    assert out["generated_ids"] == ref_ids
    assert len(out["ttft_ns"]) == 1 and len(out["decode_ns"]) == 15 and min(out["decode_ns"]) > 0
    logits = np.fromfile(tmp_path / "logits.bin", dtype="<f4").reshape(16, causal.vocab)
    assert float(np.abs(logits - np.stack(ref_logits)).max()) <= 1e-4

    code, out = _runner(bundle.directory, "--prompt-tokens", "3", "--new-tokens", "4")
    short = np.asarray(prompt)[:, :3]
    assert code == 0 and out["generated_ids"] == greedy_reference(loaded.model, short, 4)[0]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize(("arch", "profile"), [("aarch64", "qemu-aarch64"), ("riscv64", "qemu-riscv64")])
def test_cross_causal_bundle_matches_pytorch_under_qemu(
    family: str, arch: str, profile: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    pruned = _pruned_lm(tmp_path, family)
    bundle = compile_model(pruned, profile, CompileOptions(seq_len=8, cache_len=32)).bundle
    assert bundle.metadata.arch == arch and bundle.metadata.causal is not None
    ref_ids, ref_logits = greedy_reference(load_model(pruned).model, bundle.input_array(), 16)
    dump = tmp_path / "logits.bin"
    code, out = _runner(bundle.directory, "--new-tokens", "16", "--dump-output", str(dump), arch=arch)
    assert code == 0 and out["generated_ids"] == ref_ids, out
    logits = np.fromfile(dump, dtype="<f4").reshape(16, bundle.metadata.causal.vocab)
    assert float(np.abs(logits - np.stack(ref_logits)).max()) <= 1e-4


def test_causal_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_tiny_lm(tmp_path / "lm", "llama")
    capsys.readouterr()  # transformers' save progress
    args = ["compile", "--model", str(src), "--board", "local"]
    assert main([*args, "--seq-len", "40", "--cache-len", "32"]) == 2
    assert "leaves no room to decode in a KV cache of 32 positions" in one_error_line(capsys)
    bundle = str(compile_model(src, "local", CompileOptions(seq_len=8, cache_len=16)).bundle.directory)
    bench = ["bench", "--board", "local", "--bundle", bundle, "--generate", "--min-iters", "1"]
    assert main([*bench, "--prompt-tokens", "9"]) == 2
    assert "prompt of 9 tokens is longer than the bundle allows (8)" in one_error_line(capsys)
    assert main([*bench, "--prompt-tokens", "8", "--new-tokens", "9"]) == 2
    assert "exceeds the KV cache of 16 positions" in one_error_line(capsys)
    assert main(["bench", "--board", "local", "--selftest", "--generate"]) == 2
    assert "--generate needs --bundle" in one_error_line(capsys)
