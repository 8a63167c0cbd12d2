"""Cheap statistics of a dataset's train split, recorded with every search that used it.

The recommender compares datasets by these (:mod:`kdsearch.recommend.features`); a search
writes them into its ``search.json``, so reading past searches needs neither their data
nor their workdir.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from kdsearch.data.sources import RawData, label_names
from kdsearch.errors import DataError
from kdsearch.tasks import TASKS


def _entropy(labels: pd.Series) -> float:
    p = labels.value_counts(normalize=True).to_numpy()
    return float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else 0.0


def train_stats(raw: RawData) -> dict[str, Any]:
    """``name``, ``task``, ``train_size``, ``labels``, ``mean_length`` (words, or tokens for token
    classification, per example) and ``label_entropy`` (of the train labels over log(labels): 1 = balanced)."""
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
    }
