"""The kd-loop benchmark runs all three variants and writes the JSON the issue names."""

import argparse
import json
from pathlib import Path

from kdsearch.bench import kd_loop


def test_kd_loop_writes_ratios(tmp_path: Path) -> None:
    out = tmp_path / "kd_loop.json"
    args = argparse.Namespace(out=str(out), student="xs", teacher="s", examples=96, batch_size=32, max_length=32)
    kd_loop.main(args)
    result = json.loads(out.read_text())
    eps = result["examples_per_s"]
    assert set(eps) == {"cached", "online_teacher", "naive_hf_trainer"} and all(v > 0 for v in eps.values())
    assert result["speedup_vs_naive"] == eps["cached"] / eps["naive_hf_trainer"]
    assert result["speedup_vs_online_teacher"] == eps["cached"] / eps["online_teacher"]
    assert 0 < result["peak_fraction"] < 1.5 and result["peak_gflops"] > 0


def test_committed_fused_bench_has_its_keys() -> None:
    """results/bench/fused.json: what `kdsearch bench fused` measured here, side by side."""
    result = json.loads((Path(__file__).resolve().parents[1] / "results/bench/fused.json").read_text())
    assert {"fused_vs_single", "fused_vs_hf_peer", "gpu_util_mean", "device", "auto_fuses_on_cpu"} <= set(result)
    grid = result["grid"]
    for way in ("fused", "single", "hf_peer"):
        assert grid[way]["configs"] == 24 and grid[way]["wall_s"] > 0
    assert result["fused_vs_single"] == grid["fused"]["configs_per_hour"] / grid["single"]["configs_per_hour"]
    # auto keeps fusion off on CPU, which is what the CPU figure says
    assert result["device"] != "cpu" or (not result["auto_fuses_on_cpu"] and result["fused_vs_single"] < 0.9)
    assert [r["K"] for r in result["member_steps_per_s"]] == [1, 1, 4, 16, 64]


def test_deploy_bench_writes_its_keys_side_by_side(tmp_path: Path) -> None:
    """`kdsearch bench deploy` on the pretrained space with a tiny fake MiniLM (nothing from a hub):
    the keys the issue names, every figure produced and positive, the ratios from them."""
    from kdsearch.bench import deploy
    from tests.test_preflight import fetched

    wd = fetched(tmp_path)
    out = tmp_path / "deploy.json"
    args = argparse.Namespace(out=str(out), spec=None, threads=1, set=[
        f"workdir={wd}", "search.datasets=[{dataset: rotten_tomatoes, max_train_examples: 128}]", "data.max_eval_examples=64",
        "teachers.train.epochs=1", "student.train.epochs=1"])
    deploy.main(args)
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"minilm-l6", "minilm-l6:first1", "minilm-l6:first2", "xs"}
    for m in result["models"].values():
        assert m["params"] > 0 and m["torch_ms_p50"] > 0 and m["onnx_ms_p50"] > 0 and m["int8_ms_p50"] > 0
        assert m["int8_test_delta_points"] == m["int8_test_delta_points"]  # a number, maybe 0
    t, f2 = result["models"]["minilm-l6"], result["models"]["minilm-l6:first2"]
    assert result["onnx_vs_torch"] == t["torch_ms_p50"] / t["onnx_ms_p50"]
    assert result["teacher_vs_first2"] == t["onnx_ms_p50"] / f2["onnx_ms_p50"]
    assert result["teacher_torch_vs_first2_int8"] == t["torch_ms_p50"] / f2["int8_ms_p50"]
    assert result["setup"]["machine"]["threads"] == 1 and result["setup"]["seq_len"] > 0


def test_committed_deploy_bench_has_its_keys() -> None:
    result = json.loads((Path(__file__).resolve().parents[1] / "results/bench/deploy.json").read_text())
    assert {"onnx_vs_torch", "teacher_vs_first2", "teacher_torch_vs_first2_int8", "targets", "models", "setup"} <= set(result)
    for m in result["models"].values():
        assert {"params", "torch_ms_p50", "onnx_ms_p50", "int8_ms_p50", "int8_test_delta_points"} <= set(m)
    assert result["setup"]["machine"]["cpu"] and result["setup"]["machine"]["threads"] >= 1


