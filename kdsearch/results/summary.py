"""From trial rows to answers: configs averaged over seeds, the best config per cell, honestly.

Two rules keep a summary from presenting noise as a finding:

- a model whose validation predictions are one class, or no better than always predicting
  the majority class, is *collapsed*: its row says so, a warning line says how many, and a
  cell whose every config collapsed names no best;
- a best config is judged only on seeds it was not picked on: its gain over the no-KD
  baseline on the selection seeds is shown seed by seed and labelled optimistic, and the
  verdicts ("a real gain", "cannot tell") come from confirmation seeds
  (``search.confirm_seeds``, rows with ``role: confirm``) on the test split, through the
  paired test of :mod:`kdsearch.results.stats`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kdsearch import knobs
from kdsearch.knobs import BASELINE_STAGE, KNOBS
from kdsearch.results import stats
from kdsearch.results.store import is_missing, without_copies


def knob_columns(df: pd.DataFrame) -> list[str]:
    return [k for k in KNOBS if k in df.columns]


def fixed_knobs(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``table`` without the knob columns that hold one value in every row, and those knobs with
    their value: a table of configs shows what tells them apart, and names the rest once. A later
    knob's missing value (a row written before it existed, so trained with its default) reads as
    its default."""
    table = table.copy()
    for k in knob_columns(table):
        if KNOBS[k].since > 1:
            table[k] = table[k].astype(object).where(table[k].notna(), KNOBS[k].default)
    fixed = {k: table[k].iloc[0] for k in knob_columns(table) if len(table) and table[k].nunique(dropna=False) <= 1}
    return table.drop(columns=list(fixed)), fixed


def collapsed_column(metric: str) -> str:
    """The row's collapse flag for ``metric``'s split (``val_score`` -> ``val_collapsed``)."""
    return metric.split("_", 1)[0] + "_collapsed"


