"""Weights outside the code: every Relax function takes the module's weights after its own inputs, in
one order, each distinct weight stored once in weights.bin at a 64-byte aligned offset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _module(w: np.ndarray, small: np.ndarray):  # noqa: ANN202 - tvm.IRModule
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    fns = {}
    for name in ("prefill", "decode"):
        x = relax.Var("x", relax.TensorType([2, w.shape[0]], "float32"))
        with bb.function(name, [x]):
            y = bb.emit(relax.op.matmul(x, relax.const(w)))  # the same weight in both functions
            bb.emit_func_output(relax.op.add(y, relax.const(small)))
        fns[name] = bb.get()[name]
    return tvm.IRModule(fns)


def _constant_sizes(func) -> list[int]:  # noqa: ANN001 - a relax.Function
    """Element counts of the tensor constants still in a function."""
    from tvm import relax
    from tvm.ir.expr import GenericConst

    sizes: list[int] = []
    relax.analysis.post_order_visit(
        func, lambda e: sizes.append(e.value.numpy().size) if isinstance(e, GenericConst) else None
    )
    return sizes


def test_weights_become_trailing_parameters_stored_once_and_aligned(tmp_path: Path) -> None:
    import tvm
    from tvm import relax

    from harness.compile.external_weights import lift_weights, read_weights, write_weights

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 48)).astype(np.float32)  # 12 KB: lifted
    small = rng.standard_normal(48).astype(np.float32)  # 192 B: stays in the code
    mod, arrays = lift_weights(_module(w, small))
    assert len(arrays) == 1 and np.array_equal(arrays[0], w)
    for name in ("prefill", "decode"):
        assert [p.name for p in mod[name].params] == ["x", "w0"]
        left = _constant_sizes(mod[name])
        assert left == [small.size]  # the weight is read through w0; only the small constant stays
    (tmp_path / "b").mkdir()
    assert write_weights(tmp_path / "b", arrays) == ["weights.bin", "weights.json"]
    spec = json.loads((tmp_path / "b" / "weights.json").read_text())
    assert all(t["offset"] % 64 == 0 for t in spec["tensors"])
    (loaded,) = read_weights(tmp_path / "b")
    assert np.array_equal(loaded.numpy(), w)

    exe = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    x = rng.standard_normal((2, 64)).astype(np.float32)
    out = vm["decode"](tvm.runtime.tensor(x), loaded).numpy()
    np.testing.assert_allclose(out, x @ w + small, rtol=1e-5, atol=1e-5)


def test_a_module_without_weights_writes_no_files(tmp_path: Path) -> None:
    from harness.compile.external_weights import read_weights, write_weights

    assert write_weights(tmp_path, []) == [] and read_weights(tmp_path) == []
