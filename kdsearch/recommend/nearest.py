"""Recommend a KD config for a dataset from past searches (AutoDistiller-style).

Nearest past datasets, not a regressor: the built-in store holds three datasets, too few to
fit a model over features and configs, while a weighted vote of neighbours stays readable
(every number in the answer traces to a past cell). Datasets are compared by their
:class:`DatasetFeatures`, each feature in its fixed unit (``features.FEATURES``), the RMS
over the features the target and every past dataset have; each past dataset weighs
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
from kdsearch.knobs import BASELINE_STAGE, LATER_DEFAULTS
from kdsearch.recommend.features import FEATURES, DatasetFeatures, describe, difference
from kdsearch.reports.analysis import RECOMMENDED, config_means
from kdsearch.results import stats
from kdsearch.results.store import ResultStore

MIN_COVERAGE = 0.5


@dataclass
class PastSearches:
    """Trial rows of past searches and the features of every dataset they ran on."""

    trials: pd.DataFrame
    features: dict[str, DatasetFeatures]
    metric: str
    mode: str
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)  # what each past architecture costs (costs.parquet)
    unfinished: tuple[str, ...] = ()  # searches still running or stopped: their rows so far are read

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
    apart: dict[str, float] = field(default_factory=dict)  # feature -> how far, in its unit (what the distance is made of)

    def why(self) -> str:
        """The features that make this dataset near or far, in words."""
        if not self.apart:
            return "no feature tells them apart"
        ranked = sorted(self.apart.items(), key=lambda kv: kv[1])
        near = ", ".join(f for f, d in ranked if d < 0.25) or "none"
        far = ", ".join(f"{f} {d:.2f}" for f, d in ranked[::-1] if d >= 0.25)
        return f"alike in {near}" + (f"; apart in {far} (units)" if far else "")


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
    for folder in folders:
        store = ResultStore(folder)
        spec = store.spec(registries=False)
        modes.add(spec.search.mode)
        meta = store.meta()
        # the teachers a search used and its datasets' statistics are in its search.json: neither
        # its workdir nor its data need to be here (older searches: described from their data)
        teachers = meta.get("teachers") or {}
        recorded = meta.get("datasets") or {}
        described = ([DatasetFeatures.from_record(stats) for stats in recorded.values()]
                     or [describe(d, spec.workdir) for d in spec.data_specs])
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
    unfinished = tuple(f.name for f in folders if not ResultStore(f).meta().get("finished"))
    # ``load`` keeps a cell that these searches ran as other experiments apart (results.experiments)
    return PastSearches(trials, features, metric, modes.pop(), costs, unfinished)


def regrets(past: PastSearches, student: str | None = None) -> pd.DataFrame:
    """Per (cell, config): regret below the cell's best, in points.

    A search that set epochs per rung (successive halving) trained its configs at several
    lengths: each config is judged at the longest it reached, against the best of that
    rung. Keys leave epochs out (the recommendation is a KD config, not a schedule).
    """
    t = past.trials if student is None else past.trials[past.trials["student"] == student]
    if t.empty:
        raise KDSearchError(f"no past trials for student {student!r}")
    means = config_means(t, past.metric)
    sign = 1.0 if past.mode == "max" else -1.0
    # a cell's rungs; rows of searches without the column stand at one rung (NaN would drop them)
    rung = means["epochs"].fillna(0) if "epochs" in means else pd.Series(0, index=means.index)
    best = means.groupby([means["cell"], rung])["mean"].transform("max" if past.mode == "max" else "min")
    means["regret"] = sign * (best - means["mean"]) * 100.0
    means["rung"] = rung
    # epochs are a cell's schedule, not a KD choice: every search's keys leave them out alike
    # (``trial_key`` keeps the rows' own, which their seeds are found by)
    means["trial_key"] = means["config_key"]
    means["config_key"] = means["config_key"].map(without_epochs)
    means = means.sort_values("rung", kind="stable").groupby(["cell", "config_key"], sort=False).tail(1)
    means["dataset"] = means["cell"].map(t.groupby("cell")["dataset"].first())
    return means.reset_index(drop=True)


def without_epochs(key: str) -> str:
    """A config key less its schedule (``epochs``): the KD config it trains, at any length."""
    knobs = json.loads(key)
    knobs.pop("epochs", None)
    return json.dumps(knobs, sort_keys=True)


def usable_features(target: DatasetFeatures, past: dict[str, DatasetFeatures], names: Sequence[str]) -> list[str]:
    """The features the target and every past dataset in ``names`` have."""
    return [f for f in FEATURES if all(not math.isnan(difference(f, target, past[n])) for n in names)]


def _distances(target: DatasetFeatures, past: dict[str, DatasetFeatures], exclude_self: bool,
               features: Sequence[str] | None = None) -> dict[str, float]:
    """RMS over features of the difference in each feature's unit (``features.FEATURES``);
    ``features`` limits them (the leave-one-out's ablation): one left out counts as telling no
    two datasets apart (a difference of 0), so the mean stays over every usable feature. Left
    out of the mean instead, it would rescale every distance, and so every weight: a feature
    equal on all datasets would then seem to carry the answer."""
    names = [n for n in past if not (exclude_self and n == target.name)]
    if not names:
        raise KDSearchError(f"no past dataset other than {target.name!r} to learn from")
    usable = usable_features(target, past, names)
    used = [f for f in usable if features is None or f in features]
    if not used:
        return {n: 0.0 for n in names}  # nothing tells them apart: every dataset weighs alike
    return {n: float(np.sqrt(sum(difference(f, target, past[n]) ** 2 for f in used) / len(usable))) for n in names}


def recommend(
    target: DatasetFeatures, past: PastSearches, student: str | None = None, exclude_self: bool = False,
    features: Sequence[str] | None = None, table: pd.DataFrame | None = None,
) -> Recommendation:
    """The config to use on ``target``; ``exclude_self`` leaves its own past searches out,
    ``features`` limits what datasets are compared by, ``table`` is ``regrets(past, student)``
    when the caller has it."""
    distances = _distances(target, past.features, exclude_self, features)
    used = usable_features(target, past.features, list(distances))
    used = [f for f in used if features is None or f in features]
    nearest = min(distances.values())
    # relative to the nearest, so far-away stores still give an answer (and say so)
    weights = {n: math.exp(-(d**2 - nearest**2) / 2) for n, d in distances.items()}
    table = regrets(past, student) if table is None else table
    table = table[table["dataset"].isin(weights)]
    if table.empty:
        raise KDSearchError("the past searches have no finished KD trials on other datasets")
    per = table.groupby(["config_key", "dataset"])["regret"].mean().unstack()
    w = pd.Series(weights)[per.columns]
    have = per.notna()
    coverage = (have * w).sum(1) / w.sum()
    score = (per.fillna(0.0) * w).sum(1) / (have * w).sum(1)
    ranked = rank_configs(score[coverage >= min(MIN_COVERAGE, coverage.max())])
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
                {f: difference(f, target, past.features[n]) for f in used},
            )
        )
    return Recommendation(target.name, _knobs(key), key, float(ranked.iloc[0]), float(coverage[key]), confidence, why, evidence)


def _knobs(key: str) -> dict[str, Any]:
    return json.loads(key)


def _cost_on(here: pd.DataFrame, key: str | None) -> float:
    """A config's regret on one dataset, mean over its cells; NaN where it was not run."""
    if key is None:
        return math.nan
    mine = here[here["config_key"] == key]
    return float(mine["regret"].mean()) if len(mine) else math.nan


def best_on_average(table: pd.DataFrame, only: dict[str, str] | None = None) -> str | None:
    """The config with the lowest mean regret over ``table``'s datasets (each dataset one vote,
    its cells averaged), among configs run on at least half of them; ``only`` keeps configs
    whose knobs read so (the paper's recommendation: t_ll, ce, tau_s 1, its alpha and tau_t
    the best of these)."""
    if only:
        keys = table["config_key"].map(_knobs)
        table = table[keys.map(lambda k: all(str(k.get(n, v)) == v for n, v in only.items())).to_numpy()]
    if table.empty:
        return None
    per = table.groupby(["config_key", "dataset"])["regret"].mean().unstack()
    coverage = per.notna().mean(axis=1)
    score = per.mean(axis=1)[coverage >= min(MIN_COVERAGE, coverage.max())]
    return str(rank_configs(score).index[0])


def rank_configs(score: pd.Series) -> pd.Series:
    """Configs by score, lowest first; among equal scores the one nearest the paper's
    recommendation (fewest knobs set otherwise). Scores tie exactly where the past cells trained
    the configs as one (t_hs and t_ll one checkpoint: copies): there the data cannot choose, and
    the paper's choice is the one with evidence elsewhere (not the first name in sort order)."""
    away = score.index.map(lambda key: sum(str(v) != PAPER_CONFIG.get(k, str(v)) for k, v in _knobs(str(key)).items()))
    order = pd.DataFrame({"score": score.to_numpy(), "away": list(away)}, index=score.index)
    return score[order.sort_values(["score", "away"], kind="stable").index]


# the paper's fixed recommendation as config knobs read (later objectives at their defaults: no DIST)
PAPER_CONFIG = {**RECOMMENDED, **{k: str(v) for k, v in LATER_DEFAULTS.items()}}


def leave_one_out(past: PastSearches, student: str | None = None, features: Sequence[str] | None = None,
                  full: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each past dataset: recommend from the others, then look each answer up in its cells.

    Three answers, each costed on the held-out dataset as its best config's mean minus the
    answer's (points, mean over its cells): ``recommender`` (nearest datasets by
    ``features``, all by default), ``paper`` (Sultan et al.'s fixed t_ll, ce, tau_s 1, at the
    alpha and tau_t best on average over the others) and ``average`` (the config best on
    average over the others). ``no_kd`` is the same cost for not distilling. ``full``, this
    table with every feature when the caller has it, lends the columns no feature changes
    (the ablation asks again once per feature).
    """
    rows = []
    table = regrets(past, student)
    keys = table["config_key"].map(_knobs)
    varying = [k for k in dict.fromkeys(k for d in keys for k in d) if len({str(d.get(k)) for d in keys}) > 1]
    t = past.trials if student is None else past.trials[past.trials["student"] == student]
    ok = t[t["status"] == "ok"]
    sign = 1.0 if past.mode == "max" else -1.0
    lent = full.set_index("dataset") if full is not None and len(full) else None
    for name in sorted(past.features):
        if name not in set(table["dataset"]):
            continue
        others = table[table["dataset"] != name]
        if others.empty:
            continue
        rec = recommend(past.features[name], past, student, exclude_self=True, features=features, table=table)
        here = table[table["dataset"] == name]
        nearest = sorted((e for e in rec.evidence), key=lambda e: e.distance)[:2]
        row = {"dataset": name, "cells": int(here["cell"].nunique()),
               "recommended": ", ".join(f"{k}={rec.config.get(k)}" for k in varying),
               "nearest": ", ".join(f"{e.dataset} ({e.distance:.2f})" for e in nearest),
               "recommender": _cost_on(here, rec.key)}
        if lent is not None and name in lent.index:
            row.update({c: lent.at[name, c] for c in ("paper", "average", "no_kd", "seed_std")})
        else:
            top = here[here["rung"] == here.groupby("cell")["rung"].transform("max")]
            best = top.groupby("cell")["mean"].max() if past.mode == "max" else top.groupby("cell")["mean"].min()
            base = ok[(ok["dataset"] == name) & (ok["stage"] == BASELINE_STAGE)].groupby("cell")[past.metric].mean()
            no_kd = (sign * (best - base) * 100.0).dropna()
            row.update({"paper": _cost_on(here, best_on_average(others, PAPER_CONFIG)),
                        "average": _cost_on(here, best_on_average(others)),
                        "no_kd": float(no_kd.mean()) if len(no_kd) else math.nan,
                        "seed_std": float(here["std"].median() * 100.0)})
        rows.append({**row, "confidence": rec.confidence})
    return pd.DataFrame(rows)


BASELINES = ("paper", "average")  # what the recommender must beat (the target: below both on the mean)


def loo_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Mean leave-one-out cost of each answer over the datasets where all three were run, and
    the recommender against each baseline tested over those datasets (``vs paper``, ``vs
    average``: :class:`kdsearch.results.stats.Paired` of the recommender's cost minus the
    baseline's, a dataset one pair): a mean below both can be a hundredth of a point."""
    both = table.dropna(subset=["recommender", *BASELINES])
    out: dict[str, Any] = {"datasets": int(len(both)), "of": int(len(table))}
    for col in ("recommender", *BASELINES, "no_kd"):
        out[col] = float(both[col].mean()) if len(both) else math.nan
    out["beats both"] = bool(len(both)) and out["recommender"] < min(out[b] for b in BASELINES)
    for b in BASELINES:
        out[f"vs {b}"] = stats.Paired({i: float(r - c) for i, (r, c) in enumerate(zip(both["recommender"], both[b]))})
    return out


def loo_verdict(m: dict[str, Any]) -> str:
    """:func:`loo_summary` in words: the means, whether the recommender is below both, and each
    difference as the verdict test over datasets reads it."""
    no_kd = "" if math.isnan(m["no_kd"]) else f" (no KD {m['no_kd']:.2f})"  # searches without the baseline have none
    head = (f"recommender {m['recommender']:.2f}, paper {m['paper']:.2f}, average {m['average']:.2f} points{no_kd}: "
            "the recommender is " + ("below both" if m["beats both"] else "NOT below both baselines"))
    parts = []
    for b in BASELINES:
        t: stats.Paired = m[f"vs {b}"]
        name = stats.TESTS[t.test].label
        figures = f"{t.mean:+.2f} points, {name} p {t.p:.3f}" if t.seeds else "no dataset"
        if not t.reachable:
            said = f"cannot tell: {t.seeds} dataset(s) can never show a difference at {t.level:g}; {t.needed} can"
        elif t.real:
            said = "the recommender costs less, for real" if t.mean < 0 else "the recommender costs more, for real"
        else:
            said = "cannot tell: inside the noise"
        parts.append(f"against the {b} {figures} ({said})")
    return f"{head}; tested over the datasets (each one pair): {'; '.join(parts)}"


def feature_ablation(past: PastSearches, student: str | None = None, full: pd.DataFrame | None = None) -> pd.DataFrame:
    """Which features carry the recommendation: the mean leave-one-out cost with every usable
    feature, and with each one left out (a rise: it carries the answer), and how many
    held-out datasets get another config without it. ``full`` is ``leave_one_out(past,
    student)`` when the caller has it."""
    full = leave_one_out(past, student) if full is None else full
    names = sorted(past.features)
    used = set.intersection(*[set(usable_features(past.features[n], past.features, [m for m in names if m != n]))
                              for n in names]) if len(names) > 1 else set()
    rows = [{"features": "all", "mean cost": loo_summary(full)["recommender"], "answers changed": 0}]
    for f in FEATURES:
        if f not in used:
            continue
        without = leave_one_out(past, student, [g for g in FEATURES if g != f], full=full)
        changed = int((without["recommended"] != full["recommended"]).sum())
        rows.append({"features": f"without {f}", "mean cost": loo_summary(without)["recommender"], "answers changed": changed})
    return pd.DataFrame(rows)
