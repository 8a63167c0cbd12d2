"""From trial rows to answers: configs averaged over seeds, the best config per cell."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml

from kdsearch.search.space import BASELINE_STAGE, KNOBS


def knob_columns(df: pd.DataFrame) -> list[str]:
    return [k for k in KNOBS if k in df.columns]


def config_table(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (cell, config): the metric's mean, std and count over finished seeds.

    A config with a failed or diverged seed keeps its row with ``failed`` > 0, and its
    mean counts only finished seeds (the search itself ranks it as the worst).
    """
    if trials.empty or metric not in trials.columns:
        return pd.DataFrame()
    knobs = knob_columns(trials)
    ok = trials["status"] == "ok"
    rows = []
    for (cell, ckey), g in trials.groupby(["cell", "config_key"], sort=False, dropna=False):
        vals = g.loc[ok.loc[g.index], metric].astype(float)
        first = g.iloc[0]
        row: dict[str, Any] = {"cell": cell, "stage": first.get("stage")}
        row.update({k: first[k] for k in knobs})
        row.update(
            {
                "mean": float(vals.mean()) if len(vals) else math.nan,
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0 if len(vals) else math.nan,
                "seeds": int(len(vals)),
                "failed": int((~ok.loc[g.index]).sum()),
                "config_key": ckey,
            }
        )
        for extra in ("val_agreement", "val_kl", "test_score"):
            if extra in g.columns:
                row[extra] = float(g.loc[ok.loc[g.index], extra].astype(float).mean()) if len(vals) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def best_per_cell(trials: pd.DataFrame, metric: str, mode: str = "max") -> dict[str, dict[str, Any]]:
    """The best fully finished config of each cell (mean over seeds), with the baseline."""
    table = config_table(trials, metric)
    out: dict[str, dict[str, Any]] = {}
    if table.empty:
        return out
    knobs = knob_columns(trials)
    for cell, g in table.groupby("cell", sort=False):
        complete = g[(g["failed"] == 0) & (g["seeds"] > 0)]
        kd = complete[complete["stage"] != BASELINE_STAGE]
        pick_from = kd if len(kd) else complete
        if pick_from.empty:
            out[str(cell)] = {"status": "no finished config"}
            continue
        best = pick_from.loc[pick_from["mean"].idxmax() if mode == "max" else pick_from["mean"].idxmin()]
        entry: dict[str, Any] = {
            "config": {k: _plain(best[k]) for k in knobs},
            metric: round(float(best["mean"]), 4),
            "std": round(float(best["std"]), 4),
            "seeds": int(best["seeds"]),
            "configs_tried": int(len(g[g["stage"] != BASELINE_STAGE])),
        }
        for extra in ("val_agreement", "val_kl", "test_score"):
            if extra in best:
                entry[extra] = round(float(best[extra]), 4)
        base = complete[complete["stage"] == BASELINE_STAGE]
        if len(base):
            entry["baseline_no_kd"] = round(float(base.iloc[0]["mean"]), 4)
            entry["gain_over_baseline"] = round(float(best["mean"] - base.iloc[0]["mean"]), 4)
        out[str(cell)] = entry
    return out


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
    return header + yaml.safe_dump(best, sort_keys=False)
