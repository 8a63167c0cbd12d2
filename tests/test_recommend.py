"""The recommender on Parquet from a real grid search over the three built-in datasets."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from kdsearch.cli import main
from kdsearch.errors import KDSearchError
from kdsearch.recommend import FEATURES, describe, feature_ablation, leave_one_out, load_past, loo_summary, recommend, regrets
from kdsearch.reports.analysis import config_means
from kdsearch.search.space import Space
from kdsearch.spec import DataSpec, DistillSpec, OptimSpec
from tests.conftest import SharedRay

PAST = """
name: past
data: {{max_length: 32, max_train_examples: 160, max_eval_examples: 64, tokenizer: {{vocab_size: 1000}}}}
teachers:
  model: xs
  seeds: [0]
  train: {{epochs: 2, batch_size: 32, learning_rate: 2.0e-3}}
student:
  model: xs
  train: {{epochs: 1, batch_size: 32, learning_rate: 2.0e-3}}
distill: {{teacher: t_ll, loss: ce, alpha: 0.5}}
workdir: {workdir}
search:
  method: grid
  datasets: [rotten_tomatoes, bbc_news, {{dataset: wnut16, max_length: 48}}]
  space:
    loss: [ce, mse]
  seeds: [0]
  storage: {storage}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, workdir: Path, shared_ray: SharedRay) -> Path:
    from kdsearch.search.runner import run_search
    from kdsearch.spec import load_spec

    root = tmp_path_factory.mktemp("store")
    spec_file = root / "past.yaml"
    spec_file.write_text(PAST.format(workdir=workdir, storage=root / "searches"))
    shared_ray.ensure()
    run_search(load_spec(spec_file), log=lambda *a, **k: None)
    return root / "searches"


def test_features_of_the_built_in_datasets(store: Path, workdir: Path) -> None:
    past = load_past([store])
    f = past.features
    assert set(f) == {"rotten_tomatoes", "bbc_news", "wnut16"}
    assert f["rotten_tomatoes"].labels == 2 and f["bbc_news"].labels == 5 and f["wnut16"].labels == 21
    assert f["rotten_tomatoes"].train_size == 160 and f["wnut16"].task == "token_classification"
    assert f["bbc_news"].mean_length > 5 * f["rotten_tomatoes"].mean_length  # long documents
    assert 0.9 < f["rotten_tomatoes"].label_entropy <= 1.0 and f["wnut16"].label_entropy < 0.5  # mostly O
    assert all(x.teacher_score is not None for x in f.values())  # the pools are in the workdir
    # features a search records since the breadth study: overlap with the (trained) tokenizer, and the
    # teacher's calibration and t_hs / t_ll agreement from its cached validation logits
    for x in f.values():
        assert 0.5 < x.vocab_overlap <= 1.0 and 0.0 <= x.teacher_ece <= 1.0 and 0.0 <= x.teacher_agreement <= 1.0
    # and the search recorded the teachers it used, so a store alone gives the same features
    meta = json.loads(next(store.glob("past-*/search.json")).read_text())
    assert max(t["val_score"] for t in meta["teachers"]["bbc_news"].values()) == f["bbc_news"].teacher_score
    assert describe(past_spec_data("rotten_tomatoes")).teacher_score is None  # no workdir, no pool


def past_spec_data(name: str) -> DataSpec:
    from kdsearch.spec import DataSpec, TokenizerSpec

    return DataSpec(dataset=name, max_length=32, max_train_examples=160, max_eval_examples=64, tokenizer=TokenizerSpec(vocab_size=1000))


def test_recommendation_is_the_lowest_weighted_regret(store: Path) -> None:
    past = load_past([store])
    target = past.features["rotten_tomatoes"]
    rec = recommend(target, past, exclude_self=True)
    assert {e.dataset for e in rec.evidence} == {"bbc_news", "wnut16"}
    # recompute from the Parquet alone
    means = config_means(past.trials, "val_score")
    means["dataset"] = means["cell"].str.split("/").str[0]
    means["regret"] = (means.groupby("cell")["mean"].transform("max") - means["mean"]) * 100
    dmin = min(e.distance for e in rec.evidence)
    w = {e.dataset: math.exp(-(e.distance**2 - dmin**2) / 2) for e in rec.evidence}
    per = means[means.dataset.isin(w)].groupby(["config_key", "dataset"])["regret"].mean().unstack()
    score = sum(per[d] * w[d] for d in w) / sum(w.values())
    assert rec.key == score.idxmin()
    assert rec.regret == pytest.approx(score.min(), abs=1e-9)
    assert rec.config == json.loads(rec.key) and rec.confidence in {"high", "medium", "low"}
    # what each distance is made of: the RMS of the per-feature differences
    for e in rec.evidence:
        assert e.distance == pytest.approx(math.sqrt(sum(d * d for d in e.apart.values()) / len(e.apart)))
    # its own dataset, when allowed, is the nearest (distance 0)
    own = recommend(target, past)
    assert own.evidence[0].dataset == "rotten_tomatoes" and own.evidence[0].distance == pytest.approx(0.0)


