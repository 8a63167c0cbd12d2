"""The racing section of a report, on hand-made rows whose answers are known."""

from __future__ import annotations

import json

import pandas as pd

from kdsearch.reports import analysis

# config -> seed -> score; seeds 3 and 4 are race round 1 (a and b only): b leads on the first
# seeds, a after racing; c is far behind; d collapsed on every seed
SCORES = {
    "a": {0: 0.80, 1: 0.81, 2: 0.79, 3: 0.85, 4: 0.86},
    "b": {0: 0.82, 1: 0.80, 2: 0.81, 3: 0.78, 4: 0.77},
    "c": {0: 0.60, 1: 0.61, 2: 0.59},
    "d": {0: 0.50, 1: 0.50, 2: 0.50},
}


def _rows() -> pd.DataFrame:
    rows = []
    for name, seeds in SCORES.items():
        knobs = {"teacher": "t_ll", "loss": {"a": "ce", "b": "mse", "c": "dist", "d": "kl"}[name], "alpha": 0.5}
        for seed, score in seeds.items():
            rows.append({"cell": "r/xs", "dataset": "r", "stage": "1", "status": "ok", "seed": seed, **knobs,
                         "config_key": json.dumps(knobs, sort_keys=True), "val_score": score, "race_round": 1.0 if seed > 2 else 0.0,
                         "epochs_run": 2, "trial_id": f"{name}{seed}", "duplicate_of": None, "val_collapsed": name == "d"})
    for seed in (0, 1, 2):  # no KD, and a copy of a's training (t_hs trained as t_ll): neither counts
        base = {"alpha": 0.0}
        rows.append({"cell": "r/xs", "dataset": "r", "stage": "baseline", "status": "ok", "seed": seed, **base,
                     "config_key": json.dumps(base), "val_score": 0.7, "race_round": 0.0, "epochs_run": 2,
                     "trial_id": f"base{seed}", "duplicate_of": None, "val_collapsed": False})
        copy = {"teacher": "t_hs", "loss": "ce", "alpha": 0.5}
        rows.append({**rows[seed], **copy, "config_key": json.dumps(copy, sort_keys=True), "trial_id": f"a{seed}=dup",
                     "duplicate_of": f"a{seed}"})
    return pd.DataFrame(rows)


def test_racing_says_where_the_seeds_went_and_what_they_changed() -> None:
    (row,) = analysis.racing(_rows(), "val_score").to_dict("records")
    assert row["cell"] == "r/xs" and row["configs"] == 4 and row["first seeds"] == 3
    assert row["raced configs"] == 2 and row["raced trials"] == 4 and row["rounds"] == 1 and row["most seeds"] == 5
    assert abs(row["share of trial-epochs"] - 4 / 16) < 1e-9  # 12 first-seed trials and 4 raced, 2 epochs each
    # b led on the first seeds; racing made a the best: it ranked 2nd there
    assert row["best's rank on the first seeds"] == 2
    # a and b cannot be told apart on 5 seeds; c can (3 shared seeds, 20 points behind); d collapsed
    assert row["best set at the end"] == "2 of 3"


def test_no_racing_no_section() -> None:
    unraced = _rows().assign(race_round=0.0)
    assert analysis.racing(unraced, "val_score").empty
    assert analysis.racing(unraced.drop(columns="race_round"), "val_score").empty
