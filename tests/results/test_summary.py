"""Honest summaries: collapsed models are flagged, a best config is judged only on seeds it was
not picked on, and no verdict rests on seeds that cannot carry one."""

from __future__ import annotations

import json

import math

import numpy as np
import pandas as pd

from kdsearch.knobs import BASELINE, key
from kdsearch.results.summary import best_per_cell, config_table, picks, summary_lines

KD = {"teacher": "t_hs", "alpha": 0.5, "loss": "ce", "tau_s": 1.0}
MSE = {"teacher": "t_ll", "alpha": 0.5, "loss": "mse", "tau_s": 1.0}
PAPER = {"teacher": "t_ll", "alpha": 0.5, "loss": "ce", "tau_s": 1.0}


def rows(config: dict, stage: str, scores: dict[int, float], collapsed: bool = False, majority: float = 0.53,
         role: str = "select", test: dict[int, float] | None = None) -> list[dict]:
    return [
        {"trial_id": f"{role}-{stage}-{json.dumps(config)}-{seed}", "cell": "rt/xs", "stage": stage, "status": "ok",
         "seed": seed, "config_key": key(config), **config, "val_score": v, "val_collapsed": collapsed, "val_majority": majority,
         "role": role, **({"test_score": test[seed]} if test else {})}
        for seed, v in scores.items()
    ]


def test_the_gain_on_the_seeds_it_was_picked_on_is_shown_as_optimistic_not_as_a_verdict() -> None:
    trials = pd.DataFrame(rows(BASELINE, "baseline", {0: 0.60, 1: 0.61}) + rows(KD, "0", {0: 0.67, 1: 0.62}))
    best = best_per_cell(trials, "val_score")["rt/xs"]
    assert best["gain_over_baseline"] == 0.04 and best["gain_by_seed"] == {0: 0.07, 1: 0.01}
    assert best["gain_verdict"] == "no verdict: not confirmed on fresh seeds"
    lines = summary_lines(trials, {"rt/xs": best}, "val_score", "S")
    (line,) = [ln for ln in lines if "best rt/xs" in ln]
    assert "+4.00 points on the seeds it was picked on (by seed: +7.00, +1.00; optimistic, not a verdict)" in line
    assert "not confirmed on fresh seeds: no verdict (kdsearch confirm S runs them)" in lines[-1]
    # mid-run (kdsearch results of a search still going) confirm would refuse: its end confirms
    unfinished = summary_lines(trials, {"rt/xs": best}, "val_score", "S", finished=False)
    assert unfinished[-1] == "     not confirmed on fresh seeds yet: no verdict (the search has not finished)"


def test_the_paper_reference_is_the_best_recommended_config_or_built_from_the_best() -> None:
    trials = pd.DataFrame(rows(KD, "0", {0: 0.70, 1: 0.71}) + rows(PAPER, "0", {0: 0.65, 1: 0.66})
                          + rows({**PAPER, "alpha": 1.0}, "1", {0: 0.68, 1: 0.69}))
    p = picks(trials, "val_score")["rt/xs"]
    assert p.best_key == key(KD) and p.reference_ran and p.reference_key == key({**PAPER, "alpha": 1.0})
    alone = picks(pd.DataFrame(rows(KD, "0", {0: 0.70})), "val_score")["rt/xs"]  # none ran: the best with the paper's knobs
    assert not alone.reference_ran and alone.reference_key == key({**KD, "teacher": "t_ll"})
    itself = picks(pd.DataFrame(rows(PAPER, "0", {0: 0.70}) + rows(MSE, "0", {0: 0.6})), "val_score")["rt/xs"]
    assert itself.reference is None  # the best is the recommendation


def test_verdicts_come_from_confirmation_seeds_on_the_test_split() -> None:
    select = pd.DataFrame(rows(BASELINE, "baseline", {0: 0.60, 1: 0.61}) + rows(KD, "0", {0: 0.70, 1: 0.71})
                          + rows(PAPER, "0", {0: 0.65, 1: 0.66}))
    fresh = range(100000, 100008)
    confirm = pd.DataFrame(
        rows(BASELINE, "baseline", {s: 0.5 for s in fresh}, role="confirm", test={s: 0.60 + 0.001 * (s % 3) for s in fresh})
        + rows(KD, "confirm:best", {s: 0.5 for s in fresh}, role="confirm", test={s: 0.70 + 0.002 * (s % 2) for s in fresh})
        + rows(PAPER, "confirm:reference", {s: 0.5 for s in fresh}, role="confirm",
               test={s: 0.70 + 0.002 * ((s + 1) % 2) for s in fresh}))
    best = best_per_cell(select, "val_score", confirm=confirm)["rt/xs"]
    conf = best["confirmed"]
    assert conf["metric"] == "test_score" and conf["seeds"] == 8
    assert conf["no KD"]["verdict"] == "a real gain (sign-flip p 0.008, 8 seeds)" == best["gain_verdict"]
    assert conf["reference"]["verdict"].startswith("cannot tell: inside the noise")
    text = "\n".join(summary_lines(select, {"rt/xs": best}, "val_score"))
    assert "confirmed on 8 fresh seed(s), test_score (test split)" in text
    assert "against the paper's recommendation (teacher=t_ll, loss=ce, alpha=0.5" in text


