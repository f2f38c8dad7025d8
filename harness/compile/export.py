"""PyTorch model -> Relax IRModule via torch.export, with the fixed example input a bundle carries.

The wrapper passes an all-ones attention mask: without it transformers builds a bool cumsum that
TVM's converter keeps as bool and LLVM rejects. Per-layer pruned shapes import as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harness.errors import CompileError

log = logging.getLogger(__name__)

EXAMPLE_SEED = 1234


class _LogitsOnly(nn.Module):
    """Calls an HF model the way the exported graph needs: mask of ones, no cache, tuple out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        out = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False, return_dict=False)
        return out[0]


@dataclass(frozen=True)
class ExampleInput:
    """The one fixed input a bundle carries, and PyTorch's logits for it."""

    name: str
    input_ids: np.ndarray  # int64 [1, seq_len]
    expected: np.ndarray  # float32 logits


def example_input(model: nn.Module, seq_len: int, seed: int = EXAMPLE_SEED) -> ExampleInput:
    """Seeded token ids the tokeniser could emit (never the pad id) and the model's logits for them."""
    cfg = model.config
    vocab = int(cfg.vocab_size)
    pad = getattr(cfg, "pad_token_id", None)
    max_pos = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    if seq_len < 1:
        raise CompileError(f"seq_len must be >= 1, got {seq_len}")
    if max_pos is not None and seq_len > int(max_pos):
        raise CompileError(
            f"seq_len {seq_len} exceeds the model's {max_pos} positions; pass a smaller --seq-len"
        )
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(1, seq_len), dtype=np.int64)
    if pad is not None and 0 <= int(pad) < vocab:
        ids[ids == int(pad)] = (int(pad) + 1) % vocab
    model.eval()
    with torch.no_grad():
        logits = _LogitsOnly(model)(torch.from_numpy(ids))
    return ExampleInput(name="input_ids", input_ids=ids, expected=logits.detach().float().numpy())


def to_relax(model: nn.Module, example: ExampleInput):  # noqa: ANN201 - tvm.IRModule
    """torch.export the wrapped model and import it into Relax (weights bound as constants)."""
    from tvm.relax.frontend.torch import from_exported_program

    model.eval()
    wrapper = _LogitsOnly(model).eval()
    try:
        with torch.no_grad():
            exported = torch.export.export(wrapper, (torch.from_numpy(example.input_ids),))
        return from_exported_program(exported, unwrap_unit_return_tuple=True)
    except Exception as exc:  # torch.export and the importer raise many unrelated types
        raise CompileError(f"could not import the model into TVM: {type(exc).__name__}: {exc}") from exc
