"""The search methods: one table, as Ray Tune's ``create_searcher`` keeps one.

A method either hands each cell's configs out one stage or batch at a time through a
config-level searcher (``make_inner``), or is a fixed set of grid points (``make_inner`` is
None: every (cell, config, seed) is one point). The CLI's ``--method`` choices, the spec's
checks (ranges, ASHA) and the runner read this table; nothing compares method names.
Searchers are imported when built, so reading the table imports neither Ray nor Optuna.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdsearch.search.space import Space


@dataclass(frozen=True)
class BuildContext:
    """What a config searcher of one cell is built from."""

    space: Space
    cell: str
    study_name: str
    folder: Path | None  # the search's result folder (Optuna's journal goes there); None: a replay, in memory
    search_seed: int
    budget: int | None  # configs per cell (see Method.budget)


@dataclass(frozen=True)
class Method:
    """One search method.

    Args:
        name: the spec's ``search.method``.
        help: one line for ``--help``.
        make_inner: ``"module:function"`` of ``BuildContext -> config-level Searcher``; None
            for grid points. Named, not imported: the spec reads this table, and searchers
            import Ray and Optuna.
        takes_ranges: numeric knobs may be ``{low, high}`` ranges (sampling methods).
        covers_grid: every config of the grid is asked (the grid, successive halving), so each
            one's duplicates are asked too (see :func:`kdsearch.search.space.Space.grid_with_duplicates`).
        supports_asha: early stopping on epochs makes sense (configs of unequal promise).
        default_budget: configs per cell when ``search.budget`` is not set (None: until
            the method itself is done, as greedy's stages and the grid are).
        most: the most distinct configs it runs per cell without a budget.
        auto: stands for another method, picked for the space and the device (:func:`choose`).
        sets_epochs: trains configs for epochs of its own choosing (successive halving's rungs), so
            ``epochs`` cannot be a knob of its space.
        races_at_end: never waits for results before asking again (samplers, the grid), so a race
            (:mod:`kdsearch.search.race`) runs over the cell's configs when it is done, not at each decision.
    """

    name: str
    help: str
    make_inner: str | None
    takes_ranges: bool
    supports_asha: bool
    default_budget: Callable[[Space], int | None]
    most: Callable[[Space], int]
    auto: bool = False
    covers_grid: bool = False
    sets_epochs: bool = False
    races_at_end: bool = False

    def budget(self, space: Space, spec_budget: int | None) -> int | None:
        """Configs per cell: the spec's ``search.budget``, else this method's default."""
        return spec_budget or self.default_budget(space)

    def configs(self, space: Space, spec_budget: int | None) -> int:
        """The most distinct configs per cell it will run: its own bound, capped by the budget."""
        budget = self.budget(space, spec_budget)
        return min(self.most(space), budget) if budget else self.most(space)

    @property
    def grid_points(self) -> bool:
        """Runs as a fixed set of (cell, config, seed) points, with no searcher (unless raced)."""
        return self.make_inner is None and not self.auto

    def build(self, ctx: BuildContext) -> Any:
        """The config-level searcher of one cell (the grid's: its configs in order, for a race or a replay)."""
        assert not self.auto, "auto stands for another method"
        module, _, name = (self.make_inner or "kdsearch.search.space:GridOrder").partition(":")
        return getattr(importlib.import_module(module), name)(ctx)


def greedy_size(space: Space) -> int:
    """Distinct configs the greedy search runs at most: every choice, the default once."""
    return sum(len(c) for c in space.choices.values()) - max(0, len(space.names) - 1)


def _until_done(space: Space) -> None:
    return None


def grid_size(space: Space) -> int:
    """Distinct behaviours of the full grid (see :meth:`Space.grid`)."""
    return sum(1 for _ in space.grid())


ETA = 3  # successive halving keeps the best third at each rung (Jamieson & Talwalkar's, and ASHA's, usual choice)
GRACE = 1  # epochs of its first rung
MIN_RUNG_STEPS = 100
"""Optimizer steps below which halving's first rung ranks nothing, so ``auto`` does not pick it.
Measured (2026-12-03, 1,000 Rotten Tomatoes examples, MiniLM's tokenizer): one epoch of 32 to
125 steps left every student predicting one class (minilm-l6:first2 at batch 8, 16 and 32,
lr 2e-4 and 4e-4, with and without KD; xs at batch 8 and 16), while two epochs at batch 16
(126 steps) learned (val 0.67-0.70). The replays that back halving ranked first rungs of 267
steps (Rotten Tomatoes' whole train at batch 32)."""


def rungs(epochs: int, grace: int = GRACE, eta: int = ETA) -> list[int]:
    """Successive halving's epochs per rung: grace, grace*eta, ... capped at ``epochs`` (always last)."""
    out, e = [], grace
    while e < epochs:
        out.append(e)
        e *= eta
    return out + [epochs]


def survivors(n: int, eta: int = ETA) -> int:
    """How many of a rung's ``n`` configs go on to the next: the best ``1/eta``, at least one."""
    return max(1, math.ceil(n / eta))


def halving_size(space: Space) -> int:
    """Trainings successive halving runs: every grid config, then a third, a ninth ... (see :func:`rungs`)."""
    n, total = grid_size(space), 0
    for _ in rungs(int(space.base["epochs"])):
        total += n
        n = survivors(n)
    return total


def _as_many_as_greedy(space: Space) -> int:
    # so greedy and a sampler compare at equal budgets; ranges have no greedy size
    return 10 if space.ranges else greedy_size(space)


_METHODS = (
    Method("auto", "the method the replay benchmark found best for the space's size and the device (said at the start)",
           None, takes_ranges=True, supports_asha=False, default_budget=_until_done, most=grid_size, auto=True),
    Method("greedy", "Sultan et al.'s greedy approximate grid: one knob per stage, in the space's order",
           "kdsearch.search.greedy:build", takes_ranges=False, supports_asha=False, default_budget=_until_done,
           most=greedy_size),
    Method("revisit", "greedy, then passes over the knobs from the best config so far until a pass changes nothing",
           "kdsearch.search.greedy:build_revisit", takes_ranges=False, supports_asha=False, default_budget=_until_done,
           most=grid_size),
    Method("halving", "successive halving over the grid: every config for 1 epoch, the best third for 3, ... to full length",
           "kdsearch.search.halving:build", takes_ranges=False, supports_asha=False, default_budget=_until_done,
           most=halving_size, covers_grid=True, sets_epochs=True),
    Method("grid", "every combination of the choices, each behaviour once",
           None, takes_ranges=False, supports_asha=False, default_budget=_until_done, most=grid_size, covers_grid=True,
           races_at_end=True),
    Method("optuna", "Optuna TPE (constant liar), as many configs as greedy would need unless search.budget says",
           "kdsearch.search.study:build_tpe", takes_ranges=True, supports_asha=True, default_budget=_as_many_as_greedy,
           most=_as_many_as_greedy, races_at_end=True),
    Method("random", "random sampling, the same budget rule as optuna",
           "kdsearch.search.study:build_random", takes_ranges=True, supports_asha=True, default_budget=_as_many_as_greedy,
           most=_as_many_as_greedy, races_at_end=True),
)
METHODS: dict[str, Method] = {m.name: m for m in _METHODS}


@dataclass(frozen=True)
class AutoRule:
    """What ``auto`` runs on a space of at most ``most_configs`` grid configs (None: any) on a
    ``device`` (``gpu``: trials get one and fuse; ``cpu``; ``any``), and why, from the replays."""

    most_configs: int | None
    device: str
    method: str
    why: str
    short_rungs: bool | None = None  # fits only where halving's first rung is (True) or is not (False) too short to rank


# from `kdsearch bench replay` (results/bench/replay.json): first rule that fits wins
AUTO_RULES = (
    AutoRule(None, "ranges", "optuna", "the space has ranges, which only Optuna and random sample; TPE learns where random guesses"),
    AutoRule(1, "any", "grid", "the space holds one config, the spec's own: it runs once, with the no-KD baseline beside it"),
    AutoRule(200, "gpu", "grid", "on a GPU the whole grid fuses into populations (64 students at once on an H100), and the grid's regret is 0"),
    AutoRule(50, "cpu", "grid", f"halving's first rung ({GRACE} epoch) would train under {MIN_RUNG_STEPS} optimizer steps on "
             "the smallest cell, where one epoch left every student predicting one class (1,000 Rotten Tomatoes examples, "
             "32-125 steps), so it would rank nothing; the grid trains each config at full length once",
             short_rungs=True),
    AutoRule(50, "cpu", "halving", "on the 10-seed truth (44 behaviours, Rotten Tomatoes and BBC News), raced successive halving "
             "at 30% of the grid's trial-epochs named a config within 0.5 point of the best in 89% and 99.5% of replays, "
             "mean regret 0.18 and 0.06 points; revisit (the rule before) 29.5% and 91%, 0.54 and 0.22; TPE 72.5% and 100%",
             short_rungs=False),
    AutoRule(50, "cpu", "revisit", "halving sets each rung's epochs, so a space that varies epochs gets revisits: at 30% of "
             "the 24-config grids' trial-epochs they had the lowest worst regret (4.3 points; TPE 21, greedy 9.8; 3-seed replays "
             "of 2026-12-01)"),
    AutoRule(None, "any", "optuna", "on grids of 168 configs, at 30% of the grid's trial-epochs, TPE had the lowest mean "
             "regret (0.75 points; revisits 2.2, greedy 3.2; 3-seed replays of 2026-12-01, which the 10-seed truth does not cover)"),
)


def choose(space: Space, gpu: bool, first_rung_steps: int | None = None) -> tuple[str, str]:
    """The method ``auto`` stands for on ``space``, and why (said at the start of the search).
    ``first_rung_steps``: the optimizer steps halving's first rung would train on the search's
    smallest cell (None: not known, taken as enough; see :data:`MIN_RUNG_STEPS`)."""
    size = None if space.ranges else grid_size(space)
    device = "gpu" if gpu else "cpu"
    short = first_rung_steps is not None and first_rung_steps < MIN_RUNG_STEPS
    for rule in AUTO_RULES:
        if rule.device == "ranges":
            fits = size is None
        else:
            fits = size is not None and rule.device in ("any", device) and (rule.most_configs is None or size <= rule.most_configs)
        if rule.short_rungs is not None and rule.short_rungs != short:
            fits = False
        if fits and METHODS[rule.method].sets_epochs and "epochs" in space.names:
            fits = False  # it sets each rung's epochs itself: a space that varies them takes the next rule
        if fits:
            steps = f", a first rung of {first_rung_steps} steps" if rule.short_rungs else ""
            return rule.method, f"{rule.why} ({'ranges' if size is None else f'{size} configs'}, {device.upper()}{steps})"
    raise AssertionError("the last rule takes any space")