def collapsed_flags(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Per row, whether its student collapsed to one class on ``metric``'s split (no flag: False)."""
    col = collapsed_column(metric)
    if col not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows[col].map(lambda v: bool(v) if v is not None and v == v else False)


def collapsed_configs(trials: pd.DataFrame, metric: str) -> set[tuple[str, str]]:
    """(cell, config_key) of the configs whose every finished seed collapsed to one class."""
    ok = trials[trials["status"] == "ok"]
    if ok.empty:
        return set()
    every = collapsed_flags(ok, metric).groupby([ok["cell"], ok["config_key"]]).all()
    return {(str(c), str(k)) for (c, k), d in every.items() if d}


def _mean(v: np.ndarray) -> float:
    """``pd.Series(v).mean()``, bit for bit (NaN skipped): reports printed from it rebuild to the byte."""
    seen = ~np.isnan(v)
    return float(np.where(seen, v, 0.0).sum() / seen.sum()) if seen.any() else math.nan


def _std(v: np.ndarray) -> float:
    """``pd.Series(v).std(ddof=1)``, bit for bit: pandas' two-pass variance over the values seen."""
    seen = ~np.isnan(v)
    n = int(seen.sum())
    if n < 2:
        return math.nan
    filled = np.where(seen, v, 0.0)
    sqr = np.where(seen, (filled.sum() / n - filled) ** 2, 0.0)
    return float(np.sqrt(sqr.sum() / (n - 1)))


def config_table(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (cell, config): the metric's mean, std and count over finished seeds.

    A config with a failed or diverged seed keeps its row with ``failed`` > 0, and its
    mean counts only finished seeds (the search itself ranks it as the worst);
    ``collapsed`` counts its finished seeds that collapsed to one class.
    """
    if trials.empty or metric not in trials.columns:
        return pd.DataFrame()
    knob_cols = knob_columns(trials)
    ok = (trials["status"] == "ok").to_numpy(dtype=bool)
    collapsed = collapsed_flags(trials, metric).to_numpy(dtype=bool)
    extras = [c for c in ("val_agreement", "val_kl", "test_score") if c in trials.columns]
    values = {c: trials[c].astype(float).to_numpy() for c in [metric, *extras]}
    # groups in order of their first row, each its rows in trial order (numpy per group, not
    # pandas: a breadth study's 500 configs took seconds of every report and `results`)
    codes, _ = pd.factorize(pd.MultiIndex.from_arrays([trials["cell"], trials["config_key"]]), use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
    columns = ["cell", "stage", *knob_cols, *(["tau_s_same"] if "tau_s_same" in trials else [])]
    firsts = trials[[c for c in columns if c in trials.columns]]
    rows = []
    for idx in sorted(groups, key=lambda g: g[0]):
        done = idx[ok[idx]]
        first = firsts.iloc[idx[0]]
        row: dict[str, Any] = {"cell": first["cell"], "stage": first.get("stage")}
        row.update({k: first[k] for k in columns[2:]})  # tau_s_same: the config reads back as searched (knobs.from_row)
        vals = values[metric][done]
        n = len(vals)
        row.update({"mean": _mean(vals) if n else math.nan, "std": _std(vals) if n > 1 else 0.0 if n else math.nan,
                    "seeds": int(n), "failed": int(len(idx) - n), "collapsed": int(collapsed[done].sum()),
                    "config_key": trials["config_key"].iloc[idx[0]]})
        for extra in extras:
            row[extra] = _mean(values[extra][done]) if n else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def seed_scores(trials: pd.DataFrame, cell: str, key: str, metric: str) -> dict[int, float]:
    """Seed -> the config's ``metric`` in ``cell`` (finished rows; a (config, seed) in several
    searches, as greedy and grid share configs, counts once, as their mean)."""
    t = trials[(trials["cell"] == cell) & (trials["status"] == "ok") & (trials["config_key"] == key)]
    if metric not in t:
        return {}
    by = t.groupby("seed")[metric].mean().dropna()
    return {int(s): float(v) for s, v in by.items()}


def paired_difference(trials: pd.DataFrame, cell: str, key_a: str, key_b: str, metric: str) -> dict[str, Any]:
    """Mean of a - b over the seeds both ran, tested (:mod:`kdsearch.results.stats`).

    ``p`` is the verdict test's two-sided p-value; ``low``/``high`` the paired t interval;
    ``real`` whether the test backs a difference (``within_noise``: it does not, which
    includes seed counts at which it never can: ``needed`` says how many could);
    ``by_seed`` holds the differences themselves.
    """
    return stats.paired(seed_scores(trials, cell, key_a, metric), seed_scores(trials, cell, key_b, metric)).as_dict()


def gain_verdict(d: dict[str, Any], sign: float = 1.0) -> str:
    """A paired difference (:func:`paired_difference`) in words, with its interval."""
    p = stats.Paired(d["by_seed"])
    return f"{p.verdict(sign)}; {p.interval(sign=sign)}"


@dataclass
class Picks:
    """What a search names in one cell, from its selection rows: the best config, the no-KD
    baseline and the paper's recommendation, each as a config (knob -> value) and its key.

    ``reference`` is the best config run with the paper's recommendation (t_ll, ce, tau_s = 1,
    none of the later objectives: Sultan et al. 2024) at the alpha and tau_t that scored best
    for it; when the search ran none, the best config with those knobs set (``reference_ran``
    False). It is None when it is the best config itself.
    """

    best: dict[str, Any]
    best_key: str
    baseline: dict[str, Any] | None = None
    baseline_key: str | None = None
    reference: dict[str, Any] | None = None
    reference_key: str | None = None
    reference_ran: bool = False

    def configs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """What to confirm: role -> (key, config)."""
        out = {"best": (self.best_key, self.best)}
        if self.baseline is not None and self.baseline_key is not None:
            out["no KD"] = (self.baseline_key, self.baseline)
        if self.reference is not None and self.reference_key is not None:
            out["reference"] = (self.reference_key, self.reference)
        return out


def _row_config(row: pd.Series | dict[str, Any]) -> dict[str, Any]:
    return knobs.from_row({k: _plain(v) for k, v in dict(row).items()})


def _is_reference(config: dict[str, Any]) -> bool:
    try:
        resolved = knobs.resolve(config)
    except Exception:  # noqa: BLE001 - an odd stored value is not the recommendation
        return False
    return all(resolved.get(k, knobs.KNOBS[k].default) == v for k, v in {**knobs.PAPER, **knobs.LATER_DEFAULTS}.items())


def picks(trials: pd.DataFrame, metric: str, mode: str = "max") -> dict[str, Picks]:
    """Each cell's :class:`Picks` (cells whose every config failed or collapsed have none)."""
    table = config_table(trials, metric)
    out: dict[str, Picks] = {}
    if table.empty:
        return out
    pick = (lambda g: g.loc[g["mean"].idxmax()]) if mode == "max" else (lambda g: g.loc[g["mean"].idxmin()])
    for cell, g in table.groupby("cell", sort=False):
        complete = g[(g["failed"] == 0) & (g["seeds"] > 0)]
        kd = complete[complete["stage"] != BASELINE_STAGE]
        if kd.empty or (kd["collapsed"] == kd["seeds"]).all():
            continue
        best = pick(kd)
        p = Picks(_row_config(best), str(best["config_key"]))
        base = complete[complete["stage"] == BASELINE_STAGE]
        if len(base):
            p.baseline, p.baseline_key = _row_config(base.iloc[0]), str(base.iloc[0]["config_key"])
        recommended = kd[[_is_reference(_row_config(r)) for _, r in kd.iterrows()]]
        if len(recommended):
            ref = pick(recommended)
            p.reference, p.reference_key, p.reference_ran = _row_config(ref), str(ref["config_key"]), True
        else:
            p.reference = {**p.best, **knobs.PAPER, **knobs.LATER_DEFAULTS}
            p.reference_key = knobs.key(p.reference)
        if p.reference_key == p.best_key:
            p.reference = p.reference_key = None
        out[str(cell)] = p
    return out


