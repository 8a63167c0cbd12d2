"""Answers read from trial rows alone: anytime curves, knob costs, paired differences.

Every function takes the ``trials.parquet`` rows of one or more searches and returns a
DataFrame, so a report is rebuilt from Parquet without rerunning anything. Configs are
compared seed by seed (the search pairs seeds) with the paired test of
:mod:`kdsearch.results.stats`; a config picked as a cell's best is judged on confirmation
seeds alone (rows with ``role: confirm``), never on the seeds it was picked on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kdsearch.knobs import BASELINE_STAGE, KNOBS, LATER_DEFAULTS, PAPER
from kdsearch.results import stats
from kdsearch.results.experiments import Searches, split_cells
from kdsearch.results.store import SELECT, open_store, tau_s_as_number, without_copies
from kdsearch.results.summary import collapsed_configs, confirmed, paired_difference, picks, seed_scores

RECOMMENDED = {k: str(v) for k, v in PAPER.items()}  # Sultan et al. (2024), as the columns read


def load(folders: Sequence[str | Path], role: str | None = SELECT) -> pd.DataFrame:
    """The trial rows of several searches, in the order each search finished them.

    A distillation knob that a search's results format knows but its Parquet lacks
    (kdsearch added knobs before formats were numbered) is filled with the value that
    search's spec gives it, which is what its trials trained with; a knob newer than a
    search's format reads as its default beside searches that have it (no DIST, no
    standardisation, a constant temperature), and is left out of a report of older ones alone. Format 1 wrote ``tau_s`` as text ("1.0", "same"); mixed with newer
    searches it is read as the number plus ``tau_s_same``. ``role``: the rows a search picks
    from (default), ``confirm`` (fresh seeds of its picks), or None for both. A cell that these
    searches ran as other experiments (teacher model, data sample, schedules) is as many cells,
    named by what tells them apart (:mod:`kdsearch.results.experiments`).
    """
    frames = []
    searches = Searches()
    for f in folders:
        store = open_store(f)
        t = store.trials(role)
        if len(t) and "search_id" in t:  # its rows carry its id (search.json may predate it)
            searches.add(str(t["search_id"].iloc[0]), store.spec(registries=False))
        # knobs the search's results format recorded take its spec's value; a knob newer than
        # the format did not exist for it, so its trials trained as the knob's default
        fmt = store.format()
        missing = [k for k, knob in KNOBS.items() if knob.section == "distill" and knob.since <= fmt and k not in t.columns]
        if missing and not t.empty:
            distill = store.spec(registries=False).distill
            for k in missing:
                t[k] = getattr(distill, k)
        t["search_dir"] = str(f)
        t["order"] = np.arange(len(t))
        frames.append(t)
    if len({str(t["tau_s"].dtype) for t in frames if "tau_s" in t}) > 1:
        frames = [tau_s_as_number(t) for t in frames]
    # a knob newer than a search did not exist for it: beside searches that have it, its
    # trials read as the knob's default (what they trained with)
    newer = {k for t in frames for k in t.columns if k in KNOBS}
    for t in frames:
        for k in newer - set(t.columns):
            if not t.empty:
                t[k] = KNOBS[k].default
    out = pd.concat(frames, ignore_index=True)
    if not out.empty:
        out["cell"] = split_cells(out, searches)  # a cell run two ways by these searches is two cells
    return out


def _sign(mode: str) -> float:
    return 1.0 if mode == "max" else -1.0


def anytime(trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Best-so-far config mean (over its finished seeds) after each trial, per search and cell.

    A config counts once all of its seeds have finished; the no-KD baseline is left out.
    """
    rows = []
    for (search, cell), g in trials[trials["stage"] != BASELINE_STAGE].groupby(["search_id", "cell"], sort=False):
        g = g.sort_values("order")
        seeds = g.groupby("config_key")["seed"].nunique().max()
        done: dict[str, list[float]] = {}
        best, compute = math.nan, 0.0
        for i, (_, r) in enumerate(g.iterrows(), start=1):
            compute += float(r.get("wall_s") or 0.0)
            done.setdefault(r["config_key"], []).append(float(r[metric]) if r["status"] == "ok" else math.nan)
            vals = done[r["config_key"]]
            if len(vals) == seeds and not any(math.isnan(v) for v in vals):
                mean = float(np.mean(vals))
                if math.isnan(best) or _sign(mode) * mean > _sign(mode) * best:
                    best = mean
            rows.append({"search_id": search, "method": r["method"], "cell": cell, "trials": i, "compute_s": compute, "best": best})
    return pd.DataFrame(rows)


