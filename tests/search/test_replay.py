"""Replays of each method's own searcher over hand-made grid tables: the grid and halving with a
full budget reach the known best; revisits find an interaction one greedy pass misses."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from kdsearch.search.methods import METHODS, MIN_RUNG_STEPS, choose, grid_size, rungs
from kdsearch.search.race import Race
from kdsearch.search.replay import GridTable, regrets, replay, summary
from kdsearch.search.space import Space, teacher_aliases
from kdsearch.spec import DistillSpec, OptimSpec

SPACE = {"loss": ["ce", "mse"], "alpha": [0.5, 1.0], "tau_t": [1.0, 4.0]}


def table(score: Callable[[dict], float], epochs: int = 3, seeds: tuple[int, ...] = (0, 1, 2),
          noise: Callable[[dict, int], float] = lambda config, seed: 0.001 * seed) -> GridTable:
    """A grid whose config scores ``score(config)`` (+ ``noise`` per seed), rising to it over the epochs."""
    space = Space(SPACE, DistillSpec(), OptimSpec(epochs=epochs))
    scores = {}
    for combo in itertools.product(*SPACE.values()):
        config = dict(zip(SPACE, combo))
        final = score(config)
        scores[space.key(config)] = {s: [final * (e + 1) / epochs + noise(config, s) for e in range(epochs)] for s in seeds}
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
        result = replay(method, t, [0, 1, 2], 3, search_seed=0, budgets=[1.0])
        assert result.picks[1.0] == best, method
    assert rungs(3) == [1, 3] and rungs(9) == [1, 3, 9] and rungs(1) == [1]


def test_revisits_find_the_interaction_a_single_pass_misses() -> None:
    t = table(interacting)
    greedy = replay("greedy", t, [0, 1, 2], 3, search_seed=0, budgets=[1.0])
    revisit = replay("revisit", t, [0, 1, 2], 3, search_seed=0, budgets=[1.0])
    assert t.mean(greedy.picks[1.0]) == pytest.approx(0.621)  # stage alpha: 1.0 lost at tau_t 1 (0.40)
    assert revisit.picks[1.0] == t.best  # found it: the second pass moved alpha at tau_t 4
    assert revisit.configs > greedy.configs


def test_budgets_stop_a_replay_and_regret_is_in_points() -> None:
    t = table(interacting)
    result = replay("grid", t, [0, 1, 2], 2, search_seed=0, budgets=[0.1, 0.5, 1.0])
    assert set(result.picks) == {0.1, 0.5, 1.0} and result.spent <= t.trial_epochs
    rows = regrets("random", t, 5, [0.2, 1.0], first=2)
    assert len(rows) == 10 and (rows.first_seeds == 2).all() and (rows.regret.dropna() >= 0).all()
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
    assert choose(large, gpu=False)[0] == "optuna" and choose(small, gpu=False)[0] == "halving"  # on CPU, never the whole grid
    # halving sets each rung's epochs: a space that varies them gets the next rule
    with_epochs = Space({"loss": ["ce", "mse"], "epochs": [1, 2]}, DistillSpec(), OptimSpec())
    assert choose(with_epochs, gpu=False)[0] == "revisit"
    assert choose(large, gpu=True)[0] == "grid"  # it fuses
    # halving's first rung too short to rank (under MIN_RUNG_STEPS optimizer steps): the grid, which trains each
    # config at full length; enough steps, or not known: halving as before
    assert choose(small, gpu=False, first_rung_steps=MIN_RUNG_STEPS - 1)[0] == "grid"
    assert "optimizer steps" in choose(small, gpu=False, first_rung_steps=63)[1]
    assert choose(small, gpu=False, first_rung_steps=MIN_RUNG_STEPS)[0] == "halving"
    assert choose(large, gpu=False, first_rung_steps=10)[0] == "optuna"  # too large for the grid either way
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



def tied_and_far(c: dict) -> float:
    """Two configs tied at the top (mse and ce at alpha 0.5, tau_t 4), one 20 points below them."""
    if c["alpha"] == 0.5 and c["tau_t"] == 4.0:
        return 0.80
    return 0.60


def wobble(config: dict, seed: int) -> float:
    """A seed spread of about a point, different for each config (a tie the seeds cannot split)."""
    import random

    return random.Random(f"{sorted(config.items())}/{seed}").gauss(0, 0.01)


def test_a_race_stops_seeding_a_config_20_points_down_and_keeps_seeding_a_tied_one() -> None:
    t = table(tied_and_far, seeds=tuple(range(10)), noise=wobble)
    race = Race(max_seeds=8)
    asked: dict[str, list[int]] = {}
    result = replay("grid", t, list(range(10)), 3, search_seed=0, budgets=[1.0], race=race)
    rows = regrets("grid", t, 1, [1.0], first=3, race=race)
    # replay once more, recording every (config, seed) the race asks
    from kdsearch.search.cells import CellSearcher
    from kdsearch.search.methods import METHODS, BuildContext

    inner = METHODS["grid"].build(BuildContext(t.space, t.cell, "x", None, 0, None))
    cells = CellSearcher({t.cell: inner}, [0, 1, 2], "val_score", base={t.cell: t.space.base}, keys={t.cell: t.space.key},
                         race=race, race_at_end=True, race_seeds=list(range(3, 10)))
    n = 0
    while (point := cells.suggest(f"t{n}")) not in (None, "FINISHED"):
        config = {k: v for k, v in point.items() if k in SPACE}
        asked.setdefault(t.key(config), []).append(point["seed"])
        cells.on_trial_complete(f"t{n}", {"val_score": t.score(config, point["seed"])})
        n += 1
    tied = [k for k in asked if t.mean(k) > 0.7]
    far = [k for k in asked if t.mean(k) < 0.7]
    assert len(tied) == 2 and len(far) == 6
    assert all(asked[k] == [0, 1, 2] for k in far)  # 20 points down: separated at 3 seeds, no more
    assert all(asked[k] == list(range(8)) for k in tied)  # tied: seeded to max_seeds, the same seed ids for both
    assert result.picks[1.0] in tied and set(result.best_sets[1.0]) == set(tied)
    assert bool(rows.covered.iloc[0]) and rows.best_set.iloc[0] == 2


def test_a_round_the_budget_cannot_pay_for_seeds_the_leader_and_the_nearest_challengers() -> None:
    """Eight configs of one score and a point of seed noise: a whole round costs 3 epochs for each
    config still tied, more than the budget's 15, so the leader and the 4 nearest it by mean get
    seed 3 (15 trial-epochs); with ``partial`` off the race ends without a round."""
    from kdsearch.search import race as racing
    from kdsearch.search.cells import CellSearcher
    from kdsearch.search.methods import METHODS, BuildContext

    t = table(lambda c: 0.7, seeds=tuple(range(10)), noise=wobble)

    def run(race: Race, sign: float = 1.0) -> tuple[dict[str, list[int]], CellSearcher]:
        inner = METHODS["grid"].build(BuildContext(t.space, t.cell, "x", None, 0, None))
        cells = CellSearcher({t.cell: inner}, [0, 1, 2], "val_score", "max" if sign > 0 else "min", base={t.cell: t.space.base},
                             keys={t.cell: t.space.key}, race=race, race_at_end=True, race_seeds=list(range(3, 10)))
        asked: dict[str, list[int]] = {}
        n = 0
        while (point := cells.suggest(f"t{n}")) not in (None, "FINISHED"):
            config = {k: v for k, v in point.items() if k in SPACE}
            asked.setdefault(t.key(config), []).append(point["seed"])
            cells.on_trial_complete(f"t{n}", {"val_score": sign * t.score(config, point["seed"])})
            n += 1
        return asked, cells

    race = Race(max_seeds=8, budget=15)
    at3 = {k: {s: t.scores[k][s][-1] for s in (0, 1, 2)} for k in t.scores}
    tied = racing.alive(at3, race)
    assert len(tied) * 3 > 15  # a whole round does not fit
    nearest = sorted(tied[1:], key=lambda k: -sum(at3[k].values()))[:4]
    asked, cells = run(race)
    assert {k for k, seeds in asked.items() if seeds == [0, 1, 2, 3]} == {tied[0], *nearest}
    assert all(seeds == [0, 1, 2] for k, seeds in asked.items() if k not in {tied[0], *nearest})
    assert cells.race_spent[t.cell] == 15 and cells.race_rounds[t.cell] == 1
    assert run(race, sign=-1.0)[0] == asked  # a metric to minimise, the same scores negated: the same race
    asked, cells = run(Race(max_seeds=8, budget=15, partial=False))
    assert all(seeds == [0, 1, 2] for seeds in asked.values()) and cells.race_spent[t.cell] == 0
    # lower is better (a loss): the nearest is the next lowest; a leader that has the seed already pairs with
    # what fits; a budget that seeds the leader alone seeds nothing
    scores = {"a": {0: 0.1}, "b": {0: 0.3}, "c": {0: 0.2}}
    one = {"a": 1, "b": 1, "c": 1}
    assert racing.affordable(["a", "b", "c"], scores, one, 2, "a", sign=-1.0) == ["a", "c"]
    assert racing.affordable(["b", "c"], scores, one, 1, "a", sign=-1.0) == ["c"]
    assert racing.affordable(["a", "b", "c"], scores, one, 1, "a", sign=-1.0) == []


def test_greedy_with_racing_fixes_a_stage_only_after_its_race() -> None:
    """Stage 0 (loss) is a tie: its configs get seeds until max_seeds before stage 1 (alpha) is asked."""
    from kdsearch.search.cells import CellSearcher
    from kdsearch.search.methods import METHODS, BuildContext

    t = table(lambda c: 0.7 + (0.2 if c["alpha"] == 0.5 and c["tau_t"] == 4.0 else 0.0), seeds=tuple(range(10)), noise=wobble)
    inner = METHODS["greedy"].build(BuildContext(t.space, t.cell, "x", None, 0, None))
    cells = CellSearcher({t.cell: inner}, [0, 1, 2], "val_score", base={t.cell: t.space.base}, keys={t.cell: t.space.key},
                         race=Race(max_seeds=5), race_seeds=list(range(3, 10)))
    order = []
    n = 0
    while (point := cells.suggest(f"t{n}")) not in (None, "FINISHED"):
        order.append((point["stage"], point["seed"], point.get("race_round")))
        config = {k: v for k, v in point.items() if k in SPACE}
        cells.on_trial_complete(f"t{n}", {"val_score": t.score(config, point["seed"])})
        n += 1
    stage0 = [i for i, (stage, _, _) in enumerate(order) if stage == 0]
    stage1 = [i for i, (stage, _, _) in enumerate(order) if stage == 1]
    assert max(stage0) < min(stage1)  # the knob was fixed after the last of stage 0's race seeds
    assert {seed for stage, seed, _ in order if stage == 0} == set(range(5))  # raced to max_seeds: the loss is a tie
    assert {r for stage, _, r in order if stage == 0} == {0, 1, 2}  # rounds 1 and 2 added seeds 3 and 4
    assert inner.history[0]["knob"] == "loss" and len(inner.history) == len(SPACE)


def test_a_resumed_race_continues_without_asking_a_point_twice() -> None:
    """The searcher's state, saved mid-race and restored in a new searcher, goes on where it was."""
    from kdsearch.search.cells import CellSearcher
    from kdsearch.search.methods import METHODS, BuildContext

    t = table(tied_and_far, seeds=tuple(range(10)), noise=wobble)

    def fresh() -> CellSearcher:
        inner = METHODS["greedy"].build(BuildContext(t.space, t.cell, "x", None, 0, None))
        return CellSearcher({t.cell: inner}, [0, 1, 2], "val_score", base={t.cell: t.space.base}, keys={t.cell: t.space.key},
                            race=Race(max_seeds=6), race_seeds=list(range(3, 10)))

    def run(cells: CellSearcher, stop: int | None = None, start: int = 0) -> list[tuple[str, int]]:
        asked, n = [], start
        while (point := cells.suggest(f"t{n}")) not in (None, "FINISHED"):
            config = {k: v for k, v in point.items() if k in SPACE}
            asked.append((t.key(config), point["seed"]))
            cells.on_trial_complete(f"t{n}", {"val_score": t.score(config, point["seed"])})
            n += 1
            if stop is not None and n == stop:
                break
        return asked

    whole = run(fresh())
    first = fresh()
    before = run(first, stop=14)
    assert any(seed >= 3 for _, seed in before), "stopped before any race seed: not mid-race"
    again = fresh()
    again.set_state(first.get_state())
    after = run(again, start=14)
    assert before + after == whole and len(set(whole)) == len(whole)


