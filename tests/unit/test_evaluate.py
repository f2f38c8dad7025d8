"""evaluate_classifier on a classifier whose predictions are known exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

from harness.data import ClassificationData
from harness.evaluate import evaluate_classifier, mean_loss


class _Lookup(torch.nn.Module):
    """Predicts from the first token: logits = table[input_ids[:, 0]] (an HF-style output)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids: torch.Tensor) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.table[input_ids[:, 0]])


def _data(first_tokens: list[int], labels: list[int], k: int = 3) -> ClassificationData:
    ids = torch.tensor(first_tokens).unsqueeze(1).repeat(1, 4)
    return ClassificationData(ids, torch.tensor(labels), k, 10, [f"c{i}" for i in range(k)])


def test_accuracy_confusion_and_loss_are_exact() -> None:
    table = torch.full((10, 3), -5.0)
    table[0, 0] = table[1, 1] = table[2, 2] = 5.0  # token t predicts class t
    data = _data([0, 0, 1, 2, 1, 2, 0], [0, 1, 1, 2, 2, 2, 0])
    model = _Lookup(table)
    res = evaluate_classifier(model, data, batch_size=3)
    assert res.n == 7
    assert res.accuracy == pytest.approx(5 / 7)
    assert res.confusion == [[2, 0, 0], [1, 1, 0], [0, 1, 2]]
    assert res.per_class_accuracy == pytest.approx([1.0, 0.5, 2 / 3])
    expected = F.cross_entropy(table[data.input_ids[:, 0]], data.labels).item()
    assert res.mean_loss == pytest.approx(expected, rel=1e-6)
    assert mean_loss(model, data, batch_size=2) == pytest.approx(expected, rel=1e-6)


def test_missing_class_gives_nan_and_mode_is_restored() -> None:
    model = _Lookup(torch.zeros(10, 3))
    model.train()
    res = evaluate_classifier(model, _data([0, 1], [0, 0]))
    assert math.isnan(res.per_class_accuracy[2])
    assert model.training
    model.eval()
    evaluate_classifier(model, _data([0], [0]))
    assert not model.training
