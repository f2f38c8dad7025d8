"""hilt's own CPU schedule for matmul kernels that have no tuning record.

TVM's DLight CPU rules cover GEMV and reductions only, so without a record every matmul is a naive
triple loop (~1 GFLOP/s). This rule gives each static-shape matmul (a block of spatial iterators and
one reduction, reading an `A` indexed by (i, k) and a `B` indexed by (j, k)) a register-blocked
micro-kernel: `B` is packed per column panel into [K, tile_j] (contiguous whatever its layout), an
`tile_i x tile_j` accumulator is kept in registers (i unrolled, j vectorised with the target's vector
width), and elementwise epilogues (bias, GELU) are inlined into the write-back. Outer loops run in
parallel when more than one thread is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatmulTiles:
    """Register-block sizes: rows of A (unrolled) x vector lanes of B (vectorised)."""

    tile_i: int
    tile_j: int


def largest_divisor(extent: int, candidates: tuple[int, ...]) -> int:
    for c in candidates:
        if c <= extent and extent % c == 0:
            return c
    return 1


def choose_tiles(m: int, n: int, lanes: int) -> MatmulTiles:
    """A register block that fits the vector register file and divides the shapes (no tail predicates).

    16 vector registers (AVX2, NEON has 32): 6 rows x 2 vectors of accumulators, as in the classic
    6x16 AVX2 kernel; the j tile falls back to one vector, or fewer lanes, for widths it does not divide.
    """
    tile_j = largest_divisor(n, (2 * lanes, lanes, lanes // 2, 4, 2))
    tile_i = largest_divisor(m, (6, 4, 8, 3, 5, 2))
    return MatmulTiles(tile_i=max(1, tile_i), tile_j=max(1, tile_j))


def as_int(expr: Any) -> int | None:
    try:
        return int(expr)
    except (TypeError, ValueError):
        return None


def inline_epilogues(sch: Any, epilogues: list[Any]) -> None:
    """Elementwise epilogues (bias, GELU; DLight block infos or block handles) into the accumulator's
    write-back, where they inline."""
    for epi in epilogues:
        try:
            sch.reverse_compute_inline(getattr(epi, "block_rv", epi))
        except Exception:  # noqa: BLE001 - a non-trivial epilogue keeps its own loop nest
            log.debug("epilogue %s not inlined", getattr(epi, "name", epi))


def vectorize_init_and_writeback(sch: Any, init: Any, acc: Any, tile_j: int) -> None:
    """The accumulator's zeroing and write-back loops run along j too: vectorise them alike."""
    for b in (init, acc):
        inner = sch.get_loops(b)[-1]
        if as_int(sch.get(inner).extent) == tile_j:
            sch.vectorize(inner)


def _vars_in(region: Any) -> set[str]:
    """Names of the variables a buffer region's index expressions use."""
    from tvm.tirx.analysis import undefined_vars

    names: set[str] = set()
    for rng in region:
        names |= {v.name for v in undefined_vars(rng.min)}
    return names


def _matmul_shape(main: Any, kinds: str) -> tuple[int, int, int] | None:
    """(m, n, k) of a static matmul block (spatial..., i, j, then one reduction k), else None."""
    if kinds.count("R") != 1 or not kinds.endswith("R") or len(kinds) < 3 or "O" in kinds:
        return None
    extents = [as_int(d) for d in main.dom()]
    if any(e is None for e in extents):
        return None
    m, n, k = extents[-3], extents[-2], extents[-1]
    assert m is not None and n is not None and k is not None
    if m < 2 or n < 2 or k < 2:  # GEMV and friends belong to the GEMV/Reduction rules
        return None
    return m, n, k


def _b_operand(block: Any) -> tuple[int, list[int]] | None:
    """Which read is B (indexed by j and k, not i), and B's dimensions rearranged so that k, then j,
    come last (the packed layout); None when the block does not read an A[i, k] and a B[j, k]."""
    iv = [i.var.name for i in block.iter_vars]
    vi, vj, vk = iv[-3], iv[-2], iv[-1]
    reads = list(block.reads)
    if len(reads) != 2 or len(block.writes) != 1:
        return None
    a_idx = b_idx = None
    for idx, buf in enumerate(reads):
        names = _vars_in(buf.region)
        if vk in names and vi in names and vj not in names:
            a_idx = idx
        elif vk in names and vj in names and vi not in names:
            b_idx = idx
    if a_idx is None or b_idx is None:
        return None
    b_dims = [_vars_in([rng]) for rng in reads[b_idx].region]
    k_dims = [d for d, names in enumerate(b_dims) if vk in names]
    j_dims = [d for d, names in enumerate(b_dims) if vj in names]
    if len(k_dims) != 1 or len(j_dims) != 1 or k_dims == j_dims:
        return None
    order = [d for d in range(len(b_dims)) if d not in (k_dims[0], j_dims[0])] + k_dims + j_dims
    return b_idx, order


