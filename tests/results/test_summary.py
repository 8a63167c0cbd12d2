"""Honest summaries: collapsed models are flagged, gains below three paired seeds are not findings."""

from __future__ import annotations

import json

import pandas as pd

from kdsearch.knobs import BASELINE, key
from kdsearch.results.summary import best_per_cell, summary_lines

KD = {"alpha": 0.5, "loss": "ce"}
MSE = {"alpha": 0.5, "loss": "mse"}


def rows(config: dict, stage: str, scores: dict[int, float], collapsed: bool = False, majority: float = 0.53) -> list[dict]:
    return [
        {"trial_id": f"{stage}-{json.dumps(config)}-{seed}", "cell": "rt/xs", "stage": stage, "status": "ok", "seed": seed,
         "config_key": key(config), **config, "val_score": v, "val_collapsed": collapsed, "val_majority": majority}
        for seed, v in scores.items()
    ]


def test_a_gain_from_two_seeds_is_labelled_noise_with_its_seed_by_seed_differences() -> None:
    trials = pd.DataFrame(rows(BASELINE, "baseline", {0: 0.60, 1: 0.61}) + rows(KD, "0", {0: 0.67, 1: 0.62}))
    best = best_per_cell(trials, "val_score")["rt/xs"]
    assert best["gain_over_baseline"] == 0.04 and best["gain_by_seed"] == {0: 0.07, 1: 0.01}
    assert best["gain_verdict"] == "not distinguishable from noise: 2 paired seed(s), fewer than 3"
    (line,) = [ln for ln in summary_lines(trials, {"rt/xs": best}, "val_score") if "best rt/xs" in ln]
    assert "gain +0.0400 (by seed: +0.0700, +0.0100): not distinguishable from noise" in line


def test_three_seeds_give_a_verdict() -> None:
    trials = pd.DataFrame(rows(BASELINE, "baseline", {0: 0.60, 1: 0.61, 2: 0.62}) + rows(KD, "0", {0: 0.66, 1: 0.67, 2: 0.68}))
    best = best_per_cell(trials, "val_score")["rt/xs"]
    assert best["gain_verdict"].startswith("a real gain (95% CI [+0.0600, +0.0600])")
    noisy = pd.DataFrame(rows(BASELINE, "baseline", {0: 0.60, 1: 0.61, 2: 0.62}) + rows(KD, "0", {0: 0.70, 1: 0.55, 2: 0.63}))
    assert best_per_cell(noisy, "val_score")["rt/xs"]["gain_verdict"].startswith("inside the noise")


def test_every_config_collapsed_names_no_best() -> None:
    trials = pd.DataFrame(rows(BASELINE, "baseline", {0: 0.53}, True) + rows(KD, "0", {0: 0.53}, True) + rows(MSE, "0", {0: 0.53}, True))
    best = best_per_cell(trials, "val_score")
    assert best["rt/xs"] == {"status": "every config collapsed", "configs_tried": 2, "majority_class_score": 0.53}
    lines = summary_lines(trials, best, "val_score")
    assert lines[1].startswith("warning: 3 of 3 finished trials collapsed")
    assert lines[2] == ("   rt/xs: every config collapsed (the majority class scores 0.5300): no config is better than "
                        "predicting one class, so none is named best")


def test_a_collapsed_seed_is_flagged_on_the_best_config() -> None:
    trials = pd.DataFrame(rows(KD, "0", {0: 0.70}) + rows(KD, "0", {1: 0.53}, True) + rows(MSE, "0", {0: 0.60, 1: 0.58}))
    best = best_per_cell(trials, "val_score")["rt/xs"]
    assert best["config"]["loss"] == "mse" or best["collapsed_seeds"] == 1
    kd = best_per_cell(trials[trials.loss == "ce"], "val_score")["rt/xs"]
    assert kd["collapsed_seeds"] == 1
    assert "[collapsed on 1 seed(s)]" in summary_lines(trials[trials.loss == "ce"], {"rt/xs": kd}, "val_score")[-1]
