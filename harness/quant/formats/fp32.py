"""fp32: weights as trained (the reference every other format is compared with)."""

from __future__ import annotations

import torch

from harness.quant.base import QuantizedWeight, WeightFormat


class Float32(WeightFormat):
    name = "fp32"
    bits = 32
    grouped = False

    def quantize(self, weight: torch.Tensor, group_size: int) -> QuantizedWeight:
        raise NotImplementedError("fp32 weights are stored as they are")

    def dequantize(self, q: QuantizedWeight) -> torch.Tensor:
        raise NotImplementedError("fp32 weights are stored as they are")

    def round_trip(self, weight: torch.Tensor, group_size: int) -> torch.Tensor:
        return weight


FORMAT = Float32()
