"""Sultan et al.'s across-cell analyses on hand-made rows whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kdsearch.recommend import regrets
from kdsearch.recommend.nearest import PastSearches
from kdsearch.reports import across

# (teacher, loss) -> validation score; seeds add +-0.1 point around it
CELL_A = {("t_ll", "ce"): 0.80, ("t_hs", "ce"): 0.78, ("t_ll", "mse"): 0.70, ("t_hs", "mse"): 0.69}
# t_hs and t_ll were one checkpoint: t_hs's rows copy t_ll's (duplicate_of); MSE wins here
CELL_B = {("t_ll", "ce"): 0.60, ("t_ll", "mse"): 0.65}


def _rows(cell: str, scores: dict[tuple[str, str], float], copied_teacher: str | None = None) -> list[dict]:
    """Rows as a search writes them; with ``copied_teacher``, t_hs and t_ll are one checkpoint
    and that teacher's configs are copies of the other's (``duplicate_of``)."""
    rows = []
    for (teacher, loss), score in scores.items():
        for seed, noise in zip((0, 1, 2), (-0.001, 0.0, 0.001)):
            knobs = {"teacher": teacher, "loss": loss, "alpha": 0.5, "tau_s": 1.0}
            base = {"cell": f"{cell}/xs", "dataset": cell, "student": "xs", "stage": "1", "status": "ok", "seed": seed,
                    **knobs, "config_key": json.dumps(knobs, sort_keys=True), "val_score": score + noise,
                    "trial_id": f"{cell}-{teacher}-{loss}-{seed}", "duplicate_of": None,
                    "teacher_name": f"{cell}-epoch3" if copied_teacher or teacher == "t_ll" else f"{cell}-epoch2"}
            rows.append(base)
            if copied_teacher:
                copy = {**knobs, "teacher": copied_teacher}
                rows.append({**base, **copy, "config_key": json.dumps(copy, sort_keys=True),
                             "trial_id": base["trial_id"] + "-copy", "duplicate_of": base["trial_id"]})
    return rows


@pytest.fixture
def trials() -> pd.DataFrame:
    return pd.DataFrame(_rows("A", CELL_A) + _rows("B", CELL_B, copied_teacher="t_hs"))


@pytest.fixture
def table(trials: pd.DataFrame) -> pd.DataFrame:
    return regrets(PastSearches(trials, {}, "val_score", "max"))


def test_the_teacher_is_no_choice_where_both_name_one_checkpoint(trials: pd.DataFrame) -> None:
    assert across.one_training(trials) == {("B/xs", "teacher")}
    # however the configs were asked: a greedy search copies the first it met, later stages train one value only
    b = trials[trials["cell"] == "B/xs"]
    later = b[b["teacher"] == "t_ll"].assign(loss="dist", config_key=lambda d: d["config_key"].str.replace("mse", "dist"))
    assert across.one_training(pd.concat([b[b["duplicate_of"].isna() | (b["loss"] == "ce")], later])) == {("B/xs", "teacher")}
    assert across.one_training(trials.drop(columns="teacher_name")) == set()


def test_a_choice_costs_its_best_config_and_a_copy_is_no_choice(trials: pd.DataFrame, table: pd.DataFrame) -> None:
    costs = across.knob_costs(table, trials, "val_score").set_index(["knob", "choice"])
    # teacher: only cell A ran two distinct teachers (in B they tie as one training, not a choice)
    assert costs.loc[("teacher", "t_ll"), "cells"] == 1 and costs.loc[("teacher", "t_ll"), "mean cost"] == pytest.approx(0.0)
    assert costs.loc[("teacher", "t_hs"), "mean cost"] == pytest.approx(2.0) and costs.loc[("teacher", "t_hs"), "worst cell"] == "A/xs"
    # loss: CE is 5 points behind in B, MSE 10 behind in A
    assert costs.loc[("loss", "ce"), "mean cost"] == pytest.approx(2.5) and costs.loc[("loss", "ce"), "worst cell"] == "B/xs"
    assert costs.loc[("loss", "mse"), "mean cost"] == pytest.approx(5.0) and costs.loc[("loss", "mse"), "best in"] == 1
    # tested only where it is not the cell's best (A); three seeds never tell, and the table says so
    assert costs.loc[("loss", "mse"), "real differences"] == "0 of 1 (0 could tell)"
    # without the copies marked, B's tie would count t_hs as best there too
    tied = across.choice_costs(table)
    assert set(tied.loc[tied["knob"] == "teacher", "cell"]) == {"A/xs", "B/xs"}


def test_the_principles_name_their_cells(trials: pd.DataFrame, table: pd.DataFrame) -> None:
    rules = across.principles(table, trials).set_index("principle")
    ce = rules.loc[next(p.claim for p in across.PRINCIPLES if p.knob == "loss")]
    assert ce["cells"] == 2 and ce["holds in"] == 1 and ce["verdict"] == "holds in half the cells"
    assert ce["where it does not (cost, noise)"].startswith("B/xs (+5.00") and ce["where it holds"].startswith("A/xs (-10.00")
    teacher = rules.loc[next(p.claim for p in across.PRINCIPLES if p.knob == "teacher")]
    assert teacher["cells"] == 1 and teacher["verdict"] == "holds in every cell"
    assert teacher["choices trained as one (not counted)"] == "B/xs"
    # tau_s was never varied: no row
    assert len(rules) == 2
    # a store where the teachers were one checkpoint everywhere cannot judge that principle, and says so
    only_b = trials[trials["cell"] == "B/xs"]
    b_rules = across.principles(regrets(PastSearches(only_b, {}, "val_score", "max")), only_b).set_index("principle")
    assert b_rules.loc[teacher.name, "verdict"].startswith("not judged") and b_rules.loc[teacher.name, "cells"] == 0


def test_the_config_best_on_average_and_its_worst_case(table: pd.DataFrame) -> None:
    avg = across.best_on_average(table)
    top = avg.iloc[0]
    assert "teacher=t_ll" in top["config"] and "loss=ce" in top["config"]
    assert top["mean cost"] == pytest.approx(2.5) and top["worst cost"] == pytest.approx(5.0) and top["worst cell"] == "B/xs"
    assert list(avg["mean cost"]) == sorted(avg["mean cost"])


def test_the_across_plot_draws_the_costs_and_the_leave_one_out(trials: pd.DataFrame, table: pd.DataFrame,
                                                               tmp_path: Path) -> None:
    from kdsearch.reports.compare import _across_plot

    costs = across.knob_costs(table, trials, "val_score")
    assert _across_plot(costs, pd.DataFrame(), tmp_path) == "across.png"
    alone = (tmp_path / "across.png").stat().st_size
    loo = pd.DataFrame({"dataset": ["A", "B"], "recommender": [1.0, float("nan")], "paper": [2.0, 0.5],
                        "average": [1.0, 0.5], "no_kd": [4.0, 3.0]})
    _across_plot(costs, loo, tmp_path)
    assert alone > 1000 and (tmp_path / "across.png").stat().st_size > alone  # a second panel


def test_a_cell_whose_every_config_collapsed_ranks_no_choice(trials: pd.DataFrame) -> None:
    # cell C: every student predicts one class; MSE's seeds fell to another class, a point apart
    dead = pd.DataFrame(_rows("C", {("t_ll", "ce"): 0.48, ("t_hs", "ce"): 0.48, ("t_ll", "mse"): 0.47})).assign(val_collapsed=True)
    rows = pd.concat([trials.assign(val_collapsed=False), dead], ignore_index=True)
    table = regrets(PastSearches(rows, {}, "val_score", "max"))
    assert "C/xs" in set(across.choice_costs(table)["cell"])  # its ties broken by noise: counted without the filter
    live, left = across.without_collapsed(table, rows, "val_score", "max")
    assert left == ["C/xs"] and set(live["cell"]) == {"A/xs", "B/xs"}
    ce = across.principles(live, rows).set_index("principle").loc[next(p.claim for p in across.PRINCIPLES if p.knob == "loss")]
    assert ce["cells"] == 2 and "C/xs" not in ce["where it holds"]
    # one seed that learned keeps the cell
    learned = rows.index[(rows["cell"] == "C/xs")][0]
    one_learned = rows.assign(val_collapsed=rows["val_collapsed"] & (rows.index != learned))
    assert across.without_collapsed(table, one_learned, "val_score", "max")[1] == []


def test_a_principle_whose_both_sides_collapsed_is_not_judged_there(trials: pd.DataFrame) -> None:
    # cell D: CE and MSE both collapse on every seed (a tie at the majority class, noise 0); DIST learns
    collapsed = pd.DataFrame(_rows("D", {("t_ll", "ce"): 0.30, ("t_ll", "mse"): 0.30})).assign(val_collapsed=True)
    learned = pd.DataFrame(_rows("D", {("t_ll", "dist"): 0.50})).assign(val_collapsed=False)
    rows = pd.concat([trials.assign(val_collapsed=False), collapsed, learned], ignore_index=True)
    table = regrets(PastSearches(rows, {}, "val_score", "max"))
    ce = across.principles(table, rows).set_index("principle").loc[next(p.claim for p in across.PRINCIPLES if p.knob == "loss")]
    assert ce["both sides collapsed (not counted)"] == "D/xs"
    assert ce["cells"] == 2 and "D/xs" not in ce["where it holds"] and "D/xs" not in ce["where it does not (cost, noise)"]
    # one seed of MSE that learned makes D a cell that can judge (MSE wins it)
    first_mse = rows.index[(rows["cell"] == "D/xs") & (rows["loss"] == "mse")][0]
    rows.loc[first_mse, ["val_collapsed", "val_score"]] = [False, 0.45]
    table = regrets(PastSearches(rows, {}, "val_score", "max"))
    ce = across.principles(table, rows).set_index("principle").loc[ce.name]
    assert ce["cells"] == 3 and "both sides collapsed (not counted)" not in ce and "D/xs (+" in ce["where it does not (cost, noise)"]


def test_a_config_copied_in_every_cell_is_not_listed_best_on_average(trials: pd.DataFrame) -> None:
    # in A t_hs trained on its own: nothing is a copy everywhere
    assert across.copies_everywhere(trials) == set()
    only_b = trials[trials["cell"] == "B/xs"]
    copies = across.copies_everywhere(only_b)
    assert copies and all(json.loads(k)["teacher"] == "t_hs" for k in copies)
    table = regrets(PastSearches(only_b, {}, "val_score", "max"))
    listed = across.best_on_average(table)["config"]
    assert listed.str.contains("teacher=t_hs").any()  # each copy one row below the training it ties
    kept = across.best_on_average(table, copies=copies)["config"]
    assert len(kept) == 2 and not kept.str.contains("teacher=t_hs").any()


def _tau_cell(dataset: str, scores: dict[tuple[float, float], float]) -> pd.DataFrame:
    """A regret table of one cell: (tau_t, tau_s) -> score, tau_s = tau_t written as its value."""
    keys = [json.dumps({"loss": "ce", "tau_t": t, "tau_s": s}, sort_keys=True) for t, s in scores]
    best = max(scores.values())
    return pd.DataFrame({"cell": f"{dataset}/xs", "dataset": dataset, "config_key": keys, "trial_key": keys,
                         "regret": [100 * (best - v) for v in scores.values()]})


def test_a_principle_is_costed_on_matched_configs() -> None:
    """tau_s = 1 against tau_s = tau_t: at tau_t = 1 the two are one config, so only the configs
    of tau_t != 1 pair up; the unmatched tau_t = 1 config is left out however well it did."""
    tau_s = next(p for p in across.PRINCIPLES if p.knob == "tau_s")
    cell = _tau_cell("A", {(1.0, 1.0): 0.90, (4.0, 1.0): 0.80, (4.0, 4.0): 0.83, (2.0, 1.0): 0.79, (2.0, 2.0): 0.75})
    assert across.matched_cost(cell, tau_s).cost == pytest.approx(+3.0)  # 0.80 against 0.83: following it loses 3 points
    assert across.matched_cost(_tau_cell("A", {(1.0, 1.0): 0.9}), tau_s) is None
    loss = next(p for p in across.PRINCIPLES if p.knob == "loss")
    mixed = pd.DataFrame({"cell": "A/xs", "dataset": "A", "regret": [0.0, 2.0, 5.0],
                          "config_key": [json.dumps(c, sort_keys=True) for c in
                                         ({"loss": "ce", "alpha": 1.0}, {"loss": "mse", "alpha": 0.5}, {"loss": "mse", "alpha": 1.0})]})
    mixed["trial_key"] = mixed["config_key"]
    assert across.matched_cost(mixed, loss).cost == pytest.approx(-5.0)  # ce at alpha 1 against mse at alpha 1 only


def test_the_test_across_datasets_holds_its_level_on_matched_configs() -> None:
    """An A/A check: every config of every cell scores alike in distribution (no principle
    matters). Over 7 datasets the matched test says "wins" or "loses" at most about 5% of the
    time; the unmatched cost (the side of tau_s = 1 holds one config more) says "wins" more often
    than "loses", as the winner's curse predicts."""
    import numpy as np

    from kdsearch.results import stats

    tau_s = next(p for p in across.PRINCIPLES if p.knob == "tau_s")
    rng = np.random.default_rng(0)
    grid = list(dict.fromkeys((t, s) for t in (1.0, 2.0, 4.0) for s in (1.0, t)))  # (1, 1) once: 3 configs of tau_s 1, 2 of tau_t
    reps, datasets = 1500, 7
    cell = _tau_cell("A", dict.fromkeys(grid, 0.8))
    follows = (cell["config_key"].map(lambda k: json.loads(k)["tau_s"] == 1.0)).to_numpy()
    scores = rng.normal(0.8, 0.02, (reps, datasets, len(grid)))
    matched = np.empty((reps, datasets))
    for r in range(reps):
        for d in range(datasets):
            cell["regret"] = 100 * (scores[r, d].max() - scores[r, d])
            matched[r, d] = across.matched_cost(cell, tau_s).cost
    regret = 100 * (scores.max(axis=-1, keepdims=True) - scores)
    unmatched = regret[..., follows].min(axis=-1) - regret[..., ~follows].min(axis=-1)
    for costs in (matched, unmatched):
        assert costs.shape == (reps, datasets) and not np.isnan(costs).any()
    p_m, p_u = stats.signflip_p(matched), stats.signflip_p(unmatched)
    real_m = p_m <= stats.LEVEL
    assert real_m.mean() <= stats.LEVEL + 3 * np.sqrt(stats.LEVEL * (1 - stats.LEVEL) / reps)
    wins_m, loses_m = (real_m & (matched.mean(1) < 0)).mean(), (real_m & (matched.mean(1) > 0)).mean()
    assert abs(wins_m - loses_m) < 0.02  # symmetric
    real_u = p_u <= stats.LEVEL
    wins_u, loses_u = (real_u & (unmatched.mean(1) < 0)).mean(), (real_u & (unmatched.mean(1) > 0)).mean()
    assert wins_u > 2 * loses_u


