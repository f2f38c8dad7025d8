"""The BLAS matmul route: weight matmuls become calls to the board runtime's `hilt.blas.*` (OpenBLAS).

On the demo shapes OpenBLAS's sgemm runs at 155-170 GFLOP/s on one x86 core against 70-75 for hilt's
TensorIR schedule (benchmarks/compile_vs_peers.py measures the whole models). The rewrite runs on the
imported Relax graph, before legalization: every fp32 `matmul(x, W)` whose W is a constant weight
(optionally through `permute_dims`, as nn.Linear imports) and whose x has a static shape becomes

    reshape(call_dps_packed("hilt.blas.matmul[_bias]", [reshape(x, (M, K)), W, (b,), transposed]), ...)

with a following `add` of a constant bias folded in. Attention's activation x activation matmuls
stay TensorIR kernels. The runtime must carry libhilt_blas (harness.runtime.blas).
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)

MATMUL = "hilt.blas.matmul"
MATMUL_BIAS = "hilt.blas.matmul_bias"


def _static_shape(expr: Any) -> list[int] | None:
    """The static shape of an fp32 tensor expression, None for anything else (or symbolic dims)."""
    from tvm.relax.type import TensorType

    try:
        ty = expr.ty
    except (AttributeError, ValueError):  # not normalized yet
        return None
    if not isinstance(ty, TensorType) or ty.shape is None or str(ty.dtype) != "float32":
        return None
    try:
        return [int(d) for d in ty.shape.values]
    except (TypeError, AttributeError):  # a symbolic dimension
        return None


def offload_matmuls(mod: Any) -> tuple[Any, int]:
    """`mod` with its weight matmuls on hilt.blas, and how many were rewritten."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard
    from tvm.relax.type import TensorType

    x, w, bias = wildcard(), is_const(), is_const()
    w_t = is_op("relax.permute_dims")(w)
    plain = is_op("relax.matmul")(x, w)
    transposed = is_op("relax.matmul")(x, w_t)
    patterns = [
        (is_op("relax.add")(plain, bias), False, True),
        (is_op("relax.add")(transposed, bias), True, True),
        (plain, False, False),
        (transposed, True, False),
    ]
    count = 0

    def rewriter_for(is_transposed: bool, with_bias: bool) -> Any:
        def rewrite(call: Any, matches: dict[Any, Any]) -> Any:
            nonlocal count
            a, weight = matches[x], matches[w]
            a_shape, w_shape = _static_shape(a), _static_shape(weight)
            if a_shape is None or w_shape is None or len(w_shape) != 2 or len(a_shape) < 2:
                return call
            if is_transposed:
                perm = matches[w_t].attrs.axes
                if perm is not None and [int(p) for p in perm] != [1, 0]:
                    return call
            k = a_shape[-1]
            n = w_shape[0] if is_transposed else w_shape[1]
            if (w_shape[1] if is_transposed else w_shape[0]) != k:
                return call
            args = [relax.op.reshape(a, (math.prod(a_shape[:-1]), k)), weight]
            func = MATMUL
            if with_bias:
                b = matches[bias]
                if _static_shape(b) != [n]:
                    return call
                args.append(b)
                func = MATMUL_BIAS
            flat = relax.call_dps_packed(
                func,
                relax.Tuple([*args, relax.prim_value(tvm.tirx.IntImm("bool", int(is_transposed)))]),
                TensorType((math.prod(a_shape[:-1]), n), "float32"),
            )
            count += 1
            return relax.op.reshape(flat, (*a_shape[:-1], n))

        return rewrite

    for gv, func in list(mod.functions_items()):
        if not isinstance(func, relax.Function):
            continue
        for pattern, is_transposed, with_bias in patterns:
            func = rewrite_call(pattern, rewriter_for(is_transposed, with_bias), func)
        mod[gv] = func
    log.info("BLAS route: %d weight matmuls on hilt.blas", count)
    return mod, count
