"""Extractive question answering: windows over long contexts, and scoring as SQuAD scores it.

Tokenisation follows the Hugging Face QA examples (``run_qa.py``): the question first, the
context second, only the context truncated, into windows of ``data.max_length`` tokens that
overlap by ``data.doc_stride``; every window keeps each token's character span in its
context, so a predicted span maps back to text. A window that does not hold the whole
answer points at its first token (``[CLS]``), as those examples do.

Scoring is SQuAD v1.1's: for each question, the best-scoring span (start logit + end
logit) over all its windows, never outside the context, never ending before it starts,
at most ``max_answer_tokens`` long; then exact match and F1 against every gold answer,
after SQuAD's normalisation (lower case, no punctuation, no articles, single spaces),
keeping the best. The best span is searched over every (start, end) pair of a window,
which the examples' n-best lists approximate and the ``question-answering`` pipeline
also does.
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from kdsearch.errors import DataError
from kdsearch.tasks import IGNORE_INDEX, MASKED_LOGIT

QA_LABELS = ["start", "end"]  # the two rows of a window (a QA head has 2 outputs)
MAX_ANSWER_TOKENS = 30  # the HF examples' max_answer_length: longer spans are never predicted
QA_FILES = (".qa.safetensors", ".qa.json")


@dataclass
class QAWindows:
    """Where a split's windows come from: each window's question (``example``), each token's
    character span in its context (``char_start``/``char_end``, -1 outside the context), and
    the questions' contexts and gold answers."""

    example: torch.Tensor  # [W]
    char_start: torch.Tensor  # [W, L] int32
    char_end: torch.Tensor  # [W, L] int32
    contexts: list[str]
    answers: list[list[str]]
    _constant: dict[tuple[tuple[int, int], int], float] = field(default_factory=dict, repr=False, compare=False)

    def save(self, folder: Path, split: str) -> None:
        save_file({"example": self.example, "char_start": self.char_start, "char_end": self.char_end},
                  folder / f"{split}.qa.safetensors")
        (folder / f"{split}.qa.json").write_text(json.dumps({"contexts": self.contexts, "answers": self.answers}))

    @classmethod
    def load(cls, folder: Path, split: str) -> QAWindows:
        t = load_file(folder / f"{split}.qa.safetensors")
        texts = json.loads((folder / f"{split}.qa.json").read_text())
        return cls(t["example"], t["char_start"], t["char_end"], texts["contexts"], texts["answers"])

    def constant_f1(self, constant: tuple[int, int], width: int) -> float:
        """SQuAD F1 of answering every window at ``constant`` (start, end): the same at every
        evaluation of a split, so worked out once (every epoch of every trial reads it)."""
        key = (constant, width)
        if key not in self._constant:
            fixed = torch.full((len(self.example), 2, width), -1.0)
            fixed[:, 0, min(constant[0], width - 1)] = 1.0
            fixed[:, 1, min(constant[1], width - 1)] = 1.0
            self._constant[key] = squad_scores(best_spans(fixed.view(-1, width), self).texts, self.answers)["f1"]
        return self._constant[key]

    @property
    def in_context(self) -> torch.Tensor:
        """[W, L]: the tokens a span may start or end at."""
        return self.char_start >= 0


# -- reading and checking ------------------------------------------------------------------------------