def test_three_confirmation_seeds_never_say_real_and_say_how_many_would() -> None:
    select = pd.DataFrame(rows(BASELINE, "baseline", {0: 0.60}) + rows(PAPER, "0", {0: 0.70}))
    fresh = {100000: 0.8, 100001: 0.81, 100002: 0.82}
    confirm = pd.DataFrame(rows(BASELINE, "baseline", fresh, role="confirm", test={s: 0.5 for s in fresh})
                           + rows(PAPER, "confirm:best", fresh, role="confirm", test={s: 0.9 for s in fresh}))
    best = best_per_cell(select, "val_score", confirm=confirm)["rt/xs"]
    assert best["gain_verdict"] == "cannot tell: 3 seed(s) can never show a difference at 0.05 with the sign-flip test; 6 can"
    assert "the best config is the paper's recommendation" in "\n".join(summary_lines(select, {"rt/xs": best}, "val_score"))


def test_every_config_collapsed_names_no_best() -> None:
    trials = pd.DataFrame(rows(BASELINE, "baseline", {0: 0.53}, True) + rows(KD, "0", {0: 0.53}, True) + rows(MSE, "0", {0: 0.53}, True))
    best = best_per_cell(trials, "val_score")
    assert best["rt/xs"] == {"status": "every config collapsed", "configs_tried": 2, "majority_class_score": 0.53}
    lines = summary_lines(trials, best, "val_score")
    assert lines[1].startswith("warning: 3 of 3 trained students collapsed")
    assert lines[2] == ("   rt/xs: every config collapsed (the majority class scores 0.5300): no config is better than "
                        "predicting one class, so none is named best")


def test_a_collapsed_seed_is_flagged_on_the_best_config() -> None:
    trials = pd.DataFrame(rows(KD, "0", {0: 0.70}) + rows(KD, "0", {1: 0.53}, True) + rows(MSE, "0", {0: 0.60, 1: 0.58}))
    best = best_per_cell(trials, "val_score")["rt/xs"]
    assert best["config"]["loss"] == "mse" or best["collapsed_seeds"] == 1
    kd = best_per_cell(trials[trials.loss == "ce"], "val_score")["rt/xs"]
    assert kd["collapsed_seeds"] == 1
    assert any("[collapsed on 1 seed(s)]" in ln for ln in summary_lines(trials[trials.loss == "ce"], {"rt/xs": kd}, "val_score"))


def test_the_collapse_warning_counts_trainings_not_copies() -> None:
    rows_ = rows(KD, "0", {0: 0.53, 1: 0.53}, True) + rows(PAPER, "0", {0: 0.53, 1: 0.53}, True)
    for r in rows_[2:]:  # t_ll trained as t_hs here: its rows are copies
        r["duplicate_of"], r["trial_id"] = r["trial_id"], r["trial_id"] + "=dup"
    trials = pd.DataFrame(rows_)
    line = summary_lines(trials, best_per_cell(trials, "val_score"), "val_score")[1]
    assert line.startswith("warning: 2 of 2 trained students collapsed") and line.endswith(
        "2 more row(s) are copies of them, for configs that trained as another")


def test_the_best_set_says_when_its_seeds_are_too_few_to_separate_anything() -> None:
    """At 2 seeds no config can be separated from the leader, and a bootstrap over 2 seeds
    says "P 1.00" of a lucky pair: the line says why the set is everything and gives no P."""
    two = pd.DataFrame(rows(KD, "0", {0: 0.70, 1: 0.71}) + rows(PAPER, "0", {0: 0.65, 1: 0.66}))
    lines = summary_lines(two, best_per_cell(two, "val_score"), "val_score")
    (line,) = [ln for ln in lines if "best set:" in ln]
    assert "2 configs, 2 seed(s) are too few for a paired t test at 0.05 (Holm-adjusted), from 3 shared seeds to separate any" in line
    assert ", P " not in line
    three = pd.DataFrame(rows(KD, "0", {0: 0.70, 1: 0.71, 2: 0.64}) + rows(PAPER, "0", {0: 0.65, 1: 0.66, 2: 0.69}))
    (line,) = [ln for ln in summary_lines(three, best_per_cell(three, "val_score"), "val_score") if "best set:" in ln]
    assert "cannot separate (P(best) from a bootstrap over seeds)" in line and ", P 0." in line


