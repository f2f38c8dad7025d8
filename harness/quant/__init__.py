"""Weight formats: how a model's weights are stored on the board (fp32, int8 per channel, int4 in
groups), and the PyTorch reference of that arithmetic, so the quality of a quantized candidate is
measured on the weights it ships, never assumed. One file per format in `formats/`."""

from harness.quant.base import QuantizedWeight, WeightFormat, WeightFormatError
from harness.quant.model import QuantReport, quantize_model
from harness.quant.registry import FORMATS, weight_format

__all__ = [
    "FORMATS",
    "QuantReport",
    "QuantizedWeight",
    "WeightFormat",
    "WeightFormatError",
    "quantize_model",
    "weight_format",
]