def confirm_metric(metric: str, confirm: pd.DataFrame) -> str:
    """What confirmation seeds are judged on: the metric on the test split where rows have it."""
    test = "test_" + metric.split("_", 1)[1] if metric.startswith("val_") else metric
    return test if test in confirm and confirm[test].notna().any() else metric


def confirmed(p: Picks, cell: str, confirm: pd.DataFrame, metric: str, mode: str) -> dict[str, Any]:
    """The best config against no KD and against the paper's recommendation, on confirmation
    seeds alone (seeds it was not picked on), on the test split."""
    if confirm is None or confirm.empty:
        return {}
    name = confirm_metric(metric, confirm)
    sign = 1.0 if mode == "max" else -1.0
    best = seed_scores(confirm, cell, p.best_key, name)
    if not best:
        return {}
    out: dict[str, Any] = {"metric": name, "seeds": len(best), "best": round(float(np.mean(list(best.values()))), 4)}
    for role, (key, config) in p.configs().items():
        if role == "best":
            continue
        other = seed_scores(confirm, cell, key, name)
        if not other:
            continue
        d = stats.paired(best, other)
        out[role] = {"score": round(float(np.mean(list(other.values()))), 4), "gain": round(sign * d.mean, 4),
                     "p": round(d.p, 4), "seeds": d.seeds, "ci": [round(v, 4) for v in sorted((sign * d.low, sign * d.high))],
                     "verdict": d.verdict(sign), "interval": d.interval(100, " points", sign)}
        if role == "reference":
            out[role]["config"] = {k: v for k, v in config.items() if k in json.loads(key)}
    return out


