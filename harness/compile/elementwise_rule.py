"""hilt's CPU schedule for elementwise/injective kernels (GELU, SiLU, bias, mask, reshape chains).

TVM's DLight CPU rules schedule none of them, and LLVM does not vectorise the default loop nests
(the demo GPT-2's GELU ran at ~12 GFLOP/s, LLaMA's SiLU below 1). This rule inlines the chain into
as few blocks as possible and vectorises each block's innermost loop in steps of the target's vector
width when the width divides it (no tail predicates); outer loops run in parallel for threads > 1.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _make_rule(lanes: int, threads: int) -> Any:
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base.common_schedules import try_inline_contiguous_spatial
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class Elementwise(CPUScheduleRule):
        """A DLight-style rule: None for anything with a reduction or a dynamic shape."""

        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            try:
                return self._apply(func)
            except (RuntimeError, ValueError) as exc:  # TVM's errors: a block structure its analysis
                # rejects (a KV-cache scatter): that kernel keeps TVM's default loops
                log.debug("elementwise rule leaves a kernel to TVM's default: %s", str(exc).splitlines()[0])
                return None

        def _apply(self, func: Any) -> Any:
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if infos is None:
                return None
            infos = try_inline_contiguous_spatial(sch, infos)
            if not infos or any(not b.is_injective() for b in infos):
                return None
            done = False
            for info in infos:
                loops = sch.get_loops(info.block_rv)
                if not loops:
                    continue
                try:
                    extent = int(sch.get(loops[-1]).extent)
                except (TypeError, ValueError):
                    return None
                if extent % lanes == 0 and extent >= lanes:
                    outer, inner = sch.split(loops[-1], [None, lanes])
                    sch.vectorize(inner)
                    done = True
                    if threads > 1 and len(loops) > 1:
                        sch.parallel(sch.fuse(*loops[:-1]))
            return sch if done else None

    return Elementwise()


def elementwise_rule(lanes: int, threads: int = 1) -> Any:
    """The rule for `dlight.ApplyDefaultSchedule`; `lanes` = fp32 elements per vector register."""
    return _make_rule(max(1, lanes), max(1, threads))
