"""Weights outside the code: the scheduled module's weight constants become trailing parameters of every
Relax function (`main`, or `prefill` and `decode`), in one order, stored once in `weights.bin` (64-byte
aligned, raw) and described in `weights.json`; model.so then holds code only.

Baked into model.so, the VM copied every constant out of the library when it loaded, so a board held
the weights twice (peak RSS ~4x the weights). The runner maps weights.bin read-only and hands the VM
tensors that point into the mapping: the weights are read from the file once, on first touch, and
never copied (as llama.cpp maps a GGUF). A weight used by several functions (prefill and decode; a
tied embedding) is stored once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

log = logging.getLogger(__name__)

WEIGHTS_BIN = "weights.bin"
WEIGHTS_JSON = "weights.json"
ALIGN = 64  # bytes: TVM's allocation alignment, which its kernels may assume
MIN_BYTES = 1024  # smaller constants (scalars, short tables) stay in the code
DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64")


def _key(arr: np.ndarray) -> tuple:
    return (arr.dtype.str, arr.shape, hashlib.blake2b(arr.tobytes(), digest_size=16).digest())


def _liftable(expr: Any) -> bool:
    if not isinstance(expr, GenericConst):
        return False
    value = expr.value
    nbytes = int(np.prod([int(d) for d in value.shape])) * (value.dtype.bits // 8)
    return nbytes >= MIN_BYTES and str(value.dtype) in DTYPES


@mutator
class _ConstantsToParams(PyExprMutator):
    def __init__(self, module: Any, slots: dict[Any, int], arrays: list[np.ndarray]) -> None:
        super().__init__(module)
        self.module = module
        self.slots = slots  # constant node -> its parameter index (hashed once, when collected)
        self.arrays = arrays
        self.params: list[Any] = []

    def transform(self) -> Any:
        for gv, func in self.module.functions_items():
            if not isinstance(func, relax.Function):
                continue
            self.params = [
                relax.Var(f"w{i}", relax.TensorType(list(a.shape), str(a.dtype)))  # type: ignore[attr-defined]
                for i, a in enumerate(self.arrays)
            ]
            body = self.visit_expr(func.body)
            lifted = relax.Function(
                list(func.params) + self.params, body, func.ret_ty, func.is_pure, func.attrs, func.span
            )
            self.builder_.update_func(gv, lifted)
        return self.builder_.get()

    def visit_generic_const_(self, const: Any) -> Any:
        slot = self.slots.get(const)
        return const if slot is None else self.params[slot]


def lift_weights(mod: Any) -> tuple[Any, list[np.ndarray]]:
    """`mod` with its weight constants as trailing parameters of every Relax function, and their
    values in parameter order (each distinct weight once)."""
    index: dict[tuple, int] = {}  # content -> parameter index: a weight used twice is stored once
    slots: dict[Any, int] = {}  # constant node -> parameter index
    arrays: list[np.ndarray] = []

    def collect(expr: Any) -> None:
        if _liftable(expr) and expr not in slots:
            arr = expr.value.numpy()
            key = _key(arr)
            if key not in index:
                index[key] = len(arrays)
                arrays.append(np.ascontiguousarray(arr))
            slots[expr] = index[key]

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, collect)
    if not arrays:
        return mod, []
    out = _ConstantsToParams(mod, slots, arrays).transform()
    mb = sum(a.nbytes for a in arrays) / 1e6
    log.info("weights: %d tensors, %.1f MB, moved out of the code", len(arrays), mb)
    return out, arrays


def write_weights(directory: Path, arrays: list[np.ndarray]) -> list[str]:
    """weights.bin and weights.json in `directory` (nothing for a module without weights); the names."""
    if not arrays:
        return []
    entries, offset = [], 0
    with (directory / WEIGHTS_BIN).open("wb") as out:
        for arr in arrays:
            pad = -offset % ALIGN
            out.write(b"\0" * pad)
            offset += pad
            little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
            out.write(little.tobytes())
            entries.append({"dtype": str(arr.dtype), "shape": [int(d) for d in arr.shape], "offset": offset})
            offset += arr.nbytes
    spec = {"version": 1, "align": ALIGN, "bytes": offset, "tensors": entries}
    (directory / WEIGHTS_JSON).write_text(json.dumps(spec, indent=1) + "\n")
    return [WEIGHTS_BIN, WEIGHTS_JSON]


def read_weights(directory: Path) -> list[Any]:
    """The bundle's weights as TVM tensors, in parameter order ([] for a bundle without weights.bin):
    what a Python caller appends to every call of the bundle's functions."""
    import tvm

    spec_path = directory / WEIGHTS_JSON
    if not spec_path.is_file():
        return []
    spec = json.loads(spec_path.read_text())
    blob = np.memmap(directory / WEIGHTS_BIN, dtype=np.uint8, mode="r")
    tensors = []
    for entry in spec["tensors"]:
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        count = int(np.prod(entry["shape"]))
        start = int(entry["offset"])
        arr = np.frombuffer(blob, dtype=dtype, count=count, offset=start).reshape(entry["shape"])
        tensors.append(tvm.runtime.tensor(np.ascontiguousarray(arr)))
    return tensors


class BundleVM:
    """A bundle's Relax VM on this host's CPU with its weights bound: `vm["decode"](*args)` appends them."""

    def __init__(self, directory: Path) -> None:
        import tvm

        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(directory / "model.so")), tvm.cpu())
        self.weights = read_weights(directory)

    def __getitem__(self, name: str) -> Any:
        fn = self.vm[name]
        return lambda *args: fn(*args, *self.weights)