def final_best(curves: pd.DataFrame) -> pd.DataFrame:
    """Per search and cell: trials used and the best config mean reached."""
    last = curves.sort_values("trials").groupby(["search_id", "cell"]).tail(1)
    return last[["search_id", "method", "cell", "trials", "compute_s", "best"]].reset_index(drop=True)


def regret(curves: pd.DataFrame, mode: str = "max") -> pd.DataFrame:
    """Each search's final best against the best full grid of its cell (points of metric)."""
    fb = final_best(curves)
    grid = fb[fb["method"] == "grid"].groupby("cell")["best"].agg("max" if mode == "max" else "min")
    fb["grid_best"] = fb["cell"].map(grid)
    fb["regret_points"] = 100 * _sign(mode) * (fb["grid_best"] - fb["best"])
    return fb


def config_means(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    ok = trials[(trials["status"] == "ok") & (trials["stage"] != BASELINE_STAGE)]
    knobs = [k for k in KNOBS if k in ok.columns]
    extras = [c for c in ("val_agreement", "val_kl") if c in ok.columns]
    # one value per (config, seed) even when several searches ran it
    per_seed = ok.groupby(["cell", "config_key", "seed"], sort=False)
    ok = per_seed[[metric, *extras]].mean().join(per_seed[knobs].first()).reset_index()
    g = ok.groupby(["cell", "config_key"], sort=False)
    out = g[knobs].first()
    out["mean"] = g[metric].mean()
    out["std"] = g[metric].std(ddof=1).fillna(0.0)
    out["seeds"] = g["seed"].nunique()
    for extra in extras:
        out[extra] = g[extra].mean()
    return out.reset_index()


def knob_costs(trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """For each cell and knob: the metric lost by its worst choice against its best, the
    other knobs at the cell's best config (only choices that were run that way count)."""
    means = config_means(trials, metric)
    rows = []
    for cell, g in means.groupby("cell"):
        best = g.loc[g["mean"].idxmax() if mode == "max" else g["mean"].idxmin()]
        knobs = [k for k in KNOBS if k in g.columns and g[k].nunique() > 1]
        for k in knobs:
            others = [o for o in knobs if o != k]
            same = g[(g[others] == best[others]).all(axis=1)] if others else g
            if same[k].nunique() < 2:
                continue
            by = same.set_index(k)["mean"]
            hi, lo = (by.idxmax(), by.idxmin()) if mode == "max" else (by.idxmin(), by.idxmax())
            cost = 100 * abs(by[hi] - by[lo])
            if cost == 0:
                hi = lo = "(all tie)"
            rows.append({"cell": cell, "knob": k, "best_choice": hi, "worst_choice": lo, "cost_points": cost, "choices": int(len(by))})
    return pd.DataFrame(rows)


def recommended_rank(trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Rank of the paper's recommendation (t_ll, ce, tau_s = 1) among each cell's trained
    configs, and its gap. Where t_ll trained as t_hs (one checkpoint) the recommendation's rows
    are copies: it ranks as the training it shares, which is counted once."""
    means = config_means(trials, metric)
    trained = config_means(without_copies(trials), metric)
    sign = _sign(mode)
    rows = []
    for cell, g in means.groupby("cell"):
        match = pd.Series(True, index=g.index)
        for k, v in RECOMMENDED.items():
            if k in g.columns:
                match &= g[k].astype(str) == v
        if not match.any():
            continue
        rec = (sign * g.loc[match, "mean"]).max()
        t = sign * trained.loc[trained["cell"] == cell, "mean"]
        rows.append({"cell": cell, "rank": int((t > rec).sum()) + 1, "configs": int(len(t)),
                     "gap_points": 100 * abs(t.max() - rec)})
    return pd.DataFrame(rows)


def racing(trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Per raced cell (rows with ``race_round`` > 0): where racing's extra seeds went and what
    they changed. The configs it raced and their trials, its share of the cell's trial-epochs,
    the most seeds a config reached; where the best named at the end ranked on the first seeds
    alone (1: racing kept the leader); and the best set at the end (the configs a paired test
    still cannot separate from the best, :func:`kdsearch.results.stats.best_set`). Copies (t_hs
    trained as t_ll) are one training and counted once; configs that collapsed on every seed
    rank nowhere (as the best is named, :func:`kdsearch.results.summary.picks`)."""
    if "race_round" not in trials:
        return pd.DataFrame()
    kd = without_copies(trials[(trials["status"] == "ok") & (trials["stage"] != BASELINE_STAGE)])
    rounds = kd["race_round"].fillna(0)
    named = picks(trials, metric, mode)
    dead = collapsed_configs(trials, metric)
    sign = 1.0 if mode == "max" else -1.0
    rows = []
    for cell in sorted(kd.loc[rounds > 0, "cell"].unique()):
        g, r = kd[kd["cell"] == cell], rounds[kd["cell"] == cell]
        first, more = g[r == 0], g[r > 0]
        live = [k for k in g["config_key"].drop_duplicates() if (str(cell), str(k)) not in dead]
        on_first = (sign * first[first["config_key"].isin(live)].groupby("config_key")[metric].mean()).sort_values(
            ascending=False, kind="stable")
        p = named.get(str(cell))
        scores = {str(k): seed_scores(trials, str(cell), str(k), metric) for k in live}
        best = stats.best_set({k: v for k, v in scores.items() if v}, sign=sign)
        epochs = g["epochs_run"].fillna(1) if "epochs_run" in g else pd.Series(1.0, index=g.index)
        rows.append({
            "cell": cell, "configs": int(g["config_key"].nunique()), "first seeds": int(first["seed"].nunique()),
            "raced configs": int(more["config_key"].nunique()), "raced trials": int(len(more)),
            "rounds": int(r.max()), "share of trial-epochs": float(epochs[r > 0].sum() / epochs.sum()),
            "most seeds": int(g.groupby("config_key")["seed"].nunique().max()),
            "best's rank on the first seeds": (int(list(on_first.index).index(p.best_key)) + 1
                                               if p is not None and p.best_key in on_first.index else "-"),
            "best set at the end": f"{len(best)} of {len(live)}",
        })
    return pd.DataFrame(rows)


def kd_gain(trials: pd.DataFrame, metric: str, mode: str = "max", confirm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per cell: the best KD config against no KD, with fidelity. On the selection seeds the
    gain is optimistic (the best was picked on them) and gets no verdict; the verdict comes
    from confirmation seeds (``confirm``) on the test split, beside the paper's recommendation."""
    ok = trials[trials["status"] == "ok"]
    base = ok[ok["stage"] == BASELINE_STAGE]
    means = config_means(trials, metric)
    named = picks(trials, metric, mode)
    rows = []
    for cell, g in means.groupby("cell", sort=False):
        b = base[base["cell"] == cell]
        if b.empty:
            continue
        p = named.get(str(cell))
        # a cell whose every config collapsed names no best (summary.picks); its row still shows
        # the highest mean, so the reader sees the cell and why it holds no verdict
        best = (g[g["config_key"] == p.best_key].iloc[0] if p is not None
                else g.loc[g["mean"].idxmax() if mode == "max" else g["mean"].idxmin()])
        per_seed = b.groupby("seed")[[metric, "val_agreement", "val_kl"]].mean()
        d = paired_difference(trials, cell, str(best["config_key"]), str(b["config_key"].iloc[0]), metric)
        # knobs that change what the best config trains (its key holds only those)
        applies = json.loads(str(best["config_key"]))
        varying = [k for k in KNOBS if k in g.columns and g[k].nunique() > 1 and k in applies]
        row = {
            "cell": cell,
            "no KD": f"{per_seed[metric].mean():.4f} ± {per_seed[metric].std(ddof=1):.4f}",
            "best KD": f"{best['mean']:.4f} ± {best['std']:.4f}",
            "best config": ", ".join(f"{k}={best[k]}" for k in varying),
            "gain on its selection seeds (optimistic)": 100 * _sign(mode) * d["mean"],
        }
        conf = confirmed(p, str(cell), confirm if confirm is not None else pd.DataFrame(), metric, mode) if p else {}
        for role, name in (("no KD", "vs no KD"), ("reference", "vs the paper's recommendation")):
            c = conf.get(role)
            row[f"confirmed {name}: gain (points)"] = 100 * c["gain"] if c else math.nan
            ci = (f"[{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}]" if c and all(map(math.isfinite, c["ci"]))
                  else "no interval from 1 seed")
            row[f"{name}: t 95% CI, p, seeds"] = f"{ci}, {c['p']:.3f}, {c['seeds']}" if c else ""
            row[f"{name}: verdict"] = c["verdict"] if c else (
                "every config collapsed (one class on every seed): none is named best" if p is None
                else "not confirmed on fresh seeds" if role == "no KD" or p.reference is not None
                else "the best is the recommendation")
        row["agreement no KD -> KD"] = f"{per_seed['val_agreement'].mean():.3f} -> {best.get('val_agreement', math.nan):.3f}"
        row["KL no KD -> KD"] = f"{per_seed['val_kl'].mean():.3f} -> {best.get('val_kl', math.nan):.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def uses_later_objectives(trials: pd.DataFrame) -> bool:
    """Whether any row trained with an objective since the paper (DIST, z-scored logits, annealing)."""
    ok = trials[trials["status"] == "ok"]
    # rows written before a knob existed hold nothing for it (they trained with its default); rows a
    # later `kdsearch confirm` appended to the same search hold the default itself: neither is "used"
    return any(k in ok and (ok[k].dropna().astype(str) != str(v)).any() for k, v in LATER_DEFAULTS.items())


def against_reference(trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Per cell, each config against the paper's recommendation (t_ll, ce, tau_s = 1, none of
    the later objectives; its best alpha and tau_t where several were run), seed by seed:
    the gain in points, the paired t interval, the sign-flip p and the verdict. Each config is
    a comparison of its own (pre-set arms, as ``search.configs``); the rows may hold
    confirmation seeds too, which add to each arm's paired seeds."""
    means = config_means(trials, metric)
    dead = collapsed_configs(trials, metric)
    rows = []
    for cell, g in means.groupby("cell", sort=True):
        match = pd.Series(True, index=g.index)
        for k, v in {**RECOMMENDED, **LATER_DEFAULTS}.items():
            if k in g.columns:
                # a later knob's missing value is its default (the row predates the knob)
                match &= (g[k].astype(str) == str(v)) | (g[k].isna() if k in LATER_DEFAULTS else False)
        if not match.any():
            continue
        ref = g[match].sort_values("mean", ascending=mode != "max").iloc[0]
        for _, c in g.sort_values("mean", ascending=mode != "max").iterrows():
            if c["config_key"] == ref["config_key"]:
                continue
            d = stats.paired(seed_scores(trials, str(cell), str(c["config_key"]), metric),
                             seed_scores(trials, str(cell), str(ref["config_key"]), metric))
            sign = _sign(mode)
            gain = {s: sign * 100 * v for s, v in d.by_seed.items()}
            low, high = sorted((sign * 100 * d.low, sign * 100 * d.high))
            verdict = d.verdict(sign)
            # a gain over a reference that predicts one class says the reference failed at this budget,
            # not that the objective beats a working one: say so beside the verdict
            fell = [who for who, key in (("the reference", ref["config_key"]), ("this config", c["config_key"]))
                    if (str(cell), str(key)) in dead]
            if fell:
                verdict += f" ({' and '.join(fell)} collapsed on every seed)"
            rows.append({"cell": cell, "config": _changed(c, ref), "mean": float(c["mean"]), "reference": float(ref["mean"]),
                         "gain (points)": sign * 100 * d.mean, "by seed": ", ".join(f"{v:+.1f}" for v in gain.values()),
                         "t 95% CI": f"[{low:+.2f}, {high:+.2f}]", "p (sign-flip)": d.p, "seeds": d.seeds, "verdict": verdict})
    return pd.DataFrame(rows)


def _changed(config: pd.Series, ref: pd.Series) -> str:
    """The knobs a config holds other than the reference's, in the knob table's order."""
    keys = json.loads(str(config["config_key"]))
    ref_keys = json.loads(str(ref["config_key"]))
    diff = [f"{k}={keys[k]}" for k in KNOBS if k in keys and keys.get(k) != ref_keys.get(k)]
    diff += [f"{k}=default" for k in KNOBS if k in ref_keys and k not in keys]
    return ", ".join(diff) or "(the same behaviour)"