def test_the_fused_bench_times_searches_without_serving_costs(tmp_path: Path) -> None:
    """Its three grids are timed side by side: none may pay the once-per-machine cost measurement."""
    import argparse

    from kdsearch.bench.fused import _spec_overrides
    from kdsearch.paths import SPACES
    from kdsearch.spec import load_spec

    args = argparse.Namespace(examples=64, max_length=16, batch_size=8, set=[])
    spec = load_spec(SPACES / "quick.yaml", _spec_overrides(args, tmp_path / "s", tmp_path / "wd"))
    assert spec.search.costs is False and spec.search.method == "grid"


def test_the_fused_bench_keeps_its_member_rates_beside_where_the_result_goes() -> None:
    """The rates are written first (a lent GPU's time may end in the grids) beside the result's file,
    which replaces them: fused_gpu.json on a GPU, fused.json on CPU, or --out."""
    import argparse

    from kdsearch.bench.fused import _out, _partial

    default = argparse.Namespace(out=None)
    assert _out(default, "cuda") == "results/bench/fused_gpu.json" and _out(default, "cpu") == "results/bench/fused.json"
    assert _out(argparse.Namespace(out="/x/f.json"), "cuda") == "/x/f.json"
    assert _partial(_out(default, "cuda")) == Path("results/bench/fused_gpu.partial.json")


def test_replay_bench_runs_over_the_committed_results(tmp_path: Path) -> None:
    """Every committed full grid replays; the objectives' arms (search.configs) are listed as left out."""
    from kdsearch.cli import main

    root = Path(__file__).resolve().parents[1] / "results"
    out = tmp_path / "replay.json"
    assert main(["bench", "replay", "--replays", "2", "--methods", "greedy", "--results", str(root), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    objectives = {p.name for p in (root / "objectives").glob("objectives-*")}
    assert {t["search"] for t in result["tables"]} and not {t["search"] for t in result["tables"]} & objectives
    assert all(any(line.startswith(name) for line in result["left_out"]) for name in objectives)


def test_replay_bench_of_auto_alone_replays_what_it_picks_raced(tmp_path: Path) -> None:
    """`--methods auto`: each table replays the method auto picks there, raced as auto runs it, and
    nothing else (it crashed on an empty list before)."""
    from kdsearch.cli import main

    root = Path(__file__).resolve().parents[1] / "results"
    out = tmp_path / "replay.json"
    assert main(["bench", "replay", "--replays", "2", "--methods", "auto", "--results", str(root), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    picks = {f"{t['search']} {t['cell']}": t["auto"] for t in result["tables"]}
    assert picks and isinstance(result["auto_meets_target"], bool)
    for table, pick in picks.items():
        rows = [r for r in result["per_table"] if r["table"] == table]
        assert {r["method"] for r in rows} == {"auto", pick}
        # the pick's rows are its raced replays, the very rows auto's are
        for b in result["budgets"]:
            same = [{k: v for k, v in r.items() if k != "method"} for r in rows if r["budget"] == b]
            assert len(same) == 2 and same[0] == same[1]


def test_race_bench_replays_both_policies_at_each_budget(tmp_path: Path) -> None:
    """Whole rounds and partial rounds side by side at each race budget, over the committed truth grids."""
    from kdsearch.cli import main

    root = Path(__file__).resolve().parents[1] / "results"
    out = tmp_path / "race.json"
    assert main(["bench", "race", "--replays", "2", "--results", str(root), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {(r["policy"], r["race_budget"]) for r in result["summary"]} == {
        (p, b) for p in ("whole rounds", "partial rounds") for b in (0.1, 0.28, 0.5)}
    assert all(r["replays"] == 2 * len(result["tables"]) for r in result["summary"]) and result["tables"]
    # a partial round spends what a whole one leaves: never less
    spent = {(r["policy"], r["race_budget"]): r["spent"] for r in result["summary"]}
    assert all(spent[("partial rounds", b)] >= spent[("whole rounds", b)] for b in (0.1, 0.28, 0.5))
    assert (tmp_path / "race.png").stat().st_size > 1000