def answer_lists(value: Any) -> tuple[list[str], list[int]] | None:
    """SQuAD's ``answers`` cell (``{text: [...], answer_start: [...]}``, as Hugging Face and
    Parquet hold it) as (texts, starts); None when it is not of that shape."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict) or "text" not in value or "answer_start" not in value:
        return None
    texts, starts = list(value["text"]), list(value["answer_start"])
    if len(texts) != len(starts):
        return None
    try:
        return [str(t) for t in texts], [int(s) for s in starts]
    except (TypeError, ValueError):
        return None


def check_answers(df: pd.DataFrame, columns: dict[str, str], split: str, source: str) -> None:
    """Every answer is a span of its context at its ``answer_start``: one line naming the first row that is not."""
    where = f"{split} split of {source!r}"
    for role in ("question", "context"):
        col = df[columns[role]]
        bad = col.isna() | ~col.astype(str).str.strip().astype(bool)
        if bad.any():
            raise DataError(f"{where}, row {int(bad.idxmax())}: column {columns[role]!r} ({role}) is missing or empty")
    for i, (context, cell) in enumerate(zip(df[columns["context"]].astype(str), df[columns["answers"]])):
        parsed = answer_lists(cell)
        if parsed is None:
            raise DataError(f"{where}, row {i}: column {columns['answers']!r} must hold SQuAD answers "
                            "{text: [...], answer_start: [...]} of equal lengths")
        texts, starts = parsed
        if not texts:
            raise DataError(f"{where}, row {i}: no answer (extractive QA needs at least one span per question)")
        for text, start in zip(texts, starts):
            if not text.strip():
                raise DataError(f"{where}, row {i}: an empty answer text")
            if not 0 <= start <= len(context) - len(text):
                raise DataError(f"{where}, row {i}: answer_start {start} with an answer of {len(text)} characters "
                                f"is outside its context ({len(context)} characters)")
            if context[start : start + len(text)] != text:
                found = context.find(text)
                hint = f" (the text occurs at {found})" if found >= 0 else " (the text is not in its context)"
                raise DataError(f"{where}, row {i}: the answer at answer_start {start} does not match its text{hint}")


# -- windows ---------------------------------------------------------------------------------------------


def encode_windows(
    df: pd.DataFrame, columns: dict[str, str], tokenizer: Any, max_length: int, stride: int, split: str, source: str
) -> tuple[dict[str, torch.Tensor], QAWindows]:
    """Windows of every question's context: model inputs padded to ``max_length``, the
    [start, end] token labels of each window, and the map back to characters."""
    questions = [str(q).lstrip() for q in df[columns["question"]]]  # leading spaces only waste the window
    contexts = [str(c) for c in df[columns["context"]]]
    parsed = [answer_lists(a) for a in df[columns["answers"]]]
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    q_lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    for i, q in enumerate(q_lengths):
        room = max_length - specials - q
        if room <= stride:
            # the windows could not advance along the context (the tokenizer would refuse)
            raise DataError(
                f"{split} split of {source!r}, row {i}: the question takes {q} tokens, leaving {max(room, 0)} of "
                f"data.max_length {max_length} for its context, which a document stride of {stride} cannot "
                f"cover (each window must move on by at least one token): raise data.max_length or lower data.doc_stride"
            )
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    n = len(enc["input_ids"])
    example = torch.tensor(enc["overflow_to_sample_mapping"], dtype=torch.long)
    char_start = torch.full((n, max_length), -1, dtype=torch.int32)
    char_end = torch.full((n, max_length), -1, dtype=torch.int32)
    labels = torch.zeros((n, 2), dtype=torch.long)
    for w in range(n):
        seq = enc.sequence_ids(w)
        offsets = enc["offset_mapping"][w]
        ctx = [j for j, s in enumerate(seq) if s == 1]
        for j in ctx:
            char_start[w, j], char_end[w, j] = offsets[j]
        texts, starts = parsed[int(example[w])]  # type: ignore[misc]
        a_start, a_end = starts[0], starts[0] + len(texts[0])  # training reads the first answer, as run_qa.py does
        first, last = ctx[0], ctx[-1]
        if offsets[first][0] > a_start or offsets[last][1] < a_end:
            continue  # not wholly in this window: the label stays at [CLS]
        s = first
        while s <= last and offsets[s][1] <= a_start:
            s += 1
        e = last
        while e >= first and offsets[e][0] >= a_end:
            e -= 1
        labels[w] = torch.tensor([s, e])
    inputs = {
        "input_ids": torch.tensor(enc["input_ids"], dtype=torch.long),
        "lengths": torch.tensor([sum(m) for m in enc["attention_mask"]], dtype=torch.long),
        "labels": labels,
        "token_type_ids": torch.tensor(enc["token_type_ids"], dtype=torch.long) if "token_type_ids" in enc else None,
    }
    answers = [p[0] if p else [] for p in parsed]  # type: ignore[index]
    return inputs, QAWindows(example, char_start, char_end, contexts, answers)


# -- predictions -----------------------------------------------------------------------------------------


@dataclass
class Spans:
    """Each question's best span: its text, and the (window, start, end) it was read from (-1: none)."""

    texts: list[str]
    window: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor


