"""Calibration batches and the one loss every criterion and the recovery step use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor


def task_of(model: nn.Module) -> str:
    """`sequence-classification` or `causal-lm`, from the HF class name."""
    return (
        "sequence-classification"
        if type(model).__name__.endswith("ForSequenceClassification")
        else "causal-lm"
    )


def batch_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The model's logits on a batch: [B, classes], or [B, L, vocab] for causal LMs."""
    ids = batch.input_ids
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    return out.logits if hasattr(out, "logits") else out[0]


def task_loss(model: nn.Module, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the class label, or next-token loss for causal LMs (mean over the batch)."""
    if task_of(model) == "causal-lm":
        ids = batch.input_ids
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
    return F.cross_entropy(logits.float(), batch.labels)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at `temperature`, times T^2 (so gradients keep their scale), averaged over
    examples, and over token positions for causal-LM logits [B, L, V]."""
    v = student.shape[-1]
    s = F.log_softmax(student.reshape(-1, v).float() / temperature, dim=-1)
    t = F.log_softmax(teacher.reshape(-1, v).float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def batch_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy on the class label, or next-token loss for causal LMs (mean over the batch)."""
    return task_loss(model, batch, batch_logits(model, batch))


def calibration_batches(
    input_ids: torch.Tensor, labels: torch.Tensor, batches: int, batch_size: int, seed: int = 0
) -> list[Batch]:
    """A fixed, seeded sample of `batches` batches (fewer if the data is small)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)[: batches * batch_size]
    return [
        Batch(input_ids[order[i : i + batch_size]], labels[order[i : i + batch_size]])
        for i in range(0, len(order), batch_size)
    ]


def cycle_batches(
    input_ids: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int
) -> Iterator[Batch]:
    """Endless shuffled batches for recovery training."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    while True:
        order = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[i : i + batch_size]
            yield Batch(input_ids[idx], labels[idx])


@torch.no_grad()
def mean_batch_loss(model: nn.Module, batches: list[Batch]) -> float:
    was = model.training
    model.eval()
    try:
        total = sum(float(batch_loss(model, b)) * len(b.labels) for b in batches)
    finally:
        model.train(was)
    return total / max(1, sum(len(b.labels) for b in batches))
