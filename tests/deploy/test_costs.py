"""Costs per architecture: produced, positive, recorded with the machine, cached, and read back
by `results`, `compare` and `export --pareto` without measuring again."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kdsearch.cli import main
from kdsearch.data.prepare import PreparedData
from kdsearch.deploy.costs import measure, median_length
from kdsearch.models import build_for
from kdsearch.reports.tradeoff import keeps, pareto, table


def test_every_search_records_what_its_architectures_cost(tiny_searches: dict[str, Path]) -> None:
    costs = pd.read_parquet(tiny_searches["grid"] / "costs.parquet")
    assert set(zip(costs.role, costs.model)) == {("teacher", "xs"), ("student", "xs")}
    for col in ("params", "params_embedding", "weights_mb", "torch_ms_p50", "torch_ms_p95", "torch_per_s", "onnx_ms_p50",
                "onnx_ms_p95", "onnx_per_s", "int8_ms_p50", "int8_per_s", "onnx_mb", "int8_mb"):
        assert (costs[col] > 0).all(), col
    assert (costs.onnx_ms_p95 >= costs.onnx_ms_p50).all() and (costs.runs >= 30).all()
    assert (costs.params_embedding + costs.params_non_embedding == costs.params).all()
    assert costs.cpu.notna().all() and (costs.threads >= 1).all() and costs.torch.notna().all() and costs.onnxruntime.notna().all()
    teacher = costs[costs.role == "teacher"].iloc[0]
    meta = json.loads((tiny_searches["grid"] / "search.json").read_text())
    assert teacher.test_score == meta["teachers"]["rotten_tomatoes"]["t_hs"]["test_score"]


def test_a_measurement_is_cached_per_architecture_and_machine(rt_data: PreparedData, tmp_path: Path) -> None:
    first = measure(build_for("xxs", rt_data), rt_data, 1, tmp_path, log=lambda s: None)
    assert first["seq_len"] == median_length(rt_data) and first["threads"] == 1
    again = measure(build_for("xxs", rt_data), rt_data, 1, tmp_path, log=lambda s: pytest.fail("measured again"))
    assert again == first and len(list(tmp_path.glob("*.json"))) == 1
    other = measure(build_for("xxxs", rt_data), rt_data, 1, tmp_path, log=lambda s: None)  # another architecture
    assert other["params"] < first["params"] and len(list(tmp_path.glob("*.json"))) == 2


def test_the_pareto_front() -> None:
    #           teacher  big-KD  big-noKD  small  dominated
    score = [0.90, 0.85, 0.80, 0.70, 0.60]
    latency = [10.0, 4.0, 4.0, 1.0, 2.0]
    assert pareto(score, latency) == [True, True, False, True, False]
    assert pareto([0.5, float("nan")], [1.0, 0.5]) == [True, False]


def test_the_tradeoff_table_and_its_line() -> None:
    trials = pd.DataFrame({
        "status": "ok", "dataset": "d", "student": ["s"] * 4, "stage": ["0", "0", "baseline", "baseline"],
        "config_key": ["k", "k", "b", "b"], "seed": [0, 1, 0, 1], "val_score": [0.8, 0.82, 0.7, 0.72],
        "test_score": [0.78, 0.80, 0.69, 0.71]})
    costs = pd.DataFrame({"dataset": "d", "role": ["teacher", "student"], "model": ["t", "s"], "params": [30e6, 10e6],
                          "embedding_share": [0.4, 0.75], "onnx_ms_p50": [6.0, 2.0], "test_score": [0.82, None]})
    t = table(trials, costs)
    assert list(t.config) == ["teacher", "KD", "no KD"]
    kd = t[t.config == "KD"].iloc[0]
    assert kd.test == pytest.approx(0.79) and kd.seeds == 2 and kd.test_std == pytest.approx(0.01414, abs=1e-4)
    assert list(t.on_front) == [True, True, False]
    assert keeps(t) == ["d: s keeps 96% of the teacher's test score (0.7900 against 0.8200) at 3.0x lower latency and 3.0x "
                        "fewer parameters (75% of its parameters are embeddings)"]
    # a cell that two searches ran as other experiments (results.experiments names it so): a row each
    two = pd.concat([trials.assign(cell="d/s (pretrained)"), trials.assign(cell="d/s (breadth)", test_score=trials.test_score - 0.1)])
    kd = table(two, costs).query("config == 'KD'").set_index("model")["test"]
    assert kd.to_dict() == pytest.approx({"s (breadth)": 0.69, "s (pretrained)": 0.79})
    assert len(keeps(table(two, costs))) == 2 and all(" of the teacher's test score (" in x for x in keeps(table(two, costs)))
    # with each search's own costs, each experiment is read against its own teacher (the breadth
    # one's scores 0.72) and its own measurements (its student at length 64 is slower)
    two["search_id"] = ["p"] * 4 + ["b"] * 4
    by_search = pd.concat([costs.assign(search_id="p"),
                           costs.assign(search_id="b", test_score=[0.72, None], onnx_ms_p50=[6.0, 3.0])], ignore_index=True)
    t = table(two, by_search)
    teachers = t[t.config == "teacher"].set_index("model")
    assert teachers.test.to_dict() == pytest.approx({"t (breadth)": 0.72, "t (pretrained)": 0.82})
    assert t[t.config != "teacher"].set_index(["model", "config"]).onnx_ms_p50.to_dict() == {
        ("s (breadth)", "KD"): 3.0, ("s (breadth)", "no KD"): 3.0, ("s (pretrained)", "KD"): 2.0, ("s (pretrained)", "no KD"): 2.0}
    assert keeps(t) == [
        ("d: s (breadth) keeps 96% of the teacher's test score (0.6900 against 0.7200) at 2.0x lower latency and 3.0x fewer "
         "parameters (75% of its parameters are embeddings)"),
        ("d: s (pretrained) keeps 96% of the teacher's test score (0.7900 against 0.8200) at 3.0x lower latency and 3.0x "
         "fewer parameters (75% of its parameters are embeddings)")]
    # one experiment read from several searches: the newest costs, one teacher row, as before
    assert list(table(trials.assign(search_id=["p", "p", "b", "b"]), by_search).model) == ["t", "s", "s"]
    # an experiment whose searches measured nothing: no teacher of another experiment stands in for its own
    t = table(two, by_search[by_search.search_id == "p"])
    assert list(t[t.config == "teacher"].model) == ["t (pretrained)"] and t.set_index(["model", "config"]).loc[
        ("s (breadth)", "KD"), "teacher"] == ""
    assert keeps(t)[0] == ("d: s (breadth): its experiment's teacher was never measured (`kdsearch costs`), so what it "
                           "keeps of it is not known here")


def test_a_collapsed_student_is_listed_but_never_on_the_front(tmp_path: Path) -> None:
    """The fastest student predicting one class on every seed would sit on the front; it must not
    (export --pareto would ship it), and its line says there is nothing to ship."""
    from kdsearch.reports.tradeoff import plot

    trials = pd.DataFrame({
        "status": "ok", "dataset": "d", "student": ["s", "s", "c", "c"], "stage": "0", "config_key": "k",
        "seed": [0, 1, 0, 1], "val_score": [0.8, 0.82, 0.5, 0.5], "test_score": [0.78, 0.80, 0.5, 0.5],
        "val_collapsed": [False, False, True, True]})
    costs = pd.DataFrame({"dataset": "d", "role": ["teacher", "student", "student"], "model": ["t", "s", "c"],
                          "params": [30e6, 10e6, 1e6], "embedding_share": [0.4, 0.75, 0.9], "onnx_ms_p50": [6.0, 2.0, 0.1],
                          "test_score": [0.82, None, None]})
    t = table(trials, costs).set_index("model")
    assert t.loc["c", "collapsed"] and not t.loc["c", "on_front"] and t.loc["s", "on_front"] and t.loc["t", "on_front"]
    assert "d: c collapsed to one class on every seed (test 0.5000): nothing to ship" in keeps(t.reset_index())
    assert plot(t.reset_index(), tmp_path) == ["tradeoff_d.png"]


def test_results_compare_and_the_front_read_the_costs(tiny_searches: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = tiny_searches["grid"]
    assert main(["results", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "what each student keeps and costs" in out and "Latency: one example at a time" in out
    assert main(["compare", str(folder), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## What a student keeps and what it costs" in report and "tradeoff_rotten_tomatoes.png" in report
    assert (tmp_path / "report" / "tradeoff_rotten_tomatoes.png").stat().st_size > 1000
    # the tiny search's teacher has its student's architecture, so which of the two is on the front
    # would be a toss of latency noise and of the tiny teacher's luck (seen in CI): in a copy the
    # teacher is the slower, as any real teacher is
    import shutil

    copy = tmp_path / "searches" / "costly-teacher"
    shutil.copytree(folder, copy)
    costs = pd.read_parquet(copy / "costs.parquet")
    teacher = costs.role == "teacher"
    slower = [c for c in costs.columns if "_ms_" in c]
    costs.loc[teacher, slower] = costs.loc[~teacher, slower].max().to_numpy() * 10
    costs.to_parquet(copy / "costs.parquet")
    folder, front = copy, tmp_path / "front"
    served = table(pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "costs.parquet"))
    assert not served[served.config == "teacher"].empty
    if served[served.config != "teacher"].collapsed.all():  # tiny students that collapse: off the front, unless --force
        assert main(["export", str(folder), "--pareto", "--out", str(front), "--onnx"]) == 2
        assert "collapsed to one class on every seed" in capsys.readouterr().err and not front.exists()
    assert main(["export", str(folder), "--pareto", "--out", str(front), "--force", "--onnx"]) == 0
    listed = (front / "front.md").read_text()
    students = [p for p in (front / "rotten_tomatoes").iterdir()]
    assert students and all((p / "model.onnx").is_file() and (p / "kdsearch.yaml").is_file() for p in students)
    assert all(f"`rotten_tomatoes/{p.name}`" in listed for p in students)


def test_costs_of_a_search_measured_later(tiny_searches: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    folder = tmp_path / "searches" / "copy"  # its storage is tmp_path/searches: the front goes beside it
    shutil.copytree(tiny_searches["greedy"], folder)
    (folder / "costs.parquet").unlink()
    code = main(["export", str(folder), "--pareto", "--out", str(tmp_path / "front")])
    assert code == 2 and "run `kdsearch costs" in capsys.readouterr().err
    assert main(["costs", str(folder), "--threads", "1"]) == 0
    costs = pd.read_parquet(folder / "costs.parquet")
    assert (costs.threads == 1).all() and (costs.onnx_ms_p50 > 0).all() and costs.test_score.notna().any()