def test_leave_one_out_costs_match_the_parquet(store: Path) -> None:
    past = load_past([store])
    loo = leave_one_out(past)
    assert set(loo.dataset) == {"rotten_tomatoes", "bbc_news", "wnut16"}
    table = regrets(past)
    for row in loo.itertuples():
        rec = recommend(past.features[row.dataset], past, exclude_self=True)
        assert row.recommended == f"loss={rec.config['loss']}"  # only the knobs the store varied
        here = table[table.dataset == row.dataset]
        assert row.recommender == pytest.approx(here[here.config_key == rec.key].regret.mean()) and row.recommender >= 0
        others = table[table.dataset != row.dataset]
        # best on average over the others: each other dataset one vote
        per = others.groupby(["config_key", "dataset"])["regret"].mean().unstack().mean(axis=1)
        assert row.average == pytest.approx(here[here.config_key == per.idxmin()].regret.mean())
        # the paper's: ce (t_ll, tau_s 1 are the spec's, not searched), whatever the others say
        ce = here[here.config_key.map(lambda k: json.loads(k)["loss"]) == "ce"]
        assert row.paper == pytest.approx(ce.regret.mean())
        assert not pd.isna(row.no_kd)
    m = loo_summary(loo)
    assert m["datasets"] == 3 and m["recommender"] == pytest.approx(loo.recommender.mean())
    assert m["beats both"] == (m["recommender"] < min(m["paper"], m["average"]))


def test_the_leave_one_out_summary_tests_the_recommender_over_datasets() -> None:
    """A mean below both baselines is not a verdict: each difference is sign-flip tested with the
    dataset the unit, and a hundredth of a point, or too few datasets, reads "cannot tell"."""
    from kdsearch.recommend import loo_verdict

    six = pd.DataFrame({"dataset": list("abcdef"), "recommender": [1.0, 2.0, 0.5, 1.5, 0.0, 3.0],
                        "paper": [3.0, 4.5, 2.0, 2.5, 1.0, 6.0], "average": [1.0, 2.1, 0.5, 1.5, 0.0, 3.0],
                        "no_kd": [9.0] * 6})
    m = loo_summary(six)
    assert m["beats both"] and m["vs paper"].real and m["vs paper"].mean == pytest.approx(-11 / 6)
    assert m["vs paper"].p == pytest.approx(2 / 2**6) and not m["vs average"].real
    said = loo_verdict(m)
    assert "below both" in said and "against the paper -1.83 points, sign-flip p 0.031 (the recommender costs less, for real)" in said
    assert "against the average -0.02 points, sign-flip p 1.000 (cannot tell: inside the noise)" in said
    worse = loo_summary(six.assign(recommender=six.paper + 1.0))
    assert not worse["beats both"] and "the recommender costs more, for real" in loo_verdict(worse)
    three = loo_summary(six.iloc[:3].assign(no_kd=float("nan")))
    assert "3 dataset(s) can never show a difference at 0.05; 6 can" in loo_verdict(three) and "no KD" not in loo_verdict(three)


def test_feature_ablation_leaves_each_feature_out(store: Path) -> None:
    past = load_past([store])
    ab = feature_ablation(past)
    assert ab.iloc[0]["features"] == "all" and ab.iloc[0]["answers changed"] == 0
    left_out = [f.removeprefix("without ") for f in ab["features"][1:]]
    # the store's search recorded every feature, teacher ones included
    assert {"task", "train_size", "vocab_overlap", "teacher_score", "teacher_ece", "teacher_agreement"} <= set(left_out)
    for row in ab.itertuples():
        if row.features != "all":
            kept = [f for f in FEATURES if f != row.features.removeprefix("without ")]
            assert row._2 == pytest.approx(loo_summary(leave_one_out(past, features=kept))["recommender"], nan_ok=True)


