"""A bundle's peak memory on the board is its weights once (mapped from weights.bin), the KV cache and
working memory: issue 27's bound of 1.15x. Before the weights left model.so the VM copied them out of
the library at load, and a bundle like this one peaked near 2x its weights."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from harness.compile import CompileOptions, compile_model
from harness.runtime import build_runtime, runner_command
from harness.runtime.toolchains import host_arch
from tests.unit.llm_tiny import byte_tokenizer


def _lm(directory: Path) -> Path:
    """A LLaMA whose weights (17 M parameters, 17 MB at int8) dwarf the runtime and the working memory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(cfg).eval().save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _peak_kb(args: list[str]) -> int:
    argv, env = runner_command(build_runtime(host_arch()), args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"], out
    return int(out["peak_rss_kb"])


def test_an_int8_bundle_peaks_within_its_weights_cache_and_working_memory(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    opts = CompileOptions(seq_len=8, cache_len=16, weights="int8", matmul="tir")
    bundle = compile_model(_lm(tmp_path / "lm"), "local", opts).bundle
    causal = bundle.metadata.causal
    assert causal is not None
    weights = (bundle.directory / "weights.bin").stat().st_size
    kv = sum(2 * k * causal.max_len * hd * 4 for k, hd in causal.cache)
    logits = causal.bucket * causal.vocab * 4  # the prefill's output, the largest working tensor
    # the fixed part: the runtime (the runner's own peak on its self-test) and the kernels' code
    runtime = _peak_kb(["--selftest", "--warmup", "0", "--min-iters", "1", "--min-seconds", "0"]) * 1024
    runtime += (bundle.directory / "model.so").stat().st_size
    gen = ["--bundle", str(bundle.directory), "--generate", "--new-tokens", "4", "--warmup", "0"]
    peak = _peak_kb([*gen, "--min-iters", "1", "--min-seconds", "0"]) * 1024
    assert weights > 10 * (kv + logits)  # weights dominate, so a second copy would show
    assert peak <= 1.15 * (weights + kv + logits) + runtime, (peak, weights, kv, logits, runtime)
