"""The weight-quantization pass of the compile pipeline: fp32 weight constants become the codes and
scales of a weight format (harness.quant), and the ops that read them become kernels that dequantize
inside their inner loop, so the bundle stores, and the board reads, 4 or 8 bits per weight.

It runs on the imported Relax graph, before legalization (like the BLAS offload), and rewrites
    matmul(x, permute_dims(W))  (nn.Linear: W [N, K])  -> q_matmul(x, codes, scale[, minimum])
    matmul(x, W)                (Conv1D:    W [K, N])  -> the same, W read by its input axis
    take(W, ids, axis=0)        (embedding: W [V, H])  -> q_take(codes, scale[, minimum], ids)
for every 2-D fp32 constant W whose reduction width the group size divides. A weight used twice (a tied
embedding and output projection; prefill and decode) is quantized and stored once; a lookup table is
stored in the format's table format (int4 keeps tables int8), in both of its uses. The arithmetic is
the PyTorch reference's (`WeightFormat.dequantize`): code * scale (+ minimum), in fp32. int4 codes are
packed two per byte in blocks of 32 (`_pack_int4`); scales and minima are stored as fp32 here.
The kernels' schedules are harness.compile.quant_matmul_rule's.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

from harness.quant import WeightFormat
from harness.quant.model import QuantReport, format_for

log = logging.getLogger(__name__)


@dataclass
class WeightQuantInfo(QuantReport):
    """What the pass did (goes into the bundle metadata): the reference's report, with each quantized
    weight named by its shape and format, and how many ops were rewritten to read them."""

    uses: int = 0

    @property
    def weights(self) -> int:
        return len(self.quantized)


@dataclass(frozen=True)
class _Stored:
    """One weight's constants in the bundle: codes (int8 [N, K], or uint8 [N, K/2] for int4), scale
    and minimum (fp32 [N, groups]), and the group size."""

    codes: Any
    scale: Any
    minimum: Any | None
    group: int
    rows: int
    reduction: int
    bits: int
    fmt_name: str


def int4_block(reduction: int) -> int:
    """Reduction elements per int4 packing block: 32 (llama.cpp's Q4 blocks) where it divides the row,
    else 2 (neighbours share a byte)."""
    return 32 if reduction % 32 == 0 else 2


def _pack_int4(codes: np.ndarray) -> np.ndarray:
    """[N, K] codes 0..15 -> [N, K/2] bytes in blocks of B = int4_block(K) elements: byte j of a block
    holds element j in its low nibble and element j + B/2 in its high one, so one vector load of B/2
    bytes gives B/2 consecutive weights twice (the mask and the shift), as llama.cpp's Q4_1 blocks."""
    n, k = codes.shape
    block = int4_block(k)
    halves = codes.reshape(n, k // block, 2, block // 2)
    return (halves[:, :, 0, :] | (halves[:, :, 1, :] << 4)).astype(np.uint8).reshape(n, k // 2)


def _weight_value(stored: _Stored, n: Any, k: Any) -> Any:
    """TE expression of W[n, k] as its format stores it."""
    from tvm import tirx

    g = k // stored.group
    if stored.bits == 4:
        half = int4_block(stored.reduction) // 2
        block, within = k // (2 * half), k % (2 * half)
        byte = stored.codes[n, block * half + within % half]
        code = (byte >> ((within // half) * 4).astype("uint8")) & tirx.const(15, "uint8")
        return code.astype("float32") * stored.scale[n, g] + stored.minimum[n, g]
    return stored.codes[n, k].astype("float32") * stored.scale[n, g]


def _tensors(fmt: WeightFormat, rows_by_reduction: np.ndarray, group: int) -> tuple[list[np.ndarray], int]:
    """The numpy constants a weight [N, K] is stored as, and their bytes."""
    q = fmt.quantize(torch.from_numpy(rows_by_reduction), group)
    scale = q.scale.float().numpy().astype(np.float32)
    if fmt.bits == 4:
        assert q.minimum is not None
        arrays = [_pack_int4(q.codes.numpy()), scale, q.minimum.float().numpy().astype(np.float32)]
    else:
        arrays = [q.codes.numpy(), scale]
    return arrays, sum(a.nbytes for a in arrays)


class _Rewriter:
    """The weights one pass has quantized (by content), and what it did."""

    def __init__(self, fmt: WeightFormat, group_size: int) -> None:
        self.fmt = fmt
        self.group_size = group_size
        self.info = WeightQuantInfo(format=fmt.name, group_size=group_size if fmt.grouped else 0)
        self._stored: dict[tuple, tuple[list[Any], _Stored] | None] = {}
        self.tables: set[bytes] = set()  # content keys of the constants some `take` reads

    @staticmethod
    def content(arr: np.ndarray) -> bytes:
        return hashlib.blake2b(arr.tobytes(), digest_size=16).digest()

    def stored(self, const: Any, by_input: bool) -> _Stored | None:
        """The quantized constants of `const` (memoised by content), None where it stays fp32."""
        import tvm

        arr = const.value.numpy()
        if arr.ndim != 2 or arr.dtype != np.float32:
            return None
        digest = self.content(arr)
        key = (arr.shape, by_input, digest)
        if key not in self._stored:
            rows = np.ascontiguousarray(arr.T if by_input else arr)
            n, k = rows.shape
            own = format_for(self.fmt, digest in self.tables and not by_input)
            group = self.group_size if own.grouped else k
            if (own.grouped and k % group) or (own.bits == 4 and k % 2):
                why = (
                    f"{k} not divisible by group {group}"
                    if k % group
                    else f"odd width {k} (int4 packs pairs)"
                )
                self.info.kept_fp32.append(f"weight {list(arr.shape)}: {why}")
                self._stored[key] = None
                return None
            if own is not self.fmt:
                self.info.table_format = own.name
            arrays, nbytes = _tensors(own, rows, group)
            tensors = [tvm.runtime.tensor(a) for a in arrays]
            self.info.quantized.append(f"{list(arr.shape)} {own.name}")
            self.info.fp32_bytes += arr.nbytes
            self.info.stored_bytes += nbytes
            self._stored[key] = (tensors, _Stored(None, None, None, group, n, k, own.bits, own.name))
        entry = self._stored[key]
        if entry is None:
            return None
        tensors, meta = entry
        consts = [relax.const(t) for t in tensors]
        minimum = consts[2] if len(consts) > 2 else None
        return replace(meta, codes=consts[0], scale=consts[1], minimum=minimum)


def _note_table(expr: Any, rewriter: _Rewriter) -> None:
    if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.take":
        table = expr.args[0]
        if isinstance(table, GenericConst) and len(table.value.shape) == 2:
            rewriter.tables.add(rewriter.content(table.value.numpy()))


def _q_matmul_compute(stored: _Stored) -> Any:
    """TE of x @ W.T with W read from its codes: what a rewritten weight matmul computes."""
    from tvm import te

    def compute(xt: Any, codes: Any, scale: Any, *minimum: Any) -> Any:
        s = replace(stored, codes=codes, scale=scale, minimum=minimum[0] if minimum else None)
        # two stages, so a schedule can dequantize a panel per column block (prefill) or inline it into
        # the inner loop (decode); harness.compile.quant_matmul_rule never lets it materialise W whole
        weight = te.compute(
            (stored.rows, stored.reduction), lambda n, k: _weight_value(s, n, k), name="dequant"
        )
        k = te.reduce_axis((0, stored.reduction), name="k")
        return te.compute(
            (*xt.shape[:-1], stored.rows),
            lambda *i: te.sum(xt[(*i[:-1], k)] * weight[i[-1], k], axis=k),
            name="q_matmul",
        )

    return compute


def _q_take_compute(stored: _Stored) -> Any:
    """TE of W[ids] with W read from its codes: what a rewritten embedding lookup computes."""
    from tvm import te

    def compute(codes: Any, scale: Any, *rest: Any) -> Any:
        ids = rest[-1]
        s = replace(stored, codes=codes, scale=scale, minimum=rest[0] if len(rest) > 1 else None)
        return te.compute(
            (*ids.shape, stored.reduction),
            lambda *i: _weight_value(s, ids[i[:-1]].astype("int32"), i[-1]),
            name="q_take",
        )

    return compute


@mutator
class _WeightReads(PyExprMutator):
    """Rewrites the weight matmuls and lookups of a module (see the module docstring)."""

    def __init__(self, module: Any, rewriter: _Rewriter) -> None:
        super().__init__(module)
        self.module = module
        self.rewriter = rewriter

    def transform(self) -> Any:
        for gv, func in self.module.functions_items():
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def _resolve(self, expr: Any) -> Any:
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            return bound if bound is not None else expr
        return expr

    def _weight_of_matmul(self, arg: Any) -> tuple[Any, bool] | None:
        """(W constant, stored [in, out]) of a matmul's right operand, None for activations."""
        arg = self._resolve(arg)
        if isinstance(arg, GenericConst):
            return arg, True  # x @ W with W [K, N]: Conv1D
        if isinstance(arg, relax.Call) and arg.op.name == "relax.permute_dims":
            axes = arg.attrs.axes
            inner = self._resolve(arg.args[0])
            if isinstance(inner, GenericConst) and (axes is None or [int(a) for a in axes] == [1, 0]):
                return inner, False  # x @ W.T with W [N, K]: nn.Linear
        return None

    def visit_call_(self, call: Any) -> Any:
        call = self.visit_expr_post_order(call)
        name = getattr(call.op, "name", "")
        if name == "relax.matmul" and (found := self._weight_of_matmul(call.args[1])) is not None:
            return self._q_matmul(call, *found)
        if name == "relax.take" and int(call.attrs.axis or 0) == 0:
            table = self._resolve(call.args[0])
            if isinstance(table, GenericConst):
                return self._q_take(call, table)
        return call

    def _q_matmul(self, call: Any, weight: Any, by_input: bool) -> Any:
        x = call.args[0]
        x_ty = x.ty if hasattr(x, "ty") else None
        stored = self.rewriter.stored(weight, by_input)
        if stored is None or x_ty is None or str(x_ty.dtype) != "float32":
            return call
        args = [x, stored.codes, stored.scale] + ([stored.minimum] if stored.minimum is not None else [])
        self.rewriter.info.uses += 1
        return self.builder_.call_te(
            _q_matmul_compute(stored), *args, primfunc_name_hint=f"{stored.fmt_name}_matmul"
        )

    def _q_take(self, call: Any, table: Any) -> Any:
        stored = self.rewriter.stored(table, False)
        if stored is None:
            return call
        args = [stored.codes, stored.scale] + ([stored.minimum] if stored.minimum is not None else [])
        self.rewriter.info.uses += 1
        return self.builder_.call_te(
            _q_take_compute(stored), *args, call.args[1], primfunc_name_hint=f"{stored.fmt_name}_take"
        )


def quantize_weights(mod: Any, fmt: WeightFormat, group_size: int) -> tuple[Any, WeightQuantInfo]:
    """`mod` with its fp32 weight matmuls and embedding lookups reading `fmt`'s codes instead."""
    rewriter = _Rewriter(fmt, group_size)
    for func in mod.functions.values():  # the lookup tables, whose every use takes the table format
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, lambda e: _note_table(e, rewriter))
    mod = relax.transform.DeadCodeElimination()(_WeightReads(mod, rewriter).transform())
    info = rewriter.info
    log.info(
        "weights %s: %d tensors (%d uses) %.1f -> %.1f MB; %d kept fp32",
        fmt.name, info.weights, info.uses, info.fp32_bytes / 1e6, info.stored_bytes / 1e6,
        len(info.kept_fp32),
    )  # fmt: skip
    return mod, info
