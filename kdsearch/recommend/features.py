"""Cheap features of a dataset: what the recommender measures datasets by."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kdsearch.data.prepare import data_key
from kdsearch.data.sources import load_raw
from kdsearch.data.stats import train_stats
from kdsearch.errors import KDSearchError
from kdsearch.fetch import locate
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


def describe(spec: DataSpec, workdir: str | Path | None = None) -> DatasetFeatures:
    """Features of ``spec``'s train split; ``workdir``'s teacher pool adds the teacher score.

    The pool is found by the data's cache key, which needs the spec's tokenizer: where that
    cannot be loaded (a fetched model not fetched here), there is no teacher score.
    """
    raw = load_raw(spec)
    teacher = None
    if workdir is not None:
        try:
            tok = spec.tokenizer
            if tok.kind == "pretrained" and tok.name:
                spec = dataclasses.replace(spec, tokenizer=dataclasses.replace(tok, name=locate(tok.name, workdir)))
            pool = pool_index(workdir, data_key(spec, raw))
        except KDSearchError:
            pool = None
        if pool is not None and pool.is_file():
            records = json.loads(pool.read_text())
            teacher = max((r["val_score"] for r in records), default=None)
    return DatasetFeatures(**train_stats(raw), teacher_score=teacher)
