"""The greedy Searcher driven by hand, without Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ray.tune.search import Searcher

from kdsearch.search.greedy import GreedySearcher
from kdsearch.search.space import Space
from kdsearch.spec import DistillSpec, OptimSpec

PAPER = {"teacher": ["t_hs", "t_ll"], "loss": ["ce", "mse"], "alpha": [1.0, 0.5], "tau_t": [1.0, 2.0, 4.0], "tau_s": [1.0, "same"]}
DEFAULTS = DistillSpec(teacher="t_ll", loss="ce", alpha=0.5, tau_t=1.0, tau_s=1.0)


def searcher(**kw) -> GreedySearcher:
    return GreedySearcher(Space(PAPER, DEFAULTS, OptimSpec()), **kw)


def drain(s: GreedySearcher, prefix: str = "t") -> list[dict]:
    """Every suggestion available now (a stage's worth)."""
    out = []
    while True:
        c = s.suggest(f"{prefix}{len(s.pending)}-{len(s.results)}")
        if c is None or c == Searcher.FINISHED:
            return out
        out.append(c)


def run(s: GreedySearcher, score: Callable[[dict], float]) -> list[list[dict]]:
    stages = []
    while True:
        ids, batch = [], []
        while True:
            tid = f"trial{len(s.results) + len(s.pending)}"
            c = s.suggest(tid)
            if c is None or c == Searcher.FINISHED:
                break
            ids.append(tid)
            batch.append(c)
        if not batch:
            return stages
        stages.append(batch)
        for tid, c in zip(ids, batch):
            value = score(c)
            s.on_trial_complete(tid, None if value is None else {"score": value}, error=value is None)


def test_stages_follow_the_spec_order_with_winners_fixed() -> None:
    # t_hs, ce, alpha 1.0, tau_t 4, tau_s same are each better by a margin (with mse, tau_s same would
    # train as tau_t 1: see the next test)
    gains = {"teacher": {"t_hs": 0.01}, "loss": {"ce": 0.02}, "alpha": {1.0: 0.03}, "tau_t": {4.0: 0.04}, "tau_s": {"same": 0.05}}

    def score(c: dict) -> float:
        return 0.7 + sum(g.get(c[k], 0.0) for k, g in gains.items())

    s = searcher()
    stages = run(s, score)
    assert [sorted(str(c[k]) for c in st) for st, k in zip(stages, PAPER)] == [
        ["t_hs", "t_ll"],  # stage 0: both teachers, the rest at defaults
        ["mse"],  # stage 1: ce with t_hs ran in stage 0, reused
        ["1.0"],
        ["2.0", "4.0"],
        ["same"],
    ]
    assert stages[1][0]["teacher"] == "t_hs" and stages[3][0]["alpha"] == 1.0
    assert [c["stage"] for st in stages for c in st] == [0, 0, 1, 2, 3, 3, 4]
    assert s.best == {"teacher": "t_hs", "loss": "ce", "alpha": 1.0, "tau_t": 4.0, "tau_s": "same"}
    assert len(s.results) == 7  # greedy: 7 configs where the full grid has 32


def test_mse_with_tau_s_same_is_not_rerun_at_another_tau_t() -> None:
    """MSE with tau_s = tau_t trains as at tau_t 1 (knobs.SAME_TRAINING): greedy's tau_s stage
    finds it already run (the alpha stage ran it at tau_t 1) and asks nothing new."""
    gains = {"loss": {"mse": 0.02}, "tau_t": {4.0: 0.04}}
    s = searcher()
    stages = run(s, lambda c: 0.7 + sum(g.get(c[k], 0.0) for k, g in gains.items()))
    assert len(stages) == 4 and all(c["tau_s"] == 1.0 for st in stages for c in st)
    assert s.best == {"teacher": "t_ll", "loss": "mse", "alpha": 0.5, "tau_t": 4.0, "tau_s": 1.0}
    (dup,) = s.duplicates  # recorded as asked: the runner writes its rows, a copy of the run's
    assert dup["duplicate"]["tau_s"] == "same" and dup["duplicate"]["tau_t"] == 4.0
    assert dup["config"]["tau_s"] == 1.0 and dup["config"]["tau_t"] == 1.0 and dup["config"]["loss"] == "mse"


def test_tau_s_same_at_tau_t_1_is_not_rerun() -> None:
    s = searcher()
    stages = run(s, lambda c: 0.5)  # all equal: ties go to the defaults
    assert s.best == {"teacher": "t_ll", "loss": "ce", "alpha": 0.5, "tau_t": 1.0, "tau_s": 1.0}
    assert len(stages) == 4  # the tau_s stage has nothing new: same == 1 at tau_t = 1
    assert len(s.results) == 6


def test_ties_go_to_the_default_then_the_earlier_choice() -> None:
    s = GreedySearcher(Space({"tau_t": [1.0, 2.0, 4.0]}, DistillSpec(tau_t=2.0), OptimSpec()))
    run(s, lambda c: 0.5)
    assert s.best["tau_t"] == 2.0
    s = GreedySearcher(Space({"tau_t": [1.0, 2.0, 4.0]}, DistillSpec(tau_t=2.0), OptimSpec()))
    run(s, lambda c: 0.6 if c["tau_t"] != 2.0 else 0.5)
    assert s.best["tau_t"] == 1.0


def test_failed_config_counts_as_worst() -> None:
    s = GreedySearcher(Space({"loss": ["ce", "mse"]}, DistillSpec(loss="mse"), OptimSpec()))
    run(s, lambda c: None if c["loss"] == "mse" else 0.1)
    assert s.best["loss"] == "ce"


def test_min_mode() -> None:
    s = GreedySearcher(Space({"loss": ["ce", "mse"]}, DistillSpec(), OptimSpec()), mode="min")
    run(s, lambda c: 0.2 if c["loss"] == "mse" else 0.3)
    assert s.best["loss"] == "mse"


def test_stage_waits_for_all_of_its_trials() -> None:
    s = searcher()
    assert s.suggest("a")["teacher"] == "t_hs"
    assert s.suggest("b")["teacher"] == "t_ll"
    assert s.suggest("c") is None  # stage 0 still running
    s.on_trial_complete("a", {"score": 0.5})
    assert s.suggest("c") is None
    s.on_trial_complete("b", {"score": 0.4})
    c = s.suggest("c")
    assert c["stage"] == 1 and c["teacher"] == "t_hs" and c["loss"] == "mse"


def test_save_and_restore_mid_stage(tmp_path: Path) -> None:
    s = searcher()
    s.suggest("a")
    s.suggest("b")
    s.on_trial_complete("a", {"score": 0.9})
    s.save(str(tmp_path / "greedy.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "greedy.pkl"))
    assert restored.suggest("c") is None  # b is still pending after the restore
    restored.on_trial_complete("b", {"score": 0.1})
    nxt = restored.suggest("c")
    assert nxt["teacher"] == "t_hs" and nxt["stage"] == 1


def test_max_configs_caps_the_search() -> None:
    s = searcher(max_configs=3)
    stages = run(s, lambda c: 0.5)
    assert sum(len(st) for st in stages) == 3


def test_quick_yaml_stages() -> None:
    """The demo's own spec: its space, its defaults, greedy's order of configs."""
    from kdsearch.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "search_spaces" / "quick.yaml")
    s = GreedySearcher(Space(spec.search.space, spec.distill, spec.student.train))
    assert s.names == ["teacher", "loss", "alpha", "tau_t", "tau_s"]
    stages = run(s, lambda c: 0.5 + 0.01 * (c["tau_t"] == 4.0))
    first = stages[0]
    assert [c["teacher"] for c in first] == ["t_hs", "t_ll"]
    assert all(c["loss"] == "ce" and c["alpha"] == 0.5 and c["tau_t"] == 1.0 and c["tau_s"] == 1.0 for c in first)
    assert [[str(c[k]) for c in st] for st, k in zip(stages[1:], s.names[1:])] == [["mse"], ["1.0"], ["2.0", "4.0"], ["same"]]
    assert s.best["tau_t"] == 4.0 and len(s.results) == 7
