"""Weight formats' PyTorch reference: the rounding each format stores, applied to whole models (tied
tables once, Conv1D by its input axis), and bad formats or group sizes refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.cli.main import main
from harness.quant import FORMATS, WeightFormatError, quantize_model, weight_format
from tests.cli_errors import assert_bad_weights_refused
from tests.unit.llm_tiny import save_tiny_lm, tiny_causal


def test_formats_come_from_their_files() -> None:
    assert list(FORMATS) == ["fp32", "int8", "int4"]
    assert (FORMATS["int4"].bits, FORMATS["int4"].default_group_size) == (4, 32)


def test_int4_represents_a_q4_1_weight_exactly() -> None:
    """A weight built the way llama.cpp's Q4_1 stores it (codes 0..15, a scale and a minimum per 32)
    comes back unchanged: SmolLM2's GGUF weights lose nothing more in hilt's int4."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (8, 4, 32), generator=g).float()
    codes[:, :, 0], codes[:, :, 1] = 0, 15  # the block's minimum and maximum, as Q4_1 picks them
    scale = (torch.rand(8, 4, 1, generator=g) * 0.1 + 0.01).half().float()  # fp16, as GGUF stores it
    minimum = -torch.rand(8, 4, 1, generator=g).half().float()
    w = (codes * scale + minimum).reshape(8, 128)
    assert float((FORMATS["int4"].round_trip(w, 32) - w).abs().max()) <= 1e-6


def test_int8_error_is_within_half_a_step_per_row() -> None:
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    err = (FORMATS["int8"].round_trip(w, 0) - w).abs()
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert bool((err <= step / 2 + 1e-7).all()) and float(err.max()) > 0
    q = FORMATS["int8"].quantize(w, 0)
    assert q.codes.dtype == torch.int8 and q.stored_bytes == 16 * 64 + 16 * 4


def test_a_model_is_quantized_once_per_tensor_and_says_what_stayed_fp32() -> None:
    model = tiny_causal("llama", 64)  # tied embeddings
    before = {n: p.clone() for n, p in model.named_parameters()}
    report = quantize_model(model, weight_format("int4"), 16)
    assert "model.embed_tokens.weight" in report.quantized and "lm_head.weight" not in report.quantized
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    assert all("norm" in n for n in report.kept_fp32)
    # blocks: 4-bit codes + an fp16 scale and minimum per 16 weights (0.75 bytes per weight); the tied
    # table int8 per row (1 byte per weight + an fp32 scale per row)
    assert report.table_format == "int8"
    table = model.model.embed_tokens.weight
    block_weights = report.fp32_bytes // 4 - table.numel()
    assert report.stored_bytes == block_weights * 3 // 4 + table.numel() + table.shape[0] * 4
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(report.quantized)
    assert torch.equal(table, FORMATS["int8"].round_trip(before["model.embed_tokens.weight"], 0))
    codes = FORMATS["int4"].quantize(model.model.layers[0].mlp.up_proj.weight, 16).codes
    requant = FORMATS["int4"].round_trip(model.model.layers[0].mlp.up_proj.weight, 16)
    assert int(codes.max()) <= 15 and torch.allclose(requant, model.model.layers[0].mlp.up_proj.weight)


def test_gpt2_conv1d_groups_run_along_its_input_axis() -> None:
    model = tiny_causal("gpt2", 64)
    w = model.transformer.h[0].mlp.c_proj.weight.detach().clone()  # Conv1D: [in 48, out 32]
    quantize_model(model, weight_format("int4"), 16)
    expected = FORMATS["int4"].round_trip(w.t().contiguous(), 16).t()
    assert torch.allclose(model.transformer.h[0].mlp.c_proj.weight, expected)


def test_bad_formats_and_group_sizes_are_refused() -> None:
    with pytest.raises(
        WeightFormatError, match="unknown weight format 'int3'; choose one of fp32, int8, int4"
    ):
        weight_format("int3")
    with pytest.raises(WeightFormatError, match="--group-size must be a positive integer, not 0"):
        FORMATS["int4"].check(0)
    with pytest.raises(WeightFormatError, match="--group-size 20 does not divide a reduction width of 32"):
        quantize_model(tiny_causal("llama", 64), weight_format("int4"), 20)


def test_perplexity_in_a_weight_format_and_bad_input_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.set_num_threads(1)
    src = save_tiny_lm(tmp_path / "lm", "llama")
    args = ["models", "perplexity", "--model", str(src), "--seq-len", "16", "--windows", "4"]
    results = {}
    for fmt in ("fp32", "int8", "int4"):
        out = tmp_path / f"{fmt}.json"
        assert main([*args, "--weights", fmt, "--group-size", "16", "--json", str(out)]) == 0
        import json

        results[fmt] = json.loads(out.read_text())
    assert [results[f]["weights"] for f in results] == ["fp32", "int8", "int4"]
    assert results["fp32"]["weight_mb"] > results["int8"]["weight_mb"] > results["int4"]["weight_mb"]
    assert results["int8"]["perplexity"] != results["fp32"]["perplexity"]  # measured, not assumed
    assert abs(results["int8"]["perplexity"] / results["fp32"]["perplexity"] - 1) < 0.05
    capsys.readouterr()
    assert_bad_weights_refused(main, args, capsys)
