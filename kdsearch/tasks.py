"""The tasks: one table of what differs per task (columns, head, positions that count, metrics).

Every task reduces a model's logits to flat ``[positions, classes]`` rows with one gold
label each, so losses, teacher caches and fidelity are written once for all tasks.
Extractive QA fits the same shape: an example is one window of a context, and gives two
rows (its start and its end logits), whose "classes" are the window's token positions;
windows are padded to one width (``data.max_length``) so every row has as many, and the
padding positions are masked out of every softmax and distance (``class_mask``).

Light on purpose (no torch import): the spec reads the task names from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # label of a position that counts in no loss or metric (sub-words, specials, padding)
# a QA logit at a padding position: exp() of it is 0 in fp32 and bf16 alike, and it stays
# finite, so 0 * log p is 0 and never NaN (a mask removes it from distances that are not softmaxes)
MASKED_LOGIT = -1e4


@dataclass(frozen=True)
class Task:
    """One task.

    Args:
        name: the spec's ``data.task``.
        primary_metric: what ``val_score`` is.
        head: the transformers Auto class of the model.
        columns: column role -> default column name (the roles a dataset must have).
        pipeline: the ``transformers.pipeline`` task an export loads in ("" where transformers has none).
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

    @property
    def extractive(self) -> bool:
        """Spans of a context: rows are start/end, classes are token positions, scores need the text."""
        return self.name == "question_answering"

    def logits(self, out: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The model output's logits: ``[B, C]``, ``[B, L, C]``, or for QA ``[B, 2, L]`` (start, end)
        with padding positions at ``MASKED_LOGIT`` (where ``attention_mask`` is given)."""
        if not self.extractive:
            return out.logits
        import torch

        both = torch.stack([out.start_logits, out.end_logits], dim=-2)
        return both if attention_mask is None else both.masked_fill(~attention_mask.bool().unsqueeze(-2), MASKED_LOGIT)

    def class_mask(self, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Which classes of each selected row exist (QA: the window's real positions); None: all."""
        if not self.extractive:
            return None
        rows = attention_mask.bool().unsqueeze(-2).expand(*labels.shape, attention_mask.shape[-1])
        return rows[labels != IGNORE_INDEX]

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
        # SQuAD's columns; val_score is SQuAD's F1 over questions. No pipeline: transformers 5.3
        # removed `question-answering` (huggingface/transformers#43325); the export's card writes the reader out
        Task("question_answering", "f1", "AutoModelForQuestionAnswering",
             {"question": "question", "context": "context", "answers": "answers"}, pipeline=""),
    )
}
COLUMN_ROLES = tuple(dict.fromkeys(role for t in TASKS.values() for role in t.columns))


def get_task(name: str) -> Task:
    return TASKS[name]
