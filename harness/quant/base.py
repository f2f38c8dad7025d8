"""The weight-format interface: quantize a weight matrix along its reduction axis, dequantize it back.

A format works on a 2-D weight laid out [rows, reduction] (an `nn.Linear` weight, an embedding table
whose rows are gathered and whose transpose is a tied output projection): each row is quantized on
its own, in groups of `group_size` consecutive reduction elements (a whole row where the format is per
channel). `dequantize(quantize(w))` is the exact arithmetic the compiled kernels perform.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from harness.errors import ConfigError


class WeightFormatError(ConfigError):
    """A weight format or group size that cannot be used (unknown name, bad or non-dividing group)."""


@dataclass(frozen=True)
class QuantizedWeight:
    """What a board stores for one weight: integer codes and the per-group scale (and minimum)."""

    codes: torch.Tensor  # integer codes, [rows, reduction] (int8, or uint8 holding 0..15 for int4)
    scale: torch.Tensor  # [rows, groups], in the dtype the board stores (fp32, or fp16 for int4)
    minimum: torch.Tensor | None  # [rows, groups] for asymmetric formats, else None
    group_size: int
    bits: int

    @property
    def stored_bytes(self) -> int:
        """Bytes on the board: packed codes plus scales (and minima)."""
        extra = sum(t.numel() * t.element_size() for t in (self.scale, self.minimum) if t is not None)
        return self.codes.numel() * self.bits // 8 + extra


class WeightFormat(abc.ABC):
    """One way to store weights. `name` is what `--weights` takes."""

    name: str
    bits: int
    grouped: bool  # groups along the reduction axis (False: one scale per row)
    default_group_size: int = 0
    # the format of embedding tables (and a tied output projection): None = this one. int4 keeps them
    # at int8 as llama.cpp's Q4 files (Q8_0), ExecuTorch and MLC do: SmolLM2's table is Q8_0, and
    # 4 bits there cost 6 % perplexity (22.42 -> 23.76) against 0.3 % at 8 bits
    embedding_format: str | None = None

    def check(self, group_size: int, reduction: int | None = None) -> int:
        """The group size this format uses for rows of `reduction` elements (one line why not)."""
        if not self.grouped:
            return reduction or 0
        if group_size < 1:
            raise WeightFormatError(f"--group-size must be a positive integer, not {group_size}")
        if reduction is not None and reduction % group_size:
            raise WeightFormatError(
                f"--group-size {group_size} does not divide a reduction width of {reduction} "
                f"({self.name} quantizes whole groups); pick a divisor of {reduction}"
            )
        return group_size

    @abc.abstractmethod
    def quantize(self, weight: torch.Tensor, group_size: int) -> QuantizedWeight:
        """Codes and scales of a [rows, reduction] float weight."""

    @abc.abstractmethod
    def dequantize(self, q: QuantizedWeight) -> torch.Tensor:
        """The float32 weight the codes stand for: what every kernel computes with."""

    def round_trip(self, weight: torch.Tensor, group_size: int) -> torch.Tensor:
        """dequantize(quantize(w)): the weight as the board sees it, in the caller's dtype."""
        self.check(group_size, weight.shape[-1])
        return self.dequantize(self.quantize(weight.float(), group_size)).to(weight.dtype)
