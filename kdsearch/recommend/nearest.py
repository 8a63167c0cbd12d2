"""Recommend a KD config for a dataset from past searches (AutoDistiller-style).

Nearest past datasets, not a regressor: the built-in store holds three datasets, too few to
fit a model over features and configs, while a weighted vote of neighbours stays readable
(every number in the answer traces to a past cell). Datasets are compared by their
:class:`DatasetFeatures` in fixed units (``SCALES``); each past dataset weighs
``exp(-(d**2 - d_min**2) / 2)``, 1 for the nearest. A config's score is
its weighted regret (points below its cell's best, mean over the dataset's cells and
seeds); the recommendation is the lowest-regret config run on datasets that carry at
least half of the weight.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdsearch.errors import KDSearchError
from kdsearch.fetch import label
from kdsearch.recommend.features import DatasetFeatures, describe
from kdsearch.knobs import BASELINE_STAGE
from kdsearch.reports.analysis import config_means
from kdsearch.results.store import ResultStore

MIN_COVERAGE = 0.5
# one unit of distance per feature: 10x the train size, labels or length; a quarter of the
# label entropy's range; another task; 10 points of teacher score. Fixed, not fitted: a
# handful of past datasets gives no stable spread to standardize by.
SCALES = np.array([math.log(10), math.log(10), math.log(10), 0.25, 1.0, 0.10])


@dataclass
class PastSearches:
    """Trial rows of past searches and the features of every dataset they ran on."""

    trials: pd.DataFrame
    features: dict[str, DatasetFeatures]
    metric: str
    mode: str
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)  # what each past architecture costs (costs.parquet)

    def within(self, max_ms: float) -> tuple[PastSearches, list[str]]:
        """Only the past cells whose student serves in at most ``max_ms`` (ONNX, batch 1, as
        measured by the same search: another search's tokenizer gives other lengths and
        embeddings), and the students left out because no search measured them."""
        from kdsearch.reports.tradeoff import LATENCY

        if self.costs.empty:
            raise KDSearchError("--max-ms: the past searches measured no serving costs (run `kdsearch costs DIR` on them)")
        students = self.costs[self.costs["role"] == "student"]
        where = list(zip(self.trials["search_id"], self.trials["dataset"], self.trials["student"]))
        measured = pd.Series(where).isin(set(zip(students["search_id"], students["dataset"], students["model"]))).to_numpy()
        fast = students[students[LATENCY] <= max_ms]
        keep = pd.Series(where).isin(set(zip(fast["search_id"], fast["dataset"], fast["model"]))).to_numpy()
        unmeasured = sorted({f"{d}/{st} ({sid})" for (sid, d, st), m in zip(where, measured) if not m})
        trials = self.trials[keep]
        if trials.empty:
            fastest = students[LATENCY].min()
            also = (f"; {len(unmeasured)} past student(s) were never measured ({', '.join(unmeasured)}), so a faster one may "
                    "exist: `kdsearch costs DIR` measures them") if unmeasured else ""
            raise KDSearchError(f"--max-ms: no measured past student serves in {max_ms:g} ms (the fastest measured: "
                                f"{fastest:.2f} ms){also}")
        return dataclasses.replace(self, trials=trials), unmeasured


@dataclass
class Evidence:
    dataset: str
    distance: float
    weight: float
    regret: float | None  # points below the best of its cells; None: not run there
    best_config: dict[str, Any]
    best_score: float


@dataclass
class Recommendation:
    dataset: str
    config: dict[str, Any]
    key: str
    regret: float  # weighted, in metric points
    coverage: float
    confidence: str
    why: str
    evidence: list[Evidence] = field(default_factory=list)


def search_folders(stores: Sequence[str | Path]) -> list[Path]:
    """Every search under ``stores``: a folder with trials.parquet, or folders holding them."""
    out: list[Path] = []
    for s in stores:
        root = Path(s)
        if (root / "trials.parquet").is_file():
            out.append(root)
        elif root.is_dir():
            out += sorted(p.parent for p in root.rglob("trials.parquet"))
        else:
            raise KDSearchError(f"store {str(s)!r} does not exist")
    if not out:
        raise KDSearchError(f"no searches (trials.parquet) under {', '.join(map(str, stores))}")
    return out


def load_past(stores: Sequence[str | Path], metric: str = "val_score") -> PastSearches:
    """Read past searches and describe each of their datasets."""
    from kdsearch.reports.analysis import load

    folders = search_folders(stores)
    trials = load(folders)
    features: dict[str, DatasetFeatures] = {}
    modes = set()
    teacher_of: dict[str, str] = {}  # search id -> its teacher model
    for folder in folders:
        store = ResultStore(folder)
        spec = store.spec()
        modes.add(spec.search.mode)
        meta = store.meta()
        teacher_of[meta["search_id"]] = label(spec.teachers.model)
        # the teachers a search used and its datasets' statistics are in its search.json: neither
        # its workdir nor its data need to be here (older searches: described from their data)
        teachers = meta.get("teachers") or {}
        recorded = meta.get("datasets") or {}
        described = [DatasetFeatures(**stats) for stats in recorded.values()] or [describe(d, spec.workdir) for d in spec.data_specs]
        for f in described:
            picked = teachers.get(f.name)
            if picked:
                f = dataclasses.replace(f, teacher_score=max(t["val_score"] for t in picked.values()))
            if f.name not in features or (features[f.name].teacher_score is None and f.teacher_score is not None):
                features[f.name] = f
    if len(modes) > 1:
        raise KDSearchError("past searches disagree on search.mode (max vs min); recommend from one kind")
    from kdsearch.reports.tradeoff import load_costs

    costs = load_costs(folders, per_search=True)
    # one cell (dataset/student) distilled from two teacher models is two experiments: keep them apart
    teacher = trials["search_id"].map(teacher_of)
    mixed = teacher.groupby(trials["cell"]).transform("nunique") > 1
    trials.loc[mixed, "cell"] = trials.loc[mixed, "cell"] + " (teacher " + teacher[mixed] + ")"
    return PastSearches(trials, features, metric, modes.pop(), costs)


def regrets(past: PastSearches, student: str | None = None) -> pd.DataFrame:
    """Per (dataset, config): regret below each cell's best, mean over the dataset's cells."""
    t = past.trials if student is None else past.trials[past.trials["student"] == student]
    if t.empty:
        raise KDSearchError(f"no past trials for student {student!r}")
    means = config_means(t, past.metric)
    sign = 1.0 if past.mode == "max" else -1.0
    best = means.groupby("cell")["mean"].transform("max" if past.mode == "max" else "min")
    means["regret"] = sign * (best - means["mean"]) * 100.0
    means["dataset"] = means["cell"].map(t.groupby("cell")["dataset"].first())
    return means


def _distances(target: DatasetFeatures, past: dict[str, DatasetFeatures], exclude_self: bool) -> dict[str, float]:
    """RMS over features of the difference in each feature's unit (see ``SCALES``)."""
    names = [n for n in past if not (exclude_self and n == target.name)]
    if not names:
        raise KDSearchError(f"no past dataset other than {target.name!r} to learn from")
    with_teacher = target.teacher_score is not None and all(past[n].teacher_score is not None for n in names)
    scale = SCALES[: 6 if with_teacher else 5]
    zt = target.vector(with_teacher) / scale
    return {n: float(np.sqrt((((past[n].vector(with_teacher) / scale) - zt) ** 2).mean())) for n in names}


