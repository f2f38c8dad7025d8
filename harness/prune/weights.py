"""Masking without losing weights: save the modules' weights, let the caller zero some, restore."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def saved_weights(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Restore every module's weight and bias on exit, whatever the block did to them."""
    saved = [
        (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone()) for m in modules
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (w, b) in zip(modules, saved, strict=True):
                m.weight.copy_(w)
                if b is not None:
                    m.bias.copy_(b)
