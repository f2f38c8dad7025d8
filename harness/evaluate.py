"""How good a model is: accuracy (and per-class accuracy, confusion, loss) of a classifier, and
next-token perplexity of a causal LM.

`evaluate_classifier` works for any HF `*ForSequenceClassification` model (anything whose forward takes
`input_ids` and returns `.logits` [batch, classes]); `evaluate_perplexity` for any `*ForCausalLM` /
`*LMHeadModel` on token windows (harness.data.text). Pruning damage is measured with these numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.data import ClassificationData
from harness.errors import DataError


@dataclass
class EvalResult:
    """How well a classifier does on one data set."""

    accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # confusion[true][predicted]
    mean_loss: float
    n: int = 0


def _logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=input_ids)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, data: ClassificationData, batch_size: int = 64) -> EvalResult:
    """Evaluate in eval mode (restoring the model's previous mode afterwards)."""
    was_training = model.training
    model.eval()
    k = data.num_classes
    confusion = torch.zeros(k, k, dtype=torch.long)
    total_loss = 0.0
    try:
        for start in range(0, len(data.labels), batch_size):
            ids = data.input_ids[start : start + batch_size]
            y = data.labels[start : start + batch_size]
            logits = _logits(model, ids).float()
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            pred = logits.argmax(dim=-1)
            confusion += torch.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    finally:
        model.train(was_training)
    n = int(confusion.sum())
    per_class = [
        float(confusion[c, c]) / float(confusion[c].sum()) if confusion[c].sum() > 0 else float("nan")
        for c in range(k)
    ]
    return EvalResult(
        accuracy=float(confusion.diag().sum()) / max(n, 1),
        per_class_accuracy=per_class,
        confusion=confusion.tolist(),
        mean_loss=total_loss / max(n, 1),
        n=n,
    )


def mean_loss(model: torch.nn.Module, data: ClassificationData, batch_size: int = 64) -> float:
    """Mean cross-entropy over the data set (the signal pruning criteria and SIA compare)."""
    return evaluate_classifier(model, data, batch_size).mean_loss


@dataclass
class PerplexityResult:
    """Next-token perplexity of a causal LM on token windows (every position after the first predicted)."""

    perplexity: float
    mean_loss: float  # nats per predicted token
    tokens: int  # predicted tokens
    windows: int


@torch.no_grad()
def evaluate_perplexity(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """exp(mean next-token cross-entropy) over all windows, in eval mode (the mode is restored)."""
    if input_ids.ndim != 2 or input_ids.shape[1] < 2 or len(input_ids) == 0:
        raise DataError(f"perplexity needs token windows [N>0, L>=2], got {tuple(input_ids.shape)}")
    check_window(model, int(input_ids.shape[1]))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(input_ids), batch_size):
            ids = input_ids[start : start + batch_size]
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            logits = _logits_of(out)[:, :-1].float()
            target = ids[:, 1:]
            total += float(
                F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
            )
            count += target.numel()
            if progress:
                progress(min(start + batch_size, len(input_ids)), len(input_ids))
    finally:
        model.train(was_training)
    mean = total / count
    return PerplexityResult(perplexity=math.exp(mean), mean_loss=mean, tokens=count, windows=len(input_ids))


def check_window(model: torch.nn.Module, seq_len: int) -> None:
    """A window must fit the model's positions (a longer one would fail deep inside the forward)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and seq_len > int(limit):
        raise DataError(
            f"windows of {seq_len} tokens exceed the model's {limit} positions; use a smaller --seq-len"
        )


def _logits_of(out: object) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out[0]  # type: ignore[index,attr-defined]
