"""Cheap features of a dataset: what the recommender measures datasets by."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kdsearch.data.prepare import data_key
from kdsearch.data.sources import label_names, load_raw
from kdsearch.errors import DataError
from kdsearch.spec import DataSpec
from kdsearch.teachers import pool_index
from kdsearch.tasks import TASKS


@dataclass(frozen=True)
class DatasetFeatures:
    """One dataset, described without training anything (the teacher's score if a pool exists)."""

    name: str
    task: str
    train_size: int
    labels: int
    mean_length: float  # words (or tokens, for token classification) per example
    label_entropy: float  # of the train labels, divided by log(labels): 1 = balanced
    teacher_score: float | None = None  # best validation score in its teacher pool

    def vector(self, with_teacher: bool) -> np.ndarray:
        v = [
            math.log(self.train_size),
            math.log(self.labels),
            math.log(max(self.mean_length, 1.0)),
            self.label_entropy,
            float(TASKS[self.task].per_token),
        ]
        if with_teacher:
            v.append(self.teacher_score if self.teacher_score is not None else math.nan)
        return np.array(v, dtype=float)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _entropy(labels: pd.Series) -> float:
    p = labels.value_counts(normalize=True).to_numpy()
    return float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else 0.0


def describe(spec: DataSpec, workdir: str | Path | None = None) -> DatasetFeatures:
    """Features of ``spec``'s train split; ``workdir``'s teacher pool adds the teacher score."""
    raw = load_raw(spec)
    train = raw.splits["train"]
    if len(train) == 0:
        raise DataError(f"train split of {raw.source!r} is empty")
    if TASKS[raw.task].per_token:
        lengths = train[raw.columns["tokens"]].map(len)
        labels = train[raw.columns["tags"]].explode()
    else:
        lengths = train[raw.columns["text"]].astype(str).str.split().map(len)
        labels = train[raw.columns["label"]]
    teacher = None
    if workdir is not None:
        pool = pool_index(workdir, data_key(spec, raw))
        if pool.is_file():
            records = json.loads(pool.read_text())
            teacher = max((r["val_score"] for r in records), default=None)
    return DatasetFeatures(
        name=raw.source,
        task=raw.task,
        train_size=len(train),
        labels=len(label_names(raw)),
        mean_length=float(lengths.mean()),
        label_entropy=_entropy(labels.astype(str)),
        teacher_score=teacher,
    )