def test_a_principle_across_datasets_says_what_the_datasets_can_tell() -> None:
    figures, verdict = across.across_datasets({"a": [-1.0], "b": [-2.0, -0.5], "c": [-0.3]})
    assert figures.startswith("-0.85 points, sign-flip p 0.250, 3 dataset(s)")
    assert verdict == "cannot tell: 3 dataset(s) can never show a difference at 0.05 with the sign-flip test; 6 can"
    figures, verdict = across.across_datasets({str(d): [-1.0 - d / 10] for d in range(7)})
    assert "7 dataset(s)" in figures and verdict == "following it wins"
    _, verdict = across.across_datasets({str(d): [1.0 + d / 10] for d in range(7)})
    assert verdict == "following it loses"
    _, verdict = across.across_datasets({str(d): [(-1) ** d * (1.0 + d / 10)] for d in range(7)})
    assert verdict == "cannot tell: inside the noise"
    assert across.across_datasets({}) == ("-", "not judged: no dataset with matched configs")


def test_choices_head_to_head_across_datasets(trials: pd.DataFrame, table: pd.DataFrame) -> None:
    h = across.head_to_head(table, trials).set_index(["knob", "choice"])
    # loss: CE 10 points ahead in A, 5 behind in B: ahead on average, in 1 of 2 datasets; 2 cannot tell
    ce = h.loc[("loss", "ce")]
    assert ce["against"] == "mse" and ce["ahead in"] == "1 of 2 datasets"
    assert ce["difference (matched configs)"].startswith("-2.50 points") and ce["verdict"].startswith("cannot tell: 2 dataset(s)")
    # teacher: B trained t_hs as t_ll (not a choice there): A alone
    assert h.loc[("teacher", "t_ll"), "ahead in"] == "1 of 1 datasets"
    # seven datasets where DIST leads CE by a point or more: DIST wins, named first
    rows = pd.concat([pd.DataFrame(_rows(f"D{d}", {("t_ll", "dist"): 0.80 + d / 100, ("t_ll", "ce"): 0.79 - d / 100}))
                      for d in range(7)], ignore_index=True)
    seven = across.head_to_head(regrets(PastSearches(rows, {}, "val_score", "max")), rows).set_index(["knob", "choice"])
    dist = seven.loc[("loss", "dist")]
    assert dist["against"] == "ce" and dist["ahead in"] == "7 of 7 datasets" and dist["verdict"] == "dist wins"
    assert "sign-flip p 0.016, 7 dataset(s)" in dist["difference (matched configs)"]
    # where both sides collapsed on every seed in every cell, nothing is compared
    dead = rows.assign(val_collapsed=True)
    assert across.head_to_head(regrets(PastSearches(dead, {}, "val_score", "max")), dead).empty
