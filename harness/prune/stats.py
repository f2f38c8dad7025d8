"""Parameter and FLOP counts of a (possibly pruned) model, for the stage log."""

from __future__ import annotations

from torch import nn

from harness.models.adapters import get_adapter
from harness.models.manifest import count_parameters


def _linear_dims(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":
        return module.nx, module.nf
    return None


def forward_flops(model: nn.Module, seq_len: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one sequence: every linear map plus attention scores and mixing."""
    flops = 0
    for module in model.modules():
        dims = _linear_dims(module)
        if dims:
            flops += 2 * seq_len * dims[0] * dims[1]
    adapter = get_adapter(model)
    for i in range(adapter.num_layers()):
        shape = adapter.attention_shape(i)
        flops += 2 * 2 * seq_len * seq_len * shape.num_heads * shape.head_dim
    return flops


__all__ = ["count_parameters", "forward_flops"]
