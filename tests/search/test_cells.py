"""Cells, paired seeds and the baseline around a config searcher, without Ray."""

from __future__ import annotations

from ray.tune.search import Searcher

from kdsearch.search.cells import CellSearcher
from kdsearch.search.greedy import GreedySearcher
from kdsearch.search.space import Space
from kdsearch.spec import DistillSpec, OptimSpec


def greedy(space: dict) -> GreedySearcher:
    return GreedySearcher(Space(space, DistillSpec(), OptimSpec()))


def step(s: CellSearcher) -> list[tuple[str, dict]]:
    out = []
    while True:
        tid = f"t{s.n_groups}-{len(s.live)}-{len(out)}-{id(out)}"
        c = s.suggest(tid)
        if c is None or c == Searcher.FINISHED:
            return out
        out.append((tid, c))


def test_each_config_runs_once_per_seed_and_the_mean_goes_to_greedy() -> None:
    inner = greedy({"loss": ["ce", "mse"]})
    s = CellSearcher({"rt/xs": inner}, seeds=[0, 1], metric="val_score", baseline={"alpha": 0.0})
    first = step(s)
    # baseline x 2 seeds, then stage 0 (ce, mse) x 2 seeds
    assert [(c.get("stage"), c.get("loss"), c["seed"]) for _, c in first] == [
        ("baseline", None, 0), ("baseline", None, 1), (0, "ce", 0), (0, "ce", 1), (0, "mse", 0), (0, "mse", 1),
    ]
    scores = {("ce", 0): 0.80, ("ce", 1): 0.70, ("mse", 0): 0.74, ("mse", 1): 0.74}
    for tid, c in first:
        s.on_trial_complete(tid, {"val_score": scores.get((c.get("loss"), c["seed"]), 0.5)})
    # ce mean 0.75 beats mse 0.74 although mse wins seed 1
    assert inner.best["loss"] == "ce"
    assert s.suggest("last") == Searcher.FINISHED


def test_one_failed_seed_fails_the_config() -> None:
    inner = greedy({"loss": ["ce", "mse"]})
    s = CellSearcher({"c": inner}, seeds=[0, 1], metric="val_score")
    for tid, c in step(s):
        failed = c["loss"] == "ce" and c["seed"] == 1
        s.on_trial_complete(tid, None if failed else {"val_score": 0.9 if c["loss"] == "ce" else 0.5}, error=failed)
    assert inner.best["loss"] == "mse"


def test_cells_interleave() -> None:
    s = CellSearcher({"a": greedy({"loss": ["ce", "mse"]}), "b": greedy({"loss": ["ce", "mse"]})}, seeds=[0], metric="m")
    cells = [c["cell"] for _, c in step(s)]
    assert cells == ["a", "b", "a", "b"]


class Repeater(Searcher):
    """Suggests the same config forever, like a sampler in an exhausted space."""

    def __init__(self) -> None:
        super().__init__(metric="score", mode="max")
        self.told: list[float] = []

    def suggest(self, trial_id: str) -> dict:
        return {"loss": "ce"}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.told.append(result["score"])


def test_a_known_config_is_answered_not_rerun() -> None:
    inner = Repeater()
    s = CellSearcher({"c": inner}, seeds=[0], metric="m", budget=5, max_redundant=4)
    (tid, c), = step(s)
    s.on_trial_complete(tid, {"m": 0.6})
    assert step(s) == []  # every further ask repeats a known config
    assert s.suggest("x") == Searcher.FINISHED
    assert inner.told[0] == 0.6 and len(inner.told) >= 2
