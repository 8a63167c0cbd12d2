"""Replays of each method's own searcher over hand-made grid tables: the grid and halving with a
full budget reach the known best; revisits find an interaction one greedy pass misses."""

from __future__ import annotations

import itertools
import math

import pytest

from kdsearch.search.methods import METHODS, choose, grid_size, rungs
from kdsearch.search.replay import GridTable, regrets, replay, summary
from kdsearch.search.space import Space, teacher_aliases
from kdsearch.spec import DistillSpec, OptimSpec

SPACE = {"loss": ["ce", "mse"], "alpha": [0.5, 1.0], "tau_t": [1.0, 4.0]}


def table(score, epochs: int = 3, seeds: tuple[int, ...] = (0, 1, 2)) -> GridTable:
    """A grid whose config scores ``score(config)`` (+ a little per seed), rising to it over the epochs."""
    space = Space(SPACE, DistillSpec(), OptimSpec(epochs=epochs))
    scores = {}
    for combo in itertools.product(*SPACE.values()):
        config = dict(zip(SPACE, combo))
        final = score(config)
        scores[space.key(config)] = {s: [final * (e + 1) / epochs + 0.001 * s for e in range(epochs)] for s in seeds}
    return GridTable("d/s", space, list(seeds), epochs, scores)


def interacting(c: dict) -> float:
    """alpha = 1 pays only with tau_t = 4 (as on BBC News xs with the pretrained teacher), and
    greedy's order tries alpha before tau_t; mse is a little worse."""
    if c["alpha"] == 1.0:
        return 0.80 if c["tau_t"] == 4.0 else 0.40
    return 0.61 + (0.01 if c["tau_t"] == 4.0 else 0.0) - (0.005 if c["loss"] == "mse" else 0.0)


def test_the_grid_and_halving_with_a_full_budget_reach_the_best() -> None:
    t = table(interacting)
    best = t.best
    assert t.mean(best) == pytest.approx(0.801)
    for method in ("grid", "halving"):
        result = replay(method, t, [0, 1, 2], search_seed=0, budgets=[1.0])
        assert result.picks[1.0] == best, method
    assert rungs(3) == [1, 3] and rungs(9) == [1, 3, 9] and rungs(1) == [1]


def test_revisits_find_the_interaction_a_single_pass_misses() -> None:
    t = table(interacting)
    greedy = replay("greedy", t, [0, 1, 2], search_seed=0, budgets=[1.0])
    revisit = replay("revisit", t, [0, 1, 2], search_seed=0, budgets=[1.0])
    assert t.mean(greedy.picks[1.0]) == pytest.approx(0.621)  # stage alpha: 1.0 lost at tau_t 1 (0.40)
    assert revisit.picks[1.0] == t.best  # found it: the second pass moved alpha at tau_t 4
    assert revisit.configs > greedy.configs


def test_budgets_stop_a_replay_and_regret_is_in_points() -> None:
    t = table(interacting)
    result = replay("grid", t, [0, 1], search_seed=0, budgets=[0.1, 0.5, 1.0])
    assert set(result.picks) == {0.1, 0.5, 1.0} and result.spent <= t.trial_epochs
    rows = regrets("random", t, 5, [0.2, 1.0], seeds_per_replay=2)
    assert len(rows) == 10 and (rows.seeds == 2).all() and (rows.regret.dropna() >= 0).all()
    s = summary(rows, {"d/s": 0.1})
    assert list(s.method) == ["random", "random"] and (s.worst_regret >= s.mean_regret).all()
    assert math.isfinite(float(s[s.budget == 1.0].mean_regret.iloc[0]))


def test_a_teacher_alias_makes_two_configs_one_key() -> None:
    picked = {"t_hs": {"name": "ck-epoch3"}, "t_ll": {"name": "ck-epoch3"}}
    aliases = teacher_aliases(picked, "t_ll")
    assert aliases == {"teacher": {"t_hs": "t_ll"}}
    space = Space({"teacher": ["t_hs", "t_ll"], "loss": ["ce", "mse"]}, DistillSpec(), OptimSpec(), aliases=aliases)
    assert space.key({"teacher": "t_hs"}) == space.key({"teacher": "t_ll"})
    grid = list(space.grid_with_duplicates())
    assert len(grid) == 2 and all(len(dups) == 1 and dups[0]["teacher"] == "t_hs" for _, dups in grid)
    assert teacher_aliases({"t_hs": {"name": "a"}, "t_ll": {"name": "b"}}, "t_ll") == {}


def test_auto_says_what_it_stands_for() -> None:
    small = Space({"loss": ["ce", "mse"]}, DistillSpec(), OptimSpec())
    large = Space({"loss": ["ce", "kl", "mse"], "alpha": [0.25, 0.5, 0.75, 1.0], "tau_t": [1.0, 2.0, 4.0, 8.0],
                   "tau_s": [1.0, "same"]}, DistillSpec(), OptimSpec())
    assert grid_size(large) > 32
    for space in (small, large):
        for gpu in (False, True):
            method, why = choose(space, gpu)
            assert method in METHODS and not METHODS[method].auto and why
    assert choose(large, gpu=False)[0] == "optuna" and choose(small, gpu=False)[0] == "revisit"  # on CPU, never the whole grid
    assert choose(large, gpu=True)[0] == "grid"  # it fuses
    # an empty space is the spec's own config: the grid of that one config runs it (greedy would ask nothing)
    empty = Space({}, DistillSpec(loss="mse"), OptimSpec())
    assert grid_size(empty) == 1 and choose(empty, gpu=False)[0] == choose(empty, gpu=True)[0] == "grid"
    assert list(empty.grid()) == [{}] and "one config" in choose(empty, gpu=False)[1]


def test_a_knob_that_needs_more_classes_trains_once_on_a_binary_task() -> None:
    """DIST's inter-class weight changes nothing with two classes: arms that differ only there are one training."""
    arms = [{"loss": "dist", "dist_beta": 1.0}, {"loss": "dist", "dist_beta": 2.0}, {"loss": "ce"}]
    binary = Space({}, DistillSpec(), OptimSpec(), configs=arms, classes=2)
    assert binary.key(arms[0]) == binary.key(arms[1]) != binary.key(arms[2])
    grid = list(binary.grid_with_duplicates())
    assert len(grid) == 2 and grid[0][1] == [arms[1]]  # the second arm: recorded, not trained
    five = Space({}, DistillSpec(), OptimSpec(), configs=arms, classes=5)
    assert len(list(five.grid())) == 3
