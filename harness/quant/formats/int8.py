"""int8: symmetric, one scale per output row (channel): code = round(w / s), s = max|row| / 127."""

from __future__ import annotations

import torch

from harness.quant.base import QuantizedWeight, WeightFormat


class Int8PerChannel(WeightFormat):
    name = "int8"
    bits = 8
    grouped = False

    def quantize(self, weight: torch.Tensor, group_size: int) -> QuantizedWeight:
        w = weight.float()
        scale = w.abs().amax(dim=1, keepdim=True) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
        codes = torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8)
        return QuantizedWeight(codes=codes, scale=scale, minimum=None, group_size=w.shape[1], bits=8)

    def dequantize(self, q: QuantizedWeight) -> torch.Tensor:
        return q.codes.float() * q.scale


FORMAT = Int8PerChannel()
