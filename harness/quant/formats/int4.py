"""int4: asymmetric, a scale and a minimum per group of `group_size` along the reduction axis (llama.cpp's
Q4_1 layout, scale and minimum stored as fp16): code = round((w - min) / s) in 0..15, s = (max - min) / 15,
w' = code * s + min. A Q4_1 model (SmolLM2's GGUF, groups of 32) is represented exactly, up to fp32
rounding; 0.625 bytes per weight at groups of 32, as Q4_1."""

from __future__ import annotations

import torch

from harness.quant.base import QuantizedWeight, WeightFormat


class Int4Grouped(WeightFormat):
    name = "int4"
    bits = 4
    grouped = True
    default_group_size = 32
    embedding_format = "int8"

    def quantize(self, weight: torch.Tensor, group_size: int) -> QuantizedWeight:
        rows, red = weight.shape
        g = weight.float().reshape(rows, red // group_size, group_size)
        lo, hi = g.amin(dim=2).half().float(), g.amax(dim=2)
        scale = ((hi - lo) / 15.0).half().float()  # stored as fp16: the codes use the stored values
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: code 0 = min
        codes = torch.clamp(torch.round((g - lo.unsqueeze(2)) / scale.unsqueeze(2)), 0, 15)
        codes = codes.to(torch.uint8).reshape(rows, red)
        return QuantizedWeight(
            codes=codes, scale=scale.half(), minimum=lo.half(), group_size=group_size, bits=4
        )

    def dequantize(self, q: QuantizedWeight) -> torch.Tensor:
        rows, red = q.codes.shape
        g = q.codes.float().reshape(rows, red // q.group_size, q.group_size)
        assert q.minimum is not None
        return (g * q.scale.float().unsqueeze(2) + q.minimum.float().unsqueeze(2)).reshape(rows, red)


FORMAT = Int4Grouped()