def best_spans(logits: torch.Tensor, windows: QAWindows, max_answer_tokens: int = MAX_ANSWER_TOKENS,
               chunk: int = 256) -> Spans:
    """The best valid span of each question over its windows, from flat ``[2W, L]`` rows
    (start, end of each window in turn)."""
    w, width = len(windows.example), logits.shape[-1]
    pairs = logits.float().view(w, 2, width)
    ok_pos = windows.in_context[:, :width]
    i = torch.arange(width)
    # a valid span: end >= start and at most max_answer_tokens long
    band = (i[None, :] >= i[:, None]) & (i[None, :] - i[:, None] < max_answer_tokens)
    best_score = torch.full((w,), -float("inf"))
    best_start = torch.full((w,), -1, dtype=torch.long)
    best_end = torch.full((w,), -1, dtype=torch.long)
    for a in range(0, w, chunk):
        b = min(w, a + chunk)
        s, e, ok = pairs[a:b, 0], pairs[a:b, 1], ok_pos[a:b]
        score = s[:, :, None] + e[:, None, :]
        valid = band[None] & ok[:, :, None] & ok[:, None, :]
        score = score.masked_fill(~valid, -float("inf")).flatten(1)
        top, arg = score.max(1)
        best_score[a:b] = top
        has = torch.isfinite(top)
        best_start[a:b] = torch.where(has, arg // width, -1)
        best_end[a:b] = torch.where(has, arg % width, -1)
    n = len(windows.contexts)
    texts = [""] * n
    q_window = torch.full((n,), -1, dtype=torch.long)
    q_score = torch.full((n,), -float("inf"))
    for k in range(w):  # the best window of each question
        q = int(windows.example[k])
        if best_start[k] >= 0 and best_score[k] > q_score[q]:
            q_score[q], q_window[q] = best_score[k], k
    starts = torch.full((n,), -1, dtype=torch.long)
    ends = torch.full((n,), -1, dtype=torch.long)
    for q in range(n):
        k = int(q_window[q])
        if k < 0:
            continue
        s, e = int(best_start[k]), int(best_end[k])
        starts[q], ends[q] = s, e
        texts[q] = windows.contexts[q][int(windows.char_start[k, s]) : int(windows.char_end[k, e])]
    return Spans(texts, q_window, starts, ends)


def context_only(logits: torch.Tensor, windows: QAWindows) -> torch.Tensor:
    """Flat ``[2W, L]`` rows with every position outside the context masked: the distribution
    over where an answer may start or end, which fidelity compares (most windows hold no
    answer, and their [CLS] rows would make any two models agree)."""
    w, width = len(windows.example), logits.shape[-1]
    keep = windows.in_context[:, :width].unsqueeze(1).expand(w, 2, width).reshape(2 * w, width)
    return logits.masked_fill(~keep, MASKED_LOGIT)


# -- SQuAD's metric -------------------------------------------------------------------------------------
# as the official SQuAD v1.1 evaluation script (and the `squad` metric of `evaluate`) computes it

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """``exact_match`` and ``f1`` (fractions in [0, 1]), each the best over a question's gold answers."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em = [max(exact_match(p, g) for g in gs) for p, gs in zip(predictions, golds)]
    f1 = [max(token_f1(p, g) for g in gs) for p, gs in zip(predictions, golds)]
    return {"exact_match": float(np.mean(em)) if em else 0.0, "f1": float(np.mean(f1)) if f1 else 0.0}


def qa_scores(logits: torch.Tensor, labels: torch.Tensor, windows: QAWindows, constant: tuple[int, int]) -> dict[str, Any]:
    """SQuAD's scores of flat ``[2W, L]`` logits, the loss against the window labels, and the
    collapse flag: the same span position for every question, every answer empty, or no
    better than ``constant`` (always the train split's most frequent (start, end) position)."""
    spans = best_spans(logits, windows)
    out: dict[str, Any] = squad_scores(spans.texts, windows.answers)
    gold = labels.reshape(-1)
    out["loss"] = float(torch.nn.functional.cross_entropy(logits.float(), gold, ignore_index=IGNORE_INDEX))
    out["score"] = out["f1"]
    out["majority"] = windows.constant_f1(constant, logits.shape[-1])
    answered = spans.start >= 0
    same_place = answered.any() and bool(
        spans.start[answered].unique().numel() <= 1 and spans.end[answered].unique().numel() <= 1)
    out["collapsed"] = bool(same_place or not any(t.strip() for t in spans.texts) or out["score"] <= out["majority"])
    return out


def constant_position(labels: torch.Tensor) -> tuple[int, int]:
    """The most frequent (start, end) of the windows that hold their answer (train's)."""
    held = labels[labels[:, 0] > 0]
    if len(held) == 0:
        return 0, 0
    pairs, counts = held.unique(dim=0, return_counts=True)
    s, e = pairs[int(counts.argmax())].tolist()
    return int(s), int(e)
