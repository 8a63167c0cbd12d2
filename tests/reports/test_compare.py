"""compare and the paper's analysis, on Parquet from real greedy and full-grid searches."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kdsearch.cli import main
from kdsearch.reports import analysis
from kdsearch.results.store import without_copies
from kdsearch.results.summary import collapsed_configs, picks


@pytest.fixture(scope="module")
def searches(tiny_searches: dict[str, Path]) -> list[Path]:
    return [tiny_searches["greedy"], tiny_searches["grid"]]


def test_anytime_and_regret(searches: list[Path]) -> None:
    trials = analysis.load(searches)
    curves = analysis.anytime(trials, "val_score")
    reg = analysis.regret(curves).set_index("method")
    counts = trials[trials.stage != "baseline"].groupby("method").size()
    assert reg.loc["greedy", "trials"] == counts["greedy"] == 8 and reg.loc["grid", "trials"] == counts["grid"] == 16
    # greedy's configs are grid configs with the same paired seeds: same numbers, so its
    # best can only tie or trail the grid's
    assert reg.loc["grid", "regret_points"] == 0 and reg.loc["greedy", "regret_points"] >= 0
    assert curves.groupby("search_id")["best"].apply(lambda s: s.dropna().is_monotonic_increasing).all()


def test_knob_costs_and_recommended_rank(searches: list[Path]) -> None:
    trials = analysis.load(searches[1:])  # the full grid: every knob varied around the best
    costs = analysis.knob_costs(trials, "val_score")
    assert set(costs.knob) == {"teacher", "loss", "tau_s"} and (costs.cost_points >= 0).all()
    means = analysis.config_means(trials, "val_score")
    assert len(means) == 8 and (means.seeds == 2).all()
    # the tiny teacher's t_hs and t_ll are one checkpoint: half the configs' rows are copies, and a
    # rank counts each training once
    assert len(analysis.config_means(without_copies(trials), "val_score")) == 4
    rank = analysis.recommended_rank(trials, "val_score").iloc[0]
    assert 1 <= rank["rank"] <= rank["configs"] == 4 and rank["gap_points"] >= 0


def test_paired_difference_is_seed_by_seed(searches: list[Path]) -> None:
    trials = analysis.load(searches[1:])
    keys = analysis.config_means(trials, "val_score").config_key.tolist()
    same = analysis.paired_difference(trials, "rotten_tomatoes/xs", keys[0], keys[0], "val_score")
    assert same["mean"] == 0 and same["within_noise"] and same["seeds"] == 2
    # a clear, consistent gap is called a difference once the sign-flip test can reach 0.05 (6 seeds), not before
    a, b = [0.80, 0.81, 0.79, 0.80, 0.82, 0.81], [0.70, 0.71, 0.70, 0.69, 0.72, 0.70]
    for n, real in ((5, False), (6, True)):
        rows = pd.DataFrame({"cell": "c", "status": "ok", "seed": list(range(n)) * 2, "config_key": ["a"] * n + ["b"] * n,
                             "m": a[:n] + b[:n]})
        d = analysis.paired_difference(rows, "c", "a", "b", "m")
        assert d["mean"] == pytest.approx(0.10, abs=0.01) and d["low"] > 0 and bool(d["within_noise"]) == (not real)
        assert d["p"] == pytest.approx(2 / 2**n)


def test_compare_report_rebuilds_from_parquet(searches: list[Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["compare", *map(str, searches), "--out", str(out)]) == 0
    first = (out / "report.md").read_text()
    for section in ("## Methods", "## Best against runner-up", "## Cost of a sub-optimal choice", "## The paper's recommendation"):
        assert section in first
    assert "nothing: 2 seeds can never reach 0.05; 6 can" in first  # two seeds: no verdict either way
    assert (out / "anytime_rotten_tomatoes_xs.png").stat().st_size > 1000 and (out / "fidelity_vs_accuracy.png").is_file()
    assert main(["compare", *map(str, searches), "--out", str(out)]) == 2  # a report is there already
    assert "pass --force to replace it" in capsys.readouterr().err
    # a replaced report keeps no plot of the old one that it does not draw; others' files stay
    (out / "anytime_gone_xs.png").write_bytes(b"old")
    (out / "mine.png").write_bytes(b"a user's")
    assert main(["compare", *map(str, searches), "--out", str(out), "--force"]) == 0
    assert (out / "report.md").read_text() == first  # Parquet in, the same report out
    assert not (out / "anytime_gone_xs.png").exists() and (out / "mine.png").read_bytes() == b"a user's"
    assert (out / "anytime_rotten_tomatoes_xs.png").is_file()
    assert "greedy" in capsys.readouterr().out
    assert "Not finished" not in first


def test_compare_names_a_search_that_has_not_finished(searches: list[Path], tmp_path: Path) -> None:
    import json
    import shutil

    running = tmp_path / searches[0].name
    shutil.copytree(searches[0], running, ignore=shutil.ignore_patterns("tune"))
    meta = json.loads((running / "search.json").read_text())
    del meta["finished"]  # as a search still running (or stopped) has it
    (running / "search.json").write_text(json.dumps(meta))
    assert main(["compare", str(running), str(searches[1]), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"Not finished (running or stopped): {running.name}; what follows reads their rows so far" in text


def test_kd_gain_is_best_config_against_the_baseline_seed_by_seed(searches: list[Path]) -> None:
    trials = analysis.load(searches[1:])
    table = analysis.kd_gain(trials, "val_score")
    assert list(table.cell) == ["rotten_tomatoes/xs"]
    ok = trials[trials.status == "ok"]
    base = ok[ok.stage == "baseline"].groupby("seed").val_score.mean()
    means = analysis.config_means(trials, "val_score")
    named = picks(trials, "val_score").get("rotten_tomatoes/xs")
    # the tiny fixture's students may all predict one class, or not (a 1-epoch xs on 384 examples sits
    # at the edge): the row is checked for whichever the rows say
    best_key = named.best_key if named is not None else means.loc[means["mean"].idxmax(), "config_key"]
    kd = ok[ok.config_key == best_key].groupby("seed").val_score.mean()
    row = table.iloc[0]
    assert row["gain on its selection seeds (optimistic)"] == pytest.approx(100 * (kd - base).mean())
    assert row["no KD"].startswith(f"{base.mean():.4f}")
    kd_configs = {("rotten_tomatoes/xs", k) for k in ok[ok.stage != "baseline"].config_key}
    if named is None:  # no best is named, and the row says why
        assert kd_configs <= collapsed_configs(trials, "val_score")
        assert row["vs no KD: verdict"].startswith("every config collapsed")
    else:  # a best that did not collapse, and no confirmation seeds in this search
        assert ("rotten_tomatoes/xs", best_key) not in collapsed_configs(trials, "val_score")
        assert row["vs no KD: verdict"] == "not confirmed on fresh seeds"


def test_rows_from_before_a_knob_existed_count_as_its_default(searches: list[Path]) -> None:
    """A search stored before DIST/logit_std/annealing holds nothing for them; rows a later
    `kdsearch confirm` appends hold the defaults. Neither is a later objective, and the
    paper's reference is still found among the rows that hold nothing."""
    trials = analysis.load(searches[1:])
    for k in analysis.LATER_DEFAULTS:
        trials[k] = None
    first = trials.index[:2]
    for k, v in analysis.LATER_DEFAULTS.items():
        trials.loc[first, k] = v  # the appended rows
    assert not analysis.uses_later_objectives(trials)
    trials.loc[first, "logit_std"] = True
    assert analysis.uses_later_objectives(trials)
    trials.loc[first, "logit_std"] = False
    assert not analysis.against_reference(trials, "val_score").empty


def test_the_fidelity_table_shows_the_knobs_that_vary() -> None:
    """A knob at one value in every config is named once above the table, not repeated in a
    column; a later knob's missing value (a row from before it existed) reads as its default."""
    from kdsearch.reports.compare import fidelity_section

    means = pd.DataFrame({"cell": "d/s", "config_key": ["a", "b", "c"], "loss": ["ce", "mse", "ce"],
                          "alpha": [0.5, 0.5, 1.0], "dist_beta": [None, 1.0, None], "logit_std": [None, None, True],
                          "mean": [0.8, 0.7, 0.75], "std": 0.01, "seeds": 3})
    text = fidelity_section(means)
    head, _, table = text.partition("\n\n")
    assert head == "Every config here has dist_beta = 1.0000."
    assert table.splitlines()[0] == "| cell | loss | alpha | logit_std | mean | std | seeds |"
    assert table.splitlines()[2] == "| d/s | ce | 0.5000 | False | 0.8000 | 0.0100 | 3 |"
