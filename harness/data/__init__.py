"""The embedded demo task: bearing fault diagnosis from simulated vibration, tokenised for transformers.

`load_demo_split` is the entry point the rest of hilt uses; the simulator, tokeniser and CWRU loader
live in their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.data.simulator import class_names
from harness.data.splits import SPLITS, SplitName, load_split_arrays
from harness.data.tokenizer import PAD_ID, SEQ_LEN, VOCAB_SIZE


@dataclass(frozen=True)
class ClassificationData:
    """Token ids and labels of a sequence-classification data set."""

    input_ids: torch.Tensor  # int64 [N, L]
    labels: torch.Tensor  # int64 [N]
    num_classes: int
    vocab_size: int
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int) -> ClassificationData:
        """The first n examples (balanced for demo splits, whose labels cycle through the classes)."""
        return ClassificationData(
            self.input_ids[:n], self.labels[:n], self.num_classes, self.vocab_size, self.class_names
        )


def load_demo_split(split: SplitName, n: int | None = None) -> ClassificationData:
    """A seeded split ("train", "val", "test", "calib") of the demo task; cached on disk."""
    ids, labels = load_split_arrays(split, n)
    names = class_names()
    return ClassificationData(
        input_ids=torch.from_numpy(ids).long(),
        labels=torch.from_numpy(labels).long(),
        num_classes=len(names),
        vocab_size=VOCAB_SIZE,
        class_names=names,
    )


__all__ = ["ClassificationData", "load_demo_split", "SPLITS", "PAD_ID", "SEQ_LEN", "VOCAB_SIZE"]
