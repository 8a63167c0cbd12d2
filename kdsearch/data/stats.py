"""Cheap statistics of a dataset's train split, recorded with every search that used it.

The recommender compares datasets by these (:mod:`kdsearch.recommend.features`); a search
writes them into its ``search.json``, so reading past searches needs neither their data
nor their workdir.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from kdsearch.data.sources import RawData, label_names
from kdsearch.errors import DataError
from kdsearch.tasks import TASKS

# words as a reader counts them: runs of letters and digits (punctuation is a token of its
# own in every tokenizer, so counting it would only raise every dataset's overlap alike)
_WORD = re.compile(r"\w+", re.UNICODE)
OVERLAP_EXAMPLES = 5000  # enough for a stable share (it moves < 1 point past a few thousand); tokenizing stays ~1 s


def _texts(raw: RawData) -> pd.Series:
    """What a model reads of each train example, as one string."""
    train, cols, task = raw.splits["train"], raw.columns, TASKS[raw.task]
    if task.extractive:
        return train[cols["question"]].astype(str) + " " + train[cols["context"]].astype(str)
    if task.per_token:
        return train[cols["tokens"]].map(lambda t: " ".join(map(str, t)))
    text = train[cols["text"]].astype(str)
    if "text_pair" in cols and cols["text_pair"] in train:
        text = text + " " + train[cols["text_pair"]].astype(str)
    return text


def vocab_overlap(raw: RawData, tokenizer: Any) -> float:
    """Share of the train split's word occurrences that ``tokenizer`` holds whole: one token,
    not unknown. Low overlap means the teacher reads the data in word pieces (another domain,
    language or spelling: tweets, mojibake), which the recommender may weigh."""
    counts: Counter[str] = Counter()
    for text in _texts(raw).iloc[:OVERLAP_EXAMPLES]:
        counts.update(_WORD.findall(text))
    if not counts:
        return math.nan
    words = list(counts)
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    whole = sum(counts[w] for w, i in zip(words, ids) if len(i) == 1 and i[0] != unk)
    return float(whole / sum(counts.values()))


def _entropy(labels: pd.Series) -> float:
    p = labels.value_counts(normalize=True).to_numpy()
    return float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else 0.0


def train_stats(raw: RawData, tokenizer: Any | None = None) -> dict[str, Any]:
    """``name``, ``task``, ``train_size``, ``labels``, ``mean_length`` (words, or tokens for token
    classification, per example), ``label_entropy`` (of the train labels over log(labels): 1 =
    balanced) and, given the tokenizer the models read with, ``vocab_overlap``."""
    train = raw.splits["train"]
    if len(train) == 0:
        raise DataError(f"train split of {raw.source!r} is empty")
    if TASKS[raw.task].extractive:
        # the words a model reads per question: question and context; the two "labels" (a
        # window's start and end rows) are always balanced
        lengths = (train[raw.columns["question"]].astype(str) + " " + train[raw.columns["context"]].astype(str)).str.split().map(len)
        labels = pd.Series(["start", "end"])
    elif TASKS[raw.task].per_token:
        lengths = train[raw.columns["tokens"]].map(len)
        labels = train[raw.columns["tags"]].explode()
    else:
        lengths = train[raw.columns["text"]].astype(str).str.split().map(len)
        labels = train[raw.columns["label"]]
    return {
        "name": raw.source,
        "task": raw.task,
        "train_size": int(len(train)),
        "labels": len(label_names(raw)),
        "mean_length": float(lengths.mean()),
        "label_entropy": _entropy(labels.astype(str)),
        **({"vocab_overlap": vocab_overlap(raw, tokenizer)} if tokenizer is not None else {}),
    }