def recommend(
    target: DatasetFeatures, past: PastSearches, student: str | None = None, exclude_self: bool = False
) -> Recommendation:
    """The config to use on ``target``; ``exclude_self`` leaves its own past searches out."""
    distances = _distances(target, past.features, exclude_self)
    nearest = min(distances.values())
    # relative to the nearest, so far-away stores still give an answer (and say so)
    weights = {n: math.exp(-(d**2 - nearest**2) / 2) for n, d in distances.items()}
    table = regrets(past, student)
    table = table[table["dataset"].isin(weights)]
    if table.empty:
        raise KDSearchError("the past searches have no finished KD trials on other datasets")
    per = table.groupby(["config_key", "dataset"])["regret"].mean().unstack()
    w = pd.Series(weights)[per.columns]
    have = per.notna()
    coverage = (have * w).sum(1) / w.sum()
    score = (per.fillna(0.0) * w).sum(1) / (have * w).sum(1)
    candidates = score[coverage >= min(MIN_COVERAGE, coverage.max())]
    ranked = candidates.sort_values(kind="stable")
    key = str(ranked.index[0])
    noise = float(table["std"].median() * 100.0)
    support = per.loc[key].dropna()
    if len(support) >= 3 and support.max() <= noise:
        confidence = "high"
    elif len(support) >= 2 and ranked.iloc[0] <= 2 * noise:
        confidence = "medium"
    else:
        confidence = "low"
    runner = f"; runner-up {ranked.iloc[1]:.2f} points" if len(ranked) > 1 else ""
    why = (
        f"weighted regret {ranked.iloc[0]:.2f} points (0 = best in every past cell){runner}; run on {len(support)} of "
        f"{len(w)} past dataset(s) carrying {coverage[key]:.0%} of the weight; seed noise ~{noise:.2f} points "
        f"(median std over configs)"
    )
    evidence = []
    for n in sorted(weights, key=lambda n: distances[n]):
        cells = table[table["dataset"] == n]
        best_row = cells.loc[cells["regret"].idxmin()] if len(cells) else None
        evidence.append(
            Evidence(
                n,
                distances[n],
                weights[n],
                None if pd.isna(per.loc[key].get(n, math.nan)) else float(per.loc[key][n]),
                _knobs(str(best_row["config_key"])) if best_row is not None else {},
                float(best_row["mean"]) if best_row is not None else math.nan,
            )
        )
    return Recommendation(target.name, _knobs(key), key, float(ranked.iloc[0]), float(coverage[key]), confidence, why, evidence)


