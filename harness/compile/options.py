"""The one typed object that, besides the model and the profile, decides a bundle.

Every stage of the compile pipeline (export, graph passes, scheduling, build) reads it whole, so an
option cannot be dropped on the way for one task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CompileOptions:
    """What, besides the model and the profile, decides the bundle."""

    seq_len: int = 128
    tune_trials: int = 0
    database_dir: Path | None = None  # JSON tuning database; default: the board's (tune.database_dir_for)
    use_database: bool = True  # apply the board's tuning records (False: the default lowering alone)
    use_cache: bool = True
    threads: int = 1  # torch threads while exporting
    kernel_threads: int = 1  # threads the kernels are scheduled for (> 1: parallel outer loops)
    cache_len: int | None = None  # causal LMs: KV-cache positions (default seq_len + 128, within the model's)
    matmul: str | None = None  # "tir" | "blas" weight matmuls; None: the profile's default

    @property
    def matmul_route(self) -> str:
        """The route the graph passes take: the resolved option ("tir" when none was resolved)."""
        return self.matmul or "tir"