def test_cli_recommend_and_loo(store: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["recommend", "--data", "rotten_tomatoes", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "recommended config" in out and "evidence" in out and "bbc_news" in out
    assert "why this near: alike in task" in out  # rotten_tomatoes and bbc_news are both classification
    assert main(["recommend", "--loo", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "leave one dataset out" in out and "recommender" in out and "which features carry it" in out
    assert main(["recommend", "--data", "rotten_tomatoes", "--store", str(store / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_recommend_reads_a_dataset_as_its_spec_lists_it(store: Path, capsys: pytest.CaptureFixture) -> None:
    # the spec's wnut16 has its own max_length (48): read with it, the data is the pool's and the
    # teacher's features are there; without the spec there is no pool, and the output says what is missing
    spec = store.parent / "past.yaml"
    assert main(["recommend", "--data", "wnut16", "--store", str(store), "--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "the dataset to distil on (wnut16)" in out and "compared without" not in out
    row = out.split("the dataset to distil on (wnut16):")[1].splitlines()[3].split()
    assert row[:2] == ["wnut16", "token_classification"] and len(row) == 10  # every feature known
    assert main(["recommend", "--data", "wnut16", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "compared without teacher_score, teacher_ece, teacher_agreement: no teacher pool" in out
    assert "compared without vocab_overlap" in out


def test_recommend_names_a_search_that_has_not_finished(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    (folder,) = store.glob("past-*")
    assert main(["recommend", "--loo", "--store", str(store)]) == 0
    assert "not finished" not in capsys.readouterr().out
    running = tmp_path / folder.name
    shutil.copytree(folder, running, ignore=shutil.ignore_patterns("tune"))
    meta = json.loads((running / "search.json").read_text())
    del meta["finished"]  # as a search still running (or stopped) has it
    (running / "search.json").write_text(json.dumps(meta))
    assert main(["recommend", "--loo", "--store", str(tmp_path)]) == 0
    assert f"not finished (running or stopped; their rows so far are read): {folder.name}" in capsys.readouterr().out


def test_a_recommendation_becomes_the_searchs_starting_point() -> None:
    space = {"loss": ["ce", "mse"], "alpha": [1.0, 0.5], "tau_t": [1.0, 4.0]}
    plain = Space(space, DistillSpec(), OptimSpec())
    seeded = Space(space, DistillSpec(), OptimSpec(), prefer={"loss": "mse", "alpha": 1.0, "tau_t": 3.0, "teacher": "t_hs"})
    assert plain.defaults == {"loss": "ce", "alpha": 0.5, "tau_t": 1.0}
    # values outside the space are ignored; knobs outside the space are not searched
    assert seeded.defaults == {"loss": "mse", "alpha": 1.0, "tau_t": 1.0}


def test_run_seeded_from_a_recommendation_records_it(store: Path, tiny_spec: Callable[..., Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    spec = tiny_spec(name="seeded", seeds="[0]", method="greedy")
    assert main(["run", str(spec), "--seed-from-recommendation", "--store", str(store), "--set", "search.space={loss: [ce, mse], alpha: [1.0, 0.5]}"]) == 0
    out = capsys.readouterr().out
    assert "recommended start for rotten_tomatoes" in out
    storage = Path(yaml.safe_load(spec.read_text())["search"]["storage"])
    folder = next(storage.glob("seeded-*"))
    meta = json.loads((folder / "search.json").read_text())
    prefer = meta["prefer"]["rotten_tomatoes"]
    trials = pd.read_parquet(folder / "trials.parquet")
    first = trials[trials.stage == "0"]
    # stage 0 varies loss; alpha is held at the recommended value
    assert set(first.alpha) == {prefer.get("alpha", 0.5)}


def test_no_past_searches_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KDSearchError, match="no searches"):
        load_past([tmp_path])


def test_a_cell_distilled_from_two_teacher_models_stays_two_cells() -> None:
    """The shipped store holds rotten_tomatoes/xs from the from-scratch teacher and from MiniLM:
    two experiments, so two cells, each config's regret within its own."""
    from kdsearch.paths import DEFAULT_STORE

    past = load_past([DEFAULT_STORE / "reproduction", DEFAULT_STORE / "pretrained"])
    xs = {c for c in past.trials.cell.unique() if c.startswith("rotten_tomatoes/xs")}
    assert xs == {"rotten_tomatoes/xs (teacher s)", "rotten_tomatoes/xs (teacher minilm-l6)"}
    assert "rotten_tomatoes/minilm-l6:first2" in set(past.trials.cell)  # only one teacher: named as before
    # the whole store adds the breadth study's (MiniLM again, another sample): the teacher no longer
    # tells the three apart, so each is named by its searches
    every = {c for c in load_past([DEFAULT_STORE]).trials.cell.unique() if c.startswith("rotten_tomatoes/")}
    assert {"rotten_tomatoes/xs (reproduction)", "rotten_tomatoes/xs (pretrained)", "rotten_tomatoes/xs (breadth-rotten_tomatoes)",
            "rotten_tomatoes/minilm-l6:first2 (pretrained)", "rotten_tomatoes/minilm-l6:first2 (breadth-rotten_tomatoes)"} <= every


def test_a_latency_budget_keeps_the_students_that_serve_within_it(store: Path, capsys: pytest.CaptureFixture) -> None:
    past = load_past([store])
    assert set(past.costs.role) == {"teacher", "student"} and (past.costs.onnx_ms_p50 > 0).all()
    ms = float(past.costs[past.costs.role == "student"].onnx_ms_p50.max())
    kept, unmeasured = past.within(ms)
    assert len(kept.trials) == len(past.trials) and unmeasured == []  # every student here is the same xs, measured
    assert main(["recommend", "--data", "rotten_tomatoes", "--store", str(store), "--max-ms", str(ms * 2)]) == 0
    assert "students that serve in at most" in capsys.readouterr().out
    assert main(["recommend", "--data", "rotten_tomatoes", "--store", str(store), "--max-ms", "0.000001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-ms: no measured past student serves in 1e-06 ms (the fastest measured:" in err[0]


def test_a_latency_budget_names_the_students_no_search_measured(capsys: pytest.CaptureFixture) -> None:
    """The shipped reproduction store has no costs.parquet: its students are named as left out,
    never dropped in silence, and a latency is matched within the search that measured it."""
    from kdsearch.paths import DEFAULT_STORE

    past = load_past([DEFAULT_STORE])
    assert "search_id" in past.costs and set(past.costs.search_id) <= set(past.trials.search_id)
    ms = float(past.costs[past.costs.role == "student"].onnx_ms_p50.max())
    kept, unmeasured = past.within(ms)
    assert set(kept.trials.search_id) == set(past.costs.search_id)  # the pretrained searches alone
    assert any(u.startswith("rotten_tomatoes/xxxs (reproduction-") for u in unmeasured)
    assert main(["recommend", "--data", "rotten_tomatoes", "--max-ms", str(ms)]) == 0
    assert "left out, never measured: " in capsys.readouterr().out
    assert main(["recommend", "--data", "rotten_tomatoes", "--max-ms", "0.000001"]) == 2
    err = capsys.readouterr().err.strip()
    assert "was never measured" not in err and "were never measured (" in err and "a faster one may exist" in err


def test_configs_trained_as_one_tie_and_the_paper_s_choice_is_named() -> None:
    """Where every past cell had t_hs and t_ll on one checkpoint, their configs score alike to the
    last digit: the data cannot choose, so the recommender and the best-on-average name t_ll
    (the paper's), not whichever sorts first; a config that is really better still wins."""
    from kdsearch.recommend import DatasetFeatures, nearest
    from kdsearch.recommend.nearest import PastSearches

    def rows(dataset: str, scores: dict[tuple[str, str], float]) -> list[dict]:
        out = []
        for (teacher, loss), score in scores.items():
            for seed in (0, 1):
                knobs = {"teacher": teacher, "loss": loss, "alpha": 0.5, "tau_s": 1.0}
                out.append({"cell": f"{dataset}/xs", "dataset": dataset, "student": "xs", "stage": "1", "status": "ok",
                            "seed": seed, **knobs, "config_key": json.dumps(knobs, sort_keys=True),
                            "val_score": score + 0.001 * seed})
        return out

    tie = {("t_hs", "ce"): 0.8, ("t_ll", "ce"): 0.8, ("t_hs", "mse"): 0.7, ("t_ll", "mse"): 0.7}
    feats = {n: DatasetFeatures(n, "classification", 1000, 2, 20.0, 1.0) for n in ("a", "b", "c")}
    past = PastSearches(pd.DataFrame(rows("a", tie) + rows("b", tie)), feats, "val_score", "max")
    rec = recommend(feats["c"], past)
    assert rec.config["teacher"] == "t_ll" and rec.config["loss"] == "ce" and rec.regret == 0.0
    assert json.loads(nearest.best_on_average(regrets(past)))["teacher"] == "t_ll"
    # evidence beats the tie-break: t_hs ahead by a point in one cell
    past = PastSearches(pd.DataFrame(rows("a", {**tie, ("t_hs", "ce"): 0.81}) + rows("b", tie)), feats, "val_score", "max")
    assert recommend(feats["c"], past).config["teacher"] == "t_hs"



def test_a_feature_left_out_of_the_distance_counts_as_telling_nothing_apart() -> None:
    from kdsearch.recommend.features import DatasetFeatures
    from kdsearch.recommend.nearest import _distances

    def ds(name: str, labels: int, length: float) -> DatasetFeatures:
        return DatasetFeatures(name, "classification", 1000, labels, length, 0.9)

    target, past = ds("new", 2, 20.0), {"a": ds("a", 2, 400.0), "b": ds("b", 5, 22.0)}
    every = _distances(target, past, exclude_self=False)
    # train_size and task are equal everywhere: leaving either out changes no distance (so no weight)
    for same in ("train_size", "task"):
        assert _distances(target, past, False, [f for f in FEATURES if f != same]) == pytest.approx(every)
    # mean_length is what sets "a" apart: without it "a" is as near as can be, "b" keeps its labels' difference
    no_length = _distances(target, past, False, [f for f in FEATURES if f != "mean_length"])
    assert no_length["a"] == 0.0 < every["a"] and no_length["b"] == pytest.approx(every["b"], rel=0.2)