def test_a_replay_pays_for_every_seed_it_asks() -> None:
    t = table(tied_and_far, seeds=tuple(range(10)), noise=wobble)
    plain = replay("grid", t, list(range(10)), 3, search_seed=0, budgets=[1.0])
    raced = replay("grid", t, list(range(10)), 3, search_seed=0, budgets=[1.0], race=Race(max_seeds=8))
    assert plain.spent == 8 * 3 * t.epochs  # 8 configs x 3 seeds, 3 epochs each
    assert raced.spent == plain.spent + 2 * 5 * t.epochs  # and the race's 5 more seeds of the two tied ones
    capped = replay("grid", t, list(range(10)), 3, search_seed=0, budgets=[0.3], race=Race(max_seeds=8))
    assert capped.spent_at[0.3] <= 0.3 * t.trial_epochs and capped.spent_at[0.3] > 0.3 * t.trial_epochs - t.epochs


def test_auto_counts_the_steps_of_halvings_first_rung(tiny_spec: Callable[..., Path]) -> None:
    from kdsearch.search.runner import first_rung_steps, resolve_auto, short_rung_warning
    from kdsearch.spec import load_spec

    spec = load_spec(tiny_spec(method="auto"))  # 384 examples at batch 32: 12 steps in an epoch
    assert first_rung_steps(spec) == 12
    resolved, why = resolve_auto(spec)
    assert resolved.search.method == "grid" and f"under {MIN_RUNG_STEPS} optimizer steps" in why
    larger = load_spec(tiny_spec(method="auto", train=3200))
    assert first_rung_steps(larger) == 100 and resolve_auto(larger)[0].search.method == "halving"
    # the smallest cell decides: a second student at batch 64 halves the steps
    two = load_spec(tiny_spec(method="auto", train=3200), ["search.students=[xs, {model: xs, train: {batch_size: 64}}]"])
    assert first_rung_steps(two) == 50 and resolve_auto(two)[0].search.method == "grid"
    # halving asked by name where its first rung is that short: one warning line, the search still runs it
    named = load_spec(tiny_spec(method="halving"))
    assert "trains 12 optimizer steps" in short_rung_warning(named)
    assert short_rung_warning(load_spec(tiny_spec(method="halving", train=3200))) is None
    assert short_rung_warning(load_spec(tiny_spec(method="grid"))) is None
