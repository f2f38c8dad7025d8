"""A pruned causal LM built with TVM for x86: prefill + 16 greedy decode steps equal PyTorch's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.compile.causal import greedy_reference
from harness.compile.steps import build_causal, tvm_greedy
from harness.errors import CompileError
from tests.unit.llm_tiny import pruned_uneven


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tvm_prefill_and_decode_match_pytorch_on_x86(family: str) -> None:
    import tvm

    torch.set_num_threads(1)
    model = pruned_uneven(family)  # a layer removed, uneven KV groups / heads and FFN widths per layer
    prompt = np.random.default_rng(0).integers(0, 64, (1, 5))
    ref_ids, ref_logits = greedy_reference(model, prompt, 16)
    build = build_causal(model, tvm.target.Target({"kind": "llvm", "num-cores": 1}), bucket=8, max_len=32)
    ids, logits = tvm_greedy(build, prompt, 16)
    assert ids == ref_ids
    assert max(float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits, strict=True)) <= 1e-4
    with pytest.raises(CompileError, match="prompt of 9 tokens is longer than the bundle allows \\(8\\)"):
        tvm_greedy(build, np.zeros((1, 9), dtype=np.int64), 4)
