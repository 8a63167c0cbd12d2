"""What differs per task: the model head, which positions count, and the metrics.

Every task reduces a model's logits to flat ``[positions, classes]`` rows with one gold
label each, so losses, teacher caches and fidelity are written once for all tasks.
Extractive QA fits the same shape later: two rows per example (start and end logits
over the sequence), selected by a task of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdsearch.data.prepare import IGNORE_INDEX
from kdsearch.distill import metrics


@dataclass(frozen=True)
class Task:
    name: str
    primary_metric: str
    head: str  # the transformers Auto class

    def select(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and labels of the positions that count, as flat rows."""
        if logits.dim() == 2:
            return logits, labels
        mask = labels != IGNORE_INDEX
        return logits[mask], labels[mask]

    def scores(self, pred: torch.Tensor, gold: torch.Tensor, offsets: torch.Tensor, names: list[str]) -> dict[str, float]:
        if self.name == "token_classification":
            out = metrics.entity_f1(pred, gold, offsets, names)
            out["token_accuracy"] = metrics.accuracy(pred, gold)
            return out
        return {"accuracy": metrics.accuracy(pred, gold), "macro_f1": metrics.macro_f1(pred, gold, len(names))}


TASKS: dict[str, Task] = {
    "classification": Task("classification", "accuracy", "AutoModelForSequenceClassification"),
    "pair_classification": Task("pair_classification", "accuracy", "AutoModelForSequenceClassification"),
    "token_classification": Task("token_classification", "f1", "AutoModelForTokenClassification"),
}


def get_task(name: str) -> Task:
    return TASKS[name]
