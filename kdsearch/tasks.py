"""The tasks: one table of what differs per task (columns, head, positions that count, metrics).

Every task reduces a model's logits to flat ``[positions, classes]`` rows with one gold
label each, so losses, teacher caches and fidelity are written once for all tasks.
Extractive QA fits the same shape later: two rows per example (start and end logits
over the sequence), selected by a task of its own.

Light on purpose (no torch import): the spec reads the task names from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # label of a position that counts in no loss or metric (sub-words, specials, padding)


@dataclass(frozen=True)
class Task:
    """One task.

    Args:
        name: the spec's ``data.task``.
        primary_metric: what ``val_score`` is.
        head: the transformers Auto class of the model.
        columns: column role -> default column name (the roles a dataset must have).
        pipeline: the ``transformers.pipeline`` task an export loads in.
        pipeline_truncates: whether that pipeline cuts inputs to the tokenizer's
            ``model_max_length`` on its own (token classification does; text classification
            only when called with ``truncation=True``: huggingface/transformers#4501).
    """

    name: str
    primary_metric: str
    head: str
    columns: dict[str, str]
    pipeline: str = "text-classification"
    pipeline_truncates: bool = False

    @property
    def per_token(self) -> bool:
        return self.name == "token_classification"

    def select(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and labels of the positions that count, as flat rows."""
        if logits.dim() == 2:
            return logits, labels
        mask = labels != IGNORE_INDEX
        return logits[mask], labels[mask]

    def scores(self, pred: torch.Tensor, gold: torch.Tensor, offsets: torch.Tensor, names: list[str]) -> dict[str, float]:
        from kdsearch.distill import metrics

        if self.per_token:
            out = metrics.entity_f1(pred, gold, offsets, names)
            out["token_accuracy"] = metrics.accuracy(pred, gold)
            return out
        return {"accuracy": metrics.accuracy(pred, gold), "macro_f1": metrics.macro_f1(pred, gold, len(names))}


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("classification", "accuracy", "AutoModelForSequenceClassification", {"text": "text", "label": "label"}),
        Task("pair_classification", "accuracy", "AutoModelForSequenceClassification",
             {"text": "text", "text_pair": "text_pair", "label": "label"}),
        Task("token_classification", "f1", "AutoModelForTokenClassification", {"tokens": "tokens", "tags": "tags"},
             "token-classification", pipeline_truncates=True),
    )
}
COLUMN_ROLES = tuple(dict.fromkeys(role for t in TASKS.values() for role in t.columns))


def get_task(name: str) -> Task:
    return TASKS[name]