def _knobs(key: str) -> dict[str, Any]:
    return json.loads(key)


def leave_one_out(past: PastSearches, student: str | None = None) -> pd.DataFrame:
    """For each past dataset: recommend from the others, then look the config up in its cells.

    ``gap`` is the dataset's best config mean minus the recommendation's mean (points,
    mean over its cells, ± std over them); ``no_kd_gap`` is the same for the no-KD baseline.
    """
    rows = []
    table = regrets(past, student)
    keys = table["config_key"].map(_knobs)
    varying = [k for k in dict.fromkeys(k for d in keys for k in d) if len({str(d.get(k)) for d in keys}) > 1]
    t = past.trials if student is None else past.trials[past.trials["student"] == student]
    ok = t[t["status"] == "ok"]
    sign = 1.0 if past.mode == "max" else -1.0
    for name in sorted(past.features):
        if name not in set(table["dataset"]):
            continue
        rec = recommend(past.features[name], past, student, exclude_self=True)
        here = table[(table["dataset"] == name)]
        mine = here[here["config_key"] == rec.key]
        base = ok[(ok["dataset"] == name) & (ok["stage"] == BASELINE_STAGE)].groupby("cell")[past.metric].mean()
        best = here.groupby("cell")["mean"].max() if past.mode == "max" else here.groupby("cell")["mean"].min()
        no_kd = (sign * (best - base) * 100.0).dropna()
        rows.append(
            {
                "dataset": name,
                "recommended": ", ".join(f"{k}={rec.config.get(k)}" for k in varying),
                "confidence": rec.confidence,
                "cells": int(here["cell"].nunique()),
                "cells_with_it": int(len(mine)),
                "gap": float(mine["regret"].mean()) if len(mine) else math.nan,
                "gap_std": float(mine["regret"].std(ddof=0)) if len(mine) else math.nan,
                "seed_std": float(mine["std"].mean() * 100.0) if len(mine) else math.nan,
                "no_kd_gap": float(no_kd.mean()) if len(no_kd) else math.nan,
            }
        )
    return pd.DataFrame(rows)
