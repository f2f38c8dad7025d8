"""The one typed object that, besides the model and the profile, decides a bundle.

Every stage of the compile pipeline (export, graph passes, scheduling, build) reads it whole, so an
option cannot be dropped on the way for one task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    weights: str = "fp32"  # weight format (harness.quant): fp32 | int8 | int4
    group_size: int = 32  # grouped formats (int4): weights per scale/minimum along the reduction axis

    def reference_model(self, model: Any) -> Any:
        """The PyTorch model with this build's weight rounding (a copy; the model itself when fp32):
        what the bundle's expected outputs are computed from, so they are the quantized model's own."""
        if self.weights == "fp32":
            return model
        import copy

        from harness.quant import quantize_model, weight_format

        reference = copy.deepcopy(model)
        quantize_model(reference, weight_format(self.weights), self.group_size)
        return reference

    @property
    def matmul_route(self) -> str:
        """The route the graph passes take: the resolved option ("tir" when none was resolved)."""
        return self.matmul or "tir"
