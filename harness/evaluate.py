"""Classification accuracy, per-class accuracy, confusion matrix and mean loss of a classifier.

Works for any HF `*ForSequenceClassification` model (anything whose forward takes `input_ids` and
returns `.logits` [batch, classes]); pruning damage is measured with these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.data import ClassificationData


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
