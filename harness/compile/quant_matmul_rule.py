"""hilt's CPU schedules for the kernels of the weight-quant pass (harness.compile.weight_quant): a
`dequant` block (W[n, k] from its codes) feeding a `q_matmul` reduction (x @ W.T).

Left unscheduled, the pair runs as a scalar loop that decodes every weight once per output element
(SmolLM2's 1536x576 int4 GEMV: 1.3-1.8 ms against torch's 0.09 ms for the fp32 one). Two shapes:

- decode (one row of x): the dequantize is inlined into the inner loop and the reduction runs as
  `vector` lanes of partial sums (rfactor), a pair of output rows per iteration sharing each load of
  x; the int4 packing (blocks of 32, byte j = elements j and j + 16) makes one 16-byte load feed 32
  lanes. The weights are read once per token, 0.56 bytes each at int4;
- prefill (many rows): hilt's tiled matmul micro-kernel (harness.compile.matmul_rule), with the
  column panel it packs per j-block made by dequantizing [K, tile_j] weights instead of copying them,
  so each weight is decoded once per call and fp32 weights never exist whole.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from harness.compile.matmul_rule import (
    as_int,
    choose_tiles,
    inline_epilogues,
    largest_divisor,
    schedule_tiled,
    vectorize_init_and_writeback,
)

log = logging.getLogger(__name__)

DEQUANT_BLOCK = "dequant"  # the block names weight_quant's TE gives the pair
MATMUL_BLOCK = "q_matmul"


def _named_blocks(sch: Any) -> tuple[Any, Any, list[Any]] | None:
    """(dequant, q_matmul, the other blocks) of a kernel made by the weight-quant pass, else None."""
    try:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - a hand-written kernel without a root block (a cache scatter)
        return None
    dequant = main = None
    rest = []
    for blk in blocks:
        name = sch.get(blk).name_hint
        if name.startswith(DEQUANT_BLOCK) and dequant is None:
            dequant = blk
        elif name.startswith(MATMUL_BLOCK) and main is None:
            main = blk
        else:
            rest.append(blk)
    if dequant is None or main is None:
        return None
    return dequant, main, rest


def schedule_gemv(sch: Any, main: Any, epilogues: list[Any], lanes: int, threads: int) -> Any:
    """One row of x: out[n] = sum_k x[k] * W[n, k], W decoded in the inner loop (dequant inlined)."""
    *outer, n, k = sch.get_loops(main)
    n_extent, k_extent = as_int(sch.get(n).extent), as_int(sch.get(k).extent)
    if n_extent is None or k_extent is None:
        return None
    vector = largest_divisor(k_extent, (2 * lanes, lanes, 4, 2))
    rows = largest_divisor(n_extent, (2,))
    ko, ki = sch.split(k, [None, vector])
    partial = sch.rfactor(ki, len(outer) + 1)  # [..., n, vector] partial sums, reduced over ko
    *p_outer, pn, pko, pki = sch.get_loops(partial)
    no, ni = sch.split(pn, [None, rows])
    sch.reorder(*p_outer, no, pko, ni, pki)
    acc = sch.cache_write(partial, 0, "local")
    sch.reverse_compute_at(acc, no)
    sch.reverse_compute_at(main, no)  # the horizontal sum of each row's lanes, right after them
    inline_epilogues(sch, epilogues)
    sch.unroll(ni)
    sch.vectorize(pki)
    if threads > 1:
        sch.parallel(sch.fuse(*p_outer, no) if p_outer else no)
    vectorize_init_and_writeback(sch, sch.decompose_reduction(partial, pko), acc, vector)
    return sch


def _panel_of_dequantized(dequant: Any) -> Any:
    """The tiled kernel's B panel: the weights of one j-block dequantized into [K, tile_j]."""

    def pack(sch: Any, _blk: Any, jo: Any) -> None:
        sch.transform_layout(dequant, ("write", 0), lambda n, k: [k, n])
        sch.compute_at(dequant, jo)

    return pack


def _rows_of_x(sch: Any, main: Any) -> int | None:
    """Rows of x the kernel multiplies (the product of the loops outside n and k)."""
    extents = [as_int(sch.get(loop).extent) for loop in sch.get_loops(main)[:-2]]
    return None if any(e is None for e in extents) else math.prod(e for e in extents if e is not None)


def _make_rule(lanes: int, threads: int) -> Any:
    """The DLight rule class is built here: its base class lives in TVM, imported only when needed."""
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class QuantMatmul(CPUScheduleRule):
        """Schedules weight-quant kernels only (None for anything else)."""

        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            found = _named_blocks(sch)
            if found is None:
                return None
            dequant, main, rest = found
            m = _rows_of_x(sch, main)
            if m == 1:
                sch.compute_inline(dequant)
                return schedule_gemv(sch, main, rest, lanes, threads)
            *_, i, j, k = sch.get_loops(main)
            m_i, n, kk = (as_int(sch.get(loop).extent) for loop in (i, j, k))
            if m_i is None or n is None or kk is None:  # symbolic rows: decode in place, unblocked
                sch.compute_inline(dequant)
                return sch
            tiles = choose_tiles(m_i, n, lanes)
            return schedule_tiled(sch, main, rest, _panel_of_dequantized(dequant), tiles, threads)

    return QuantMatmul()


def quant_matmul_rule(lanes: int, threads: int = 1) -> Any:
    """The rule for `dlight.ApplyDefaultSchedule`; `lanes` = fp32 elements per vector register."""
    return _make_rule(max(1, lanes), max(1, threads))