def _schedule_gemv(sch: Any, main: Any, epilogues: list[Any], lanes: int, threads: int) -> Any:
    """out[j] = sum_k a[k] * B[k, j] with B's j contiguous (weights stored [k, j]): j in blocks of
    several vector accumulators, k streamed, nothing packed (packing would read and write every
    weight once more per call). Other layouts are left to DLight's GEMV rule."""
    n, k = (as_int(d) for d in main.dom())
    if n is None or k is None or n < 4:
        return None
    block = sch.get(main.block_rv)
    vj, vk = (i.var.name for i in block.iter_vars[-2:])
    reads = list(block.reads)
    if len(reads) != 2 or len(block.writes) != 1:
        return None
    regions = [[_vars_in([rng]) for rng in buf.region] for buf in reads]
    b_reads = [r for r in regions if any(vj in d for d in r) and any(vk in d for d in r)]
    a_reads = [r for r in regions if not any(vj in d for d in r) and any(vk in d for d in r)]
    if len(b_reads) != 1 or len(a_reads) != 1 or vj not in b_reads[0][-1]:
        return None  # B's j is not its innermost dimension
    tile_j = largest_divisor(n, (4 * lanes, 2 * lanes, lanes, 4))
    blk = main.block_rv
    *outer, j, kk = sch.get_loops(blk)
    jo, ji = sch.split(j, [None, tile_j])
    sch.reorder(*outer, jo, kk, ji)
    acc = sch.cache_write(blk, 0, "global")
    sch.reverse_compute_at(acc, jo)
    inline_epilogues(sch, epilogues)
    sch.vectorize(ji)
    if threads > 1:
        sch.parallel(sch.fuse(*outer, jo) if outer else jo)
    vectorize_init_and_writeback(sch, sch.decompose_reduction(blk, kk), acc, tile_j)
    return sch


def pack_b_panel(b_idx: int, order: list[int]) -> Callable[[Any, Any, Any], None]:
    """The B panel of a plain matmul: B's [K, tile_j] columns copied per panel, `order` (B's dimensions
    with k, then j, last) making it contiguous whatever B's layout."""

    def pack(sch: Any, blk: Any, jo: Any) -> None:
        packed = sch.cache_read(blk, b_idx, "global")
        if order != list(range(len(order))):
            sch.transform_layout(packed, ("write", 0), lambda *idx: [idx[d] for d in order])
        sch.compute_at(packed, jo)

    return pack


def schedule_tiled(
    sch: Any, blk: Any, epilogues: list[Any], pack: Callable[[Any, Any, Any], None], tiles: MatmulTiles,
    threads: int,
) -> Any:  # fmt: skip
    """The register-blocked micro-kernel on block `blk` (loops ..., i, j, k); `pack(sch, blk, jo)` puts
    the B panel the j-block `jo` reads in place (a copy, or the weights dequantized)."""
    *outer, i, j, k = sch.get_loops(blk)
    jo, ji = sch.split(j, [None, tiles.tile_j])
    io, ii = sch.split(i, [None, tiles.tile_i])
    sch.reorder(*outer, jo, io, k, ii, ji)
    pack(sch, blk, jo)
    acc = sch.cache_write(blk, 0, "global")
    sch.reverse_compute_at(acc, io)
    inline_epilogues(sch, epilogues)
    sch.unroll(ii)
    sch.vectorize(ji)
    if threads > 1:
        sch.parallel(sch.fuse(*outer, jo) if outer else jo)
    init = sch.decompose_reduction(blk, k)  # after vectorize/parallel: they check a reduction block
    vectorize_init_and_writeback(sch, init, acc, tiles.tile_j)
    return sch


def _make_rule(lanes: int, threads: int) -> Any:
    """The DLight rule class is built here: its base class lives in TVM, imported only when needed."""
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base.common_schedules import try_inline_contiguous_spatial
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class TiledMatmul(CPUScheduleRule):
        """A DLight-style rule: returns None for anything that is not a static matmul."""

        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if infos is None:
                return None
            infos = try_inline_contiguous_spatial(sch, infos)
            if not infos or not infos[0].is_reduction():
                return None
            main, epilogues = infos[0], infos[1:]
            if any(not e.is_injective() for e in epilogues):
                return None
            kinds = main.dom_kind()
            if kinds == "SR":  # one row of A (normalisation drops the unit axis): a decode step's GEMV
                return _schedule_gemv(sch, main, epilogues, lanes, threads)
            shape = _matmul_shape(main, kinds)
            operand = _b_operand(sch.get(main.block_rv)) if shape is not None else None
            if shape is None or operand is None:
                return None
            tiles = choose_tiles(shape[0], shape[1], lanes)
            return schedule_tiled(sch, main.block_rv, epilogues, pack_b_panel(*operand), tiles, threads)

    return TiledMatmul()


def tiled_matmul_rule(lanes: int, threads: int = 1) -> Any:
    """The rule for `dlight.ApplyDefaultSchedule`; `lanes` = fp32 elements per vector register."""
    return _make_rule(max(1, lanes), max(1, threads))