def best_per_cell(trials: pd.DataFrame, metric: str, mode: str = "max",
                  confirm: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """The best fully finished config of each cell (mean over its selection seeds), with the
    baseline; and, where ``confirm`` holds confirmation rows, the verdicts they back.

    The gain over the baseline on the selection seeds is shown but is optimistic: the best was
    picked on those seeds. Verdicts come from confirmation seeds alone (see :func:`confirmed`).
    A cell whose every distillation config collapsed gets ``status: every config collapsed``.
    """
    table = config_table(trials, metric)
    out: dict[str, dict[str, Any]] = {}
    if table.empty:
        return out
    knob_cols = knob_columns(trials)
    named = picks(trials, metric, mode)
    for cell, g in table.groupby("cell", sort=False):
        complete = g[(g["failed"] == 0) & (g["seeds"] > 0)]
        kd = complete[complete["stage"] != BASELINE_STAGE]
        pick_from = kd if len(kd) else complete
        if pick_from.empty:
            out[str(cell)] = {"status": "no finished config"}
            continue
        if str(cell) not in named and len(kd):
            out[str(cell)] = {"status": "every config collapsed", "configs_tried": int(len(pick_from)),
                              **_majority(trials, cell, metric)}
            continue
        p = named.get(str(cell))
        best = pick_from[pick_from["config_key"] == p.best_key].iloc[0] if p else pick_from.iloc[0]
        entry: dict[str, Any] = {
            # a knob the row predates holds nothing (it trained with the default): not part of the config
            "config": {k: _plain(best[k]) for k in knob_cols if not is_missing(best[k])},
            metric: round(float(best["mean"]), 4),
            "std": round(float(best["std"]), 4),
            "seeds": int(best["seeds"]),
            "configs_tried": int(len(g[g["stage"] != BASELINE_STAGE])),
        }
        if best["collapsed"]:
            entry["collapsed_seeds"] = int(best["collapsed"])
        for extra in ("val_agreement", "val_kl", "test_score"):
            if extra in best:
                entry[extra] = round(float(best[extra]), 4)
        base = complete[complete["stage"] == BASELINE_STAGE]
        if len(base) and p:
            d = stats.paired(seed_scores(trials, str(cell), p.best_key, metric),
                             seed_scores(trials, str(cell), str(base.iloc[0]["config_key"]), metric))
            entry["baseline_no_kd"] = round(float(base.iloc[0]["mean"]), 4)
            entry["gain_over_baseline"] = round(float(best["mean"] - base.iloc[0]["mean"]), 4)  # optimistic
            entry["gain_by_seed"] = {s: round(v, 4) for s, v in d.by_seed.items()}
        if p:
            entry.update(_best_set(trials, str(cell), kd, metric, mode))
            if p.reference is not None:
                entry["reference"] = {k: _plain(v) for k, v in p.reference.items() if k in json.loads(str(p.reference_key))}
            conf = confirmed(p, str(cell), confirm if confirm is not None else pd.DataFrame(), metric, mode)
            if conf:
                entry["confirmed"] = conf
            no_kd = conf.get("no KD")
            entry["gain_verdict"] = (no_kd["verdict"] if no_kd else
                                     "no verdict: not confirmed on fresh seeds" if "baseline_no_kd" in entry else "no baseline")
        out[str(cell)] = entry
    return out


def _best_set(trials: pd.DataFrame, cell: str, kd: pd.DataFrame, metric: str, mode: str) -> dict[str, Any]:
    """The configs a paired test cannot separate from the leader, with their seed counts and how
    often each leads when its seeds are drawn again (a bootstrap over seeds, not a verdict)."""
    sign = 1.0 if mode == "max" else -1.0
    # a config whose every row is a copy (it trained as another: t_hs = t_ll) is that other's
    # training again: counted twice it would tie with itself, halve P(best) and widen Holm's family
    trained = set(without_copies(trials[trials["cell"] == cell])["config_key"].astype(str))
    scores = {str(k): seed_scores(trials, cell, str(k), metric) for k in kd["config_key"] if str(k) in trained}
    scores = {k: v for k, v in scores.items() if v}
    if not scores:
        return {}
    members = stats.best_set(scores, sign=sign)
    chance = stats.probability_best(scores, sign)
    rows = kd.set_index("config_key")
    return {"best_set": [{"config": {k: _plain(v) for k, v in _row_config(rows.loc[key]).items() if k in json.loads(key)},
                          metric: round(float(np.mean(list(scores[key].values()))), 4), "seeds": len(scores[key]),
                          "p_best": round(chance.get(key, 0.0), 3)} for key in members],
            "best_set_test": f"{stats.TESTS[stats.BEST_SET_TEST].label} test at {stats.LEVEL:g} (Holm-adjusted), from "
                             f"{stats.BEST_SET_MIN_SEEDS} shared seeds"}


def _majority(trials: pd.DataFrame, cell: Any, metric: str) -> dict[str, float]:
    col = metric.split("_", 1)[0] + "_majority"
    rows = trials[trials["cell"] == cell]
    return {"majority_class_score": round(float(rows[col].dropna().iloc[0]), 4)} if col in rows and rows[col].notna().any() else {}


def _knobs_text(config: dict[str, Any]) -> str:
    """The knobs that change what a config trains (a later one only off its default)."""
    config = {k: v for k, v in config.items() if not is_missing(v)}  # knobs a stored row predates
    try:
        applies = set(json.loads(knobs.key(config)))
    except Exception:  # noqa: BLE001 - an odd stored value: name every knob
        applies = set(config)
    return ", ".join(f"{k}={v}" for k, v in config.items() if k in applies)


def summary_lines(trials: pd.DataFrame, best: dict[str, dict[str, Any]], metric: str,
                  folder: str | None = None, finished: bool = True) -> list[str]:
    """What ``kdsearch run`` prints at the end: counts, collapse warnings, the best per cell,
    what the seeds it was picked on say (optimistic) and what fresh seeds confirm. Of a search
    not ``finished`` (``kdsearch results`` mid-run), an unconfirmed pick waits for its end:
    ``kdsearch confirm`` refuses a search that has not finished."""
    counts = trials["status"].value_counts().to_dict()
    lines = [f"== {len(trials)} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    # a copy (a config that trained as another: duplicate_of) is a row, not a training
    trained = trials["duplicate_of"].isna() if "duplicate_of" in trials else pd.Series(True, index=trials.index)
    flags = collapsed_flags(trials, metric) & (trials["status"] == "ok")
    ok = (trials["status"] == "ok") & trained
    collapsed = flags & trained
    if collapsed.any():
        copies = int((flags & ~trained).sum())
        also = f"; {copies} more row(s) are copies of them, for configs that trained as another" if copies else ""
        lines.append(
            f"warning: {int(collapsed.sum())} of {int(ok.sum())} trained students collapsed (their validation predictions are "
            f"one class, or no better than the majority class); rows have {collapsed_column(metric)} = true{also}"
        )
    for cell, b in best.items():
        if "config" not in b:
            maj = f" (the majority class scores {b['majority_class_score']:.4f})" if "majority_class_score" in b else ""
            lines.append(f"   {cell}: {b['status']}{maj}: no config is better than predicting one class, so none is named best")
            continue
        base = ""
        if "baseline_no_kd" in b:
            seeds = ", ".join(f"{100 * v:+.2f}" for v in b["gain_by_seed"].values())
            base = (f"; no KD {b['baseline_no_kd']:.4f}: {100 * b['gain_over_baseline']:+.2f} points on the seeds it was picked "
                    f"on (by seed: {seeds}; optimistic, not a verdict)")
        fid = f"; agreement {b['val_agreement']:.4f}" if not math.isnan(b.get("val_agreement", math.nan)) else ""
        flag = f" [collapsed on {b['collapsed_seeds']} seed(s)]" if b.get("collapsed_seeds") else ""
        lines.append(f"   best {cell}: {_knobs_text(b['config'])} -> {metric} {b[metric]:.4f} ± {b['std']:.4f} over "
                     f"{b['seeds']} seed(s){flag}{base}{fid}")
        if len(b.get("best_set", [])) > 1:
            shown = b["best_set"][:5]
            more = f", and {len(b['best_set']) - 5} more" if len(b["best_set"]) > 5 else ""
            # below the test's fewest seeds nothing can be separated, and a bootstrap over 2 seeds
            # says "P 1.00" of a lucky pair: say why the set is everything, and give no P
            few = b["best_set"][0]["seeds"] < stats.BEST_SET_MIN_SEEDS
            why = (f"{b['best_set'][0]['seeds']} seed(s) are too few for a {b['best_set_test']} to separate any"
                   if few else f"a {b['best_set_test']} cannot separate (P(best) from a bootstrap over seeds)")
            lines.append(f"     best set: {len(b['best_set'])} configs, {why}: " + "; ".join(
                             f"{_knobs_text(c['config'])} {c[metric]:.4f} over {c['seeds']} seed(s)"
                             + (f", P {c['p_best']:.2f}" if c["seeds"] >= stats.BEST_SET_MIN_SEEDS else "")
                             for c in shown) + more)
        elif b.get("best_set"):
            lines.append(f"     best set: this config alone (a {b['best_set_test']} separates every other from it; "
                         f"P(best) {b['best_set'][0]['p_best']:.2f})")
        conf = b.get("confirmed")
        if not conf:
            where = f" {folder}" if folder else " DIR"
            lines.append(f"     not confirmed on fresh seeds: no verdict (kdsearch confirm{where} runs them)" if finished
                         else "     not confirmed on fresh seeds yet: no verdict (the search has not finished)")
            continue
        split = conf["metric"].split("_", 1)[0]
        lines.append(f"     confirmed on {conf['seeds']} fresh seed(s), {conf['metric']} ({split} split): {conf['best']:.4f}")
        for role, what in (("no KD", "against no KD"), ("reference", "against the paper's recommendation")):
            if role in conf:
                c = conf[role]
                ref = f" ({_knobs_text(c['config'])})" if role == "reference" else ""
                lines.append(f"       {what}{ref}: {c['score']:.4f}, {100 * c['gain']:+.2f} points, {c['interval']}: {c['verdict']}")
        if "reference" not in conf and "reference" not in b:
            lines.append("       the best config is the paper's recommendation (t_ll, ce, tau_s = 1)")
    return lines


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def best_yaml(best: dict[str, dict[str, Any]], metric: str) -> str:
    header = f"# best config per cell by mean {metric} over seeds (kdsearch)\n"
    return header + yaml.safe_dump(json.loads(json.dumps(best, default=float)), sort_keys=False)