def test_the_best_set_counts_a_training_once_not_its_copies() -> None:
    """Where t_hs and t_ll are one checkpoint the t_hs configs' rows are copies of the t_ll ones:
    the best set holds each training once (a copy would tie with itself and split P(best))."""
    hs_mse = {**MSE, "teacher": "t_hs"}
    rows_ = (rows(PAPER, "0", {0: 0.70, 1: 0.72, 2: 0.71}) + rows(MSE, "0", {0: 0.69, 1: 0.72, 2: 0.70})
             + rows(KD, "0", {0: 0.70, 1: 0.72, 2: 0.71}) + rows(hs_mse, "0", {0: 0.69, 1: 0.72, 2: 0.70}))
    for r in rows_[6:]:  # the t_hs configs trained as t_ll: their rows are copies
        r["duplicate_of"] = r["trial_id"].replace('"t_hs"', '"t_ll"')
    trials = pd.DataFrame(rows_)
    best = best_per_cell(trials, "val_score")["rt/xs"]
    assert [m["config"]["teacher"] for m in best["best_set"]] == ["t_ll", "t_ll"]
    assert math.isclose(sum(m["p_best"] for m in best["best_set"]), 1.0) and best["best_set"][0]["p_best"] > 0.5


def test_the_config_table_counts_finished_seeds_and_keeps_first_rows() -> None:
    """One row per (cell, config) in order of first appearance, its knobs from its first row;
    mean and std over finished seeds alone, equal to the bit to pandas' own (the committed
    reports are rebuilt byte for byte from them), failed and collapsed seeds counted."""
    scores = [0.1 + 0.7 * i / 9 for i in range(10)]  # ten seeds: numpy sums them pairwise, not in a line
    trials = pd.DataFrame(
        rows(KD, "0", dict(enumerate(scores)))
        + rows(BASELINE, "baseline", {0: 0.61, 1: 0.58, 2: 0.60}, collapsed=True)
        + rows(MSE, "1", {0: 0.55, 1: 0.57, 2: 0.99, 3: 0.52}) + [dict(r, cell="bbc/xs") for r in rows(KD, "0", {0: 0.9})]
    )
    trials["val_agreement"] = np.linspace(0.5, 0.9, len(trials))
    mse = trials.index[trials["loss"] == "mse"]
    trials.loc[mse[2], "status"] = "diverged"  # its 0.99 no longer counts
    trials.loc[mse[3], "val_score"] = math.nan  # finished without a score (counted, not averaged)
    trials.loc[trials.index[trials["stage"] == "baseline"][1], "val_collapsed"] = False
    table = config_table(trials, "val_score")
    assert list(zip(table["cell"], table["stage"])) == [("rt/xs", "0"), ("rt/xs", "baseline"), ("rt/xs", "1"), ("bbc/xs", "0")]
    kd, base, m, single = (table.iloc[i] for i in range(4))
    assert kd["mean"] == pd.Series(scores).mean() and kd["std"] == pd.Series(scores).std(ddof=1)
    assert kd["seeds"] == 10 and kd["failed"] == 0 and kd["collapsed"] == 0 and kd["teacher"] == "t_hs"
    assert base["seeds"] == 3 and base["collapsed"] == 2 and base["mean"] == pd.Series([0.61, 0.58, 0.60]).mean()
    assert m["seeds"] == 3 and m["failed"] == 1 and m["mean"] == pd.Series([0.55, 0.57]).mean()
    assert m["std"] == pd.Series([0.55, 0.57, math.nan]).std(ddof=1)
    assert m["val_agreement"] == trials.loc[mse[[0, 1, 3]], "val_agreement"].mean()
    assert single["seeds"] == 1 and single["std"] == 0.0  # one seed: no spread, not NaN
    trials.loc[trials["cell"] == "bbc/xs", "status"] = "failed"
    none = config_table(trials, "val_score").iloc[3]
    assert none["seeds"] == 0 and none["failed"] == 1 and math.isnan(none["mean"]) and math.isnan(none["std"])
    assert config_table(trials.iloc[:0], "val_score").empty and config_table(trials, "test_score").empty
