"""One pipeline for every compile task: a classifier bundle and a causal-LM bundle are made by the same
graph passes, scheduler and build, with the same options, and say so with the same TuningInfo fields."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.compile import CompileOptions, compile_model
from harness.compile.bundle import TuningInfo
from harness.compile.lowering import LOWERING_NAME
from harness.errors import CompileError
from harness.runtime.blas import find_static_blas
from harness.runtime.toolchains import host_arch
from tests.integration.test_compile_bundles import _gpt2
from tests.unit.llm_tiny import save_tiny_lm


def _written_tuning(directory: Path) -> dict:
    return json.loads((directory / "metadata.json").read_text())["tuning"]


def test_classifier_and_causal_bundles_carry_the_same_tuning_fields(tmp_path: Path, monkeypatch) -> None:
    # a cache of its own: content addressing keeps the first metadata written for byte-identical code,
    # and the shared tuning database grows as other tests run, so a shared cache made this order-dependent
    monkeypatch.setenv("HILT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    opts = CompileOptions(seq_len=8, use_cache=False, matmul="tir")
    classifier = compile_model(_gpt2(tmp_path / "cls"), "local", opts)
    causal = compile_model(save_tiny_lm(tmp_path / "lm", "llama"), "local", replace(opts, cache_len=16))
    written = [_written_tuning(r.bundle.directory) for r in (classifier, causal)]
    assert set(written[0]) == set(written[1]) == set(TuningInfo.model_fields)
    for result in (classifier, causal):
        info = result.tuning
        assert (info.mode, info.lowering, info.matmul, info.trials) == ("db", LOWERING_NAME, "tir", 0)
        assert info.kernels is not None and info.tasks == info.kernels.kernels > 0
        assert result.bundle.metadata.tuning == info
    assert causal.bundle.metadata.task == "causal-lm" and classifier.bundle.metadata.causal is None


@pytest.mark.skipif(find_static_blas(host_arch()) is None, reason="no static OpenBLAS on this host")
def test_causal_compile_takes_the_blas_route(tmp_path: Path) -> None:
    """The matmul option reaches the causal LM's graph passes (it used to be dropped: always tir)."""
    torch.set_num_threads(1)
    opts = CompileOptions(seq_len=8, cache_len=16, use_cache=False, matmul="blas")
    info = compile_model(save_tiny_lm(tmp_path / "lm", "llama"), "local", opts).tuning
    assert info.matmul == "blas" and info.kernels is not None and info.kernels.blas_matmuls > 0


def test_causal_tuning_trials_are_refused_before_any_build(tmp_path: Path) -> None:
    opts = CompileOptions(seq_len=8, cache_len=16, tune_trials=8, database_dir=tmp_path / "db")
    with pytest.raises(CompileError, match="not wired for causal LMs"):
        compile_model(save_tiny_lm(tmp_path / "lm", "llama"), "local", opts)
    assert not (tmp_path / "db").exists()
