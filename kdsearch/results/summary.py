"""From trial rows to answers: configs averaged over seeds, the best config per cell, honestly.

Two rules keep a summary from presenting noise as a finding:

- a model whose validation predictions are one class, or no better than always predicting
  the majority class, is *collapsed*: its row says so, a warning line says how many, and a
  cell whose every config collapsed names no best;
- a gain over the no-KD baseline is shown seed by seed, and with fewer than ``MIN_SEEDS``
  paired seeds it is labelled as not distinguishable from noise (the rule of
  ``kdsearch compare``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kdsearch import knobs
from kdsearch.knobs import BASELINE_STAGE, KNOBS

MIN_SEEDS = 3  # a bootstrap over fewer paired seeds cannot see the spread


def knob_columns(df: pd.DataFrame) -> list[str]:
    return [k for k in KNOBS if k in df.columns]


def collapsed_column(metric: str) -> str:
    """The row's collapse flag for ``metric``'s split (``val_score`` -> ``val_collapsed``)."""
    return metric.split("_", 1)[0] + "_collapsed"


def _collapsed(rows: pd.DataFrame, metric: str) -> pd.Series:
    col = collapsed_column(metric)
    if col not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows[col].map(lambda v: bool(v) if v is not None and v == v else False)


def config_table(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (cell, config): the metric's mean, std and count over finished seeds.

    A config with a failed or diverged seed keeps its row with ``failed`` > 0, and its
    mean counts only finished seeds (the search itself ranks it as the worst);
    ``collapsed`` counts its finished seeds that collapsed to one class.
    """
    if trials.empty or metric not in trials.columns:
        return pd.DataFrame()
    knob_cols = knob_columns(trials)
    ok = trials["status"] == "ok"
    collapsed = _collapsed(trials, metric)
    rows = []
    for (cell, ckey), g in trials.groupby(["cell", "config_key"], sort=False, dropna=False):
        done = ok.loc[g.index]
        vals = g.loc[done, metric].astype(float)
        first = g.iloc[0]
        row: dict[str, Any] = {"cell": cell, "stage": first.get("stage")}
        row.update({k: first[k] for k in knob_cols})
        row.update(
            {
                "mean": float(vals.mean()) if len(vals) else math.nan,
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0 if len(vals) else math.nan,
                "seeds": int(len(vals)),
                "failed": int((~done).sum()),
                "collapsed": int((collapsed.loc[g.index] & done).sum()),
                "config_key": ckey,
            }
        )
        for extra in ("val_agreement", "val_kl", "test_score"):
            if extra in g.columns:
                row[extra] = float(g.loc[done, extra].astype(float).mean()) if len(vals) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(trials: pd.DataFrame, cell: str, key_a: str, key_b: str, metric: str, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Mean of a - b over shared seeds, with a 95% bootstrap interval over seeds.

    ``within_noise`` is true when the interval holds 0, and always below ``MIN_SEEDS``
    paired seeds (two seeds give an interval, not a trustworthy one). ``by_seed`` holds
    the differences themselves.
    """
    t = trials[(trials["cell"] == cell) & (trials["status"] == "ok")]
    # the same (config, seed) in several searches (greedy and grid share configs) counts once
    a = t[t["config_key"] == key_a].groupby("seed")[metric].mean()
    b = t[t["config_key"] == key_b].groupby("seed")[metric].mean()
    diff = (a - b).dropna()
    d = diff.to_numpy(dtype=float)
    by_seed = {int(s): float(v) for s, v in diff.items()}
    if len(d) == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "seeds": 0, "within_noise": True, "by_seed": by_seed}
    rng = np.random.default_rng(seed)
    boots = rng.choice(d, size=(n_boot, len(d)), replace=True).mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    within = bool(low <= 0 <= high) or len(d) < MIN_SEEDS
    return {"mean": float(d.mean()), "low": float(low), "high": float(high), "seeds": int(len(d)), "within_noise": within,
            "by_seed": by_seed}


def gain_verdict(d: dict[str, Any]) -> str:
    """A paired difference in words: too few seeds, inside the noise, or a real one."""
    if d["seeds"] < MIN_SEEDS:
        return f"not distinguishable from noise: {d['seeds']} paired seed(s), fewer than {MIN_SEEDS}"
    if d["within_noise"]:
        return f"inside the noise (95% CI [{d['low']:+.4f}, {d['high']:+.4f}])"
    return f"a real {'gain' if d['mean'] > 0 else 'loss'} (95% CI [{d['low']:+.4f}, {d['high']:+.4f}])"


def best_per_cell(trials: pd.DataFrame, metric: str, mode: str = "max") -> dict[str, dict[str, Any]]:
    """The best fully finished config of each cell (mean over seeds), with the baseline.

    A cell whose every distillation config collapsed gets ``status: every config collapsed``
    instead of a best.
    """
    table = config_table(trials, metric)
    out: dict[str, dict[str, Any]] = {}
    if table.empty:
        return out
    knob_cols = knob_columns(trials)
    for cell, g in table.groupby("cell", sort=False):
        complete = g[(g["failed"] == 0) & (g["seeds"] > 0)]
        kd = complete[complete["stage"] != BASELINE_STAGE]
        pick_from = kd if len(kd) else complete
        if pick_from.empty:
            out[str(cell)] = {"status": "no finished config"}
            continue
        if (pick_from["collapsed"] == pick_from["seeds"]).all():
            out[str(cell)] = {"status": "every config collapsed", "configs_tried": int(len(pick_from)),
                              **_majority(trials, cell, metric)}
            continue
        best = pick_from.loc[pick_from["mean"].idxmax() if mode == "max" else pick_from["mean"].idxmin()]
        entry: dict[str, Any] = {
            "config": {k: _plain(best[k]) for k in knob_cols},
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
        if len(base):
            d = paired_difference(trials, str(cell), str(best["config_key"]), str(base.iloc[0]["config_key"]), metric)
            sign = 1.0 if mode == "max" else -1.0
            entry["baseline_no_kd"] = round(float(base.iloc[0]["mean"]), 4)
            entry["gain_over_baseline"] = round(float(best["mean"] - base.iloc[0]["mean"]), 4)
            entry["gain_by_seed"] = {s: round(v, 4) for s, v in d["by_seed"].items()}
            entry["gain_verdict"] = gain_verdict({**d, "mean": sign * d["mean"], "low": sign * d["low"], "high": sign * d["high"]})
        out[str(cell)] = entry
    return out


def _majority(trials: pd.DataFrame, cell: Any, metric: str) -> dict[str, float]:
    col = metric.split("_", 1)[0] + "_majority"
    rows = trials[trials["cell"] == cell]
    return {"majority_class_score": round(float(rows[col].dropna().iloc[0]), 4)} if col in rows and rows[col].notna().any() else {}


def summary_lines(trials: pd.DataFrame, best: dict[str, dict[str, Any]], metric: str) -> list[str]:
    """What ``kdsearch run`` prints at the end: counts, collapse warnings, the best per cell."""
    counts = trials["status"].value_counts().to_dict()
    lines = [f"== {len(trials)} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    ok = trials["status"] == "ok"
    collapsed = _collapsed(trials, metric) & ok
    if collapsed.any():
        lines.append(
            f"warning: {int(collapsed.sum())} of {int(ok.sum())} finished trials collapsed (their validation predictions are "
            f"one class, or no better than the majority class); rows have {collapsed_column(metric)} = true"
        )
    for cell, b in best.items():
        if "config" not in b:
            maj = f" (the majority class scores {b['majority_class_score']:.4f})" if "majority_class_score" in b else ""
            lines.append(f"   {cell}: {b['status']}{maj}: no config is better than predicting one class, so none is named best")
            continue
        try:  # name only the knobs that change what the best config trains (a later one only off its default)
            applies = set(json.loads(knobs.key(b["config"])))
        except Exception:  # noqa: BLE001 - an odd stored value: name every knob
            applies = set(b["config"])
        text = ", ".join(f"{k}={v}" for k, v in b["config"].items() if k in applies)
        base = ""
        if "baseline_no_kd" in b:
            seeds = ", ".join(f"{v:+.4f}" for v in b["gain_by_seed"].values())
            base = f"; no KD {b['baseline_no_kd']:.4f}, gain {b['gain_over_baseline']:+.4f} (by seed: {seeds}): {b['gain_verdict']}"
        fid = f"; agreement {b['val_agreement']:.4f}" if not math.isnan(b.get("val_agreement", math.nan)) else ""
        flag = f" [collapsed on {b['collapsed_seeds']} seed(s)]" if b.get("collapsed_seeds") else ""
        lines.append(f"   best {cell}: {text} -> {metric} {b[metric]:.4f} ± {b['std']:.4f} over {b['seeds']} seed(s){flag}{base}{fid}")
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
