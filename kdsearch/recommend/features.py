"""Cheap features of a dataset: what the recommender measures datasets by.

``FEATURES`` is the table: each feature, how it is read off a :class:`DatasetFeatures`, its
unit of distance and why that unit. Units are fixed, not fitted: a handful of past datasets
gives no stable spread to standardise by. A feature a dataset lacks (a search written before
the feature existed, a dataset without a teacher pool here) is NaN, and the recommender
compares datasets on the features both sides have.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kdsearch.errors import KDSearchError


@dataclass(frozen=True)
class DatasetFeatures:
    """One dataset, described without training a student (teacher features where a pool exists)."""

    name: str
    task: str
    train_size: int
    labels: int
    mean_length: float  # words (or tokens, for token classification) per example
    label_entropy: float  # of the train labels, divided by log(labels): 1 = balanced
    vocab_overlap: float | None = None  # share of train words the teacher's tokenizer holds whole
    teacher_score: float | None = None  # best validation score in its teacher pool
    teacher_ece: float | None = None  # calibration error of that teacher on validation
    teacher_agreement: float | None = None  # top-1 agreement of t_hs and t_ll on validation

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DatasetFeatures:
        """From a search.json's ``datasets`` entry of any age: keys it lacks read as missing, keys
        a newer kdsearch added are left out (an older reader still reads newer searches)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Feature:
    read: Callable[[DatasetFeatures], float | str]
    unit: float | None  # a difference of one unit counts as much as another task; None: a category
    why: str


FEATURES: dict[str, Feature] = {
    "task": Feature(lambda f: f.task, None, "another task is one unit away, whichever it is"),
    "train_size": Feature(lambda f: math.log(f.train_size), math.log(10), "10x the train examples"),
    "labels": Feature(lambda f: math.log(f.labels), math.log(10), "10x the labels"),
    "mean_length": Feature(lambda f: math.log(max(f.mean_length, 1.0)), math.log(10), "10x the words per example"),
    "label_entropy": Feature(lambda f: f.label_entropy, 0.25, "a quarter of the range from one class to balanced"),
    "vocab_overlap": Feature(lambda f: _num(f.vocab_overlap), 0.10,
                             "10 points of the words the teacher's tokenizer holds whole (tweets and mojibake sit low)"),
    "teacher_score": Feature(lambda f: _num(f.teacher_score), 0.10, "10 points of the teacher's validation score"),
    "teacher_ece": Feature(lambda f: _num(f.teacher_ece), 0.05,
                           "5 points of calibration error (a confident, wrong teacher passes on its confidence)"),
    "teacher_agreement": Feature(lambda f: _num(f.teacher_agreement), 0.10,
                                 "10 points of t_hs / t_ll agreement (the teacher knob matters where they differ)"),
}


def difference(name: str, a: DatasetFeatures, b: DatasetFeatures) -> float:
    """``a`` and ``b`` apart on one feature, in its unit; NaN when either lacks it."""
    feature = FEATURES[name]
    x, y = feature.read(a), feature.read(b)
    if feature.unit is None:  # a category: the same or another
        return 0.0 if x == y else 1.0
    assert isinstance(x, float) and isinstance(y, float)
    if math.isnan(x) or math.isnan(y):
        return math.nan
    return abs(x - y) / feature.unit


def describe(spec: Any, workdir: str | Path | None = None) -> DatasetFeatures:
    """Features of ``spec``'s (a :class:`DataSpec`) train split; ``workdir``'s teacher pool, where
    one was trained on this data, adds the teacher's.

    The pool is found by the data's cache key, which needs the spec's tokenizer: where that
    cannot be loaded (a fetched model not fetched here), there are no teacher features and no
    vocabulary overlap.
    """
    from kdsearch.data.prepare import data_key
    from kdsearch.data.sources import load_raw
    from kdsearch.data.stats import train_stats
    from kdsearch.fetch import locate
    from kdsearch.teachers import pool_index

    raw = load_raw(spec)
    stats = train_stats(raw)
    if workdir is None:
        return DatasetFeatures.from_record(stats)
    try:
        tok = spec.tokenizer
        if tok.kind == "pretrained" and tok.name:
            spec = dataclasses.replace(spec, tokenizer=dataclasses.replace(tok, name=locate(tok.name, workdir)))
        teaching = spec.for_teachers()  # the pool is the teachers' data's
        pool = pool_index(workdir, data_key(teaching, raw if teaching is spec else load_raw(teaching)))
    except KDSearchError:
        return DatasetFeatures.from_record(stats)
    if not pool.is_file() or not json.loads(pool.read_text()):
        if tok.kind == "pretrained":  # the tokenizer alone, for the vocabulary overlap
            from kdsearch.data.tokenizer import load_pretrained_tokenizer

            stats = train_stats(raw, load_pretrained_tokenizer(spec.tokenizer.name))
        return DatasetFeatures.from_record(stats)
    # a pool exists, so the data was prepared here before: its cache (and the teacher's cached
    # logits) make this cheap
    return DatasetFeatures.from_record({**pooled_stats(spec, workdir), "name": stats["name"]})


def pooled_stats(spec: Any, workdir: str | Path) -> dict[str, Any]:
    """The train statistics and teacher features of data that has a teacher pool in ``workdir``."""
    from kdsearch.data.prepare import prepare_data
    from kdsearch.teachers import open_pool

    data = prepare_data(spec, workdir, log=lambda _: None)
    pool = open_pool(workdir, spec, data, log=lambda _: None)
    return {**data.stats, "teacher_score": pool.select("t_hs").val_score, **pool.traits()}
