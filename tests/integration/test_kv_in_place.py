"""A decode step writes its K/V rows into the caches it is given (no copy of the cache per step): the
step's cost follows the new tokens, not the cache size (issue 27, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.compile import CompileOptions, compile_model
from harness.compile.causal import CacheLayout
from tests.unit.llm_tiny import save_tiny_lm


def test_decode_writes_its_row_into_the_given_caches(tmp_path: Path) -> None:
    import tvm

    from harness.compile.external_weights import BundleVM

    torch.set_num_threads(1)
    opts = CompileOptions(seq_len=8, cache_len=32, matmul="tir", use_cache=False)
    bundle = compile_model(save_tiny_lm(tmp_path / "lm", "llama"), "local", opts).bundle
    causal = bundle.metadata.causal
    assert causal is not None
    layout = CacheLayout(causal.max_len, tuple((kv, hd) for kv, hd in causal.cache))
    vm = BundleVM(bundle.directory)
    caches = [tvm.runtime.tensor(c.numpy()) for c in layout.empty()]
    ids = np.zeros((1, causal.bucket), dtype=np.int64)
    ids[0, :5] = bundle.input_array()[0, :5]
    out = vm["prefill"](tvm.runtime.tensor(ids), tvm.runtime.tensor(np.array([0])), *caches)
    written = caches[0].numpy()  # the tensor passed in, read back after the step
    assert np.array_equal(written, out[1].numpy())
    assert np.abs(written[:, :, : causal.bucket]).max() > 0 and not written[:, :, causal.bucket :].any()

    before = [c.numpy() for c in caches]
    pos = 20
    step = vm["decode"](tvm.runtime.tensor(np.array([[3]])), tvm.runtime.tensor(np.array([pos])), *caches)
    for given, returned, old in zip(caches, step[1:], before, strict=True):
        now = given.numpy()
        assert np.array_equal(now, returned.numpy())  # the returned cache is the one passed in
        changed = np.flatnonzero(np.any(now != old, axis=(0, 1, 3)))
        assert changed.tolist() == [pos]  # only the new token's slot was written
