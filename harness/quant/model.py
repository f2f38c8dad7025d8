"""Apply a weight format to a PyTorch model in place: every weight matrix (linear maps, embeddings, a
tied output projection once) replaced by what the board computes with, so evaluation measures the
quantized model itself. Norms and biases stay fp32, as they do in the bundle."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.quant.base import WeightFormat

log = logging.getLogger(__name__)


@dataclass
class QuantReport:
    """What a format did to a model: which weights it quantized, which stayed fp32, and the bytes."""

    format: str
    group_size: int
    table_format: str = ""  # lookup tables (and a tied output projection), where the format has its own
    quantized: list[str] = field(default_factory=list)
    kept_fp32: list[str] = field(default_factory=list)
    fp32_bytes: int = 0  # the quantized weights in fp32
    stored_bytes: int = 0  # the same weights as the board stores them (codes + scales)


def _matrices(model: nn.Module) -> list[tuple[str, nn.Parameter, bool, bool]]:
    """(name, weight, stored [in, out], is a lookup table) of every linear map and embedding table,
    each tensor once (a table tied to an output projection counts as a table)."""
    from transformers.pytorch_utils import Conv1D

    tables = {m.weight.data_ptr() for m in model.modules() if isinstance(m, nn.Embedding)}
    seen: set[int] = set()
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Embedding | Conv1D):
            w = module.weight
            if w.data_ptr() in seen:  # tied to a table already listed
                continue
            seen.add(w.data_ptr())
            found.append((f"{name}.weight", w, isinstance(module, Conv1D), w.data_ptr() in tables))
    return found


def format_for(fmt: WeightFormat, table: bool) -> WeightFormat:
    """The format a weight is stored in: a lookup table may have its own (int4 keeps tables int8)."""
    from harness.quant.registry import weight_format

    return weight_format(fmt.embedding_format) if table and fmt.embedding_format else fmt


@torch.no_grad()
def quantize_model(model: nn.Module, fmt: WeightFormat, group_size: int = 0) -> QuantReport:
    """Round every weight matrix of `model` through `fmt` (in place) and say what was done.

    A matrix whose reduction width the group size does not divide is refused (WeightFormatError),
    since the bundle could not store it either."""
    group = group_size or fmt.default_group_size
    report = QuantReport(format=fmt.name, group_size=group if fmt.grouped else 0)
    matrices = _matrices(model)
    if fmt.name != "fp32":
        for _name, w, by_input, table in matrices:
            rows_by_reduction = w.t() if by_input else w
            format_for(fmt, table).check(group, rows_by_reduction.shape[1])
    for name, w, by_input, table in matrices:
        if fmt.name == "fp32":
            report.kept_fp32.append(name)
            report.fp32_bytes += w.numel() * 4
            report.stored_bytes += w.numel() * 4
            continue
        rows = (w.t() if by_input else w).float()
        own = format_for(fmt, table)
        if table and own is not fmt:
            report.table_format = own.name
        q = own.quantize(rows, group if own.grouped else rows.shape[1])
        deq = own.dequantize(q)
        w.copy_((deq.t() if by_input else deq).to(w.dtype))
        report.quantized.append(name)
        report.fp32_bytes += w.numel() * 4
        report.stored_bytes += q.stored_bytes
    names = {m[0] for m in matrices}
    report.kept_fp32 += [n for n, p in model.named_parameters() if n not in names and p.ndim >= 1]
    log.info(
        "%s: %d weight matrices quantized (%.1f -> %.1f MB), %d tensors kept fp32",
        fmt.name, len(report.quantized), report.fp32_bytes / 1e6, report.stored_bytes / 1e6,
        len(report.kept_fp32),
    )  # fmt: skip
    return report
