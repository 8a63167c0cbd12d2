"""Racing: seeds spent only where a decision is still open (F-Race, irace, SMAC's intensification).

Every config of a decision (a greedy stage, a revisit pass, a halving rung; for samplers and the
grid, the whole cell at its end) gets the method's first seeds. Then, in rounds, the leader and
every config that a paired test cannot yet separate from it get the next seed (the same seed id
for all, so comparisons stay paired); a config the test separates (worse, p <= level after
Holm's adjustment over the configs compared with the leader at once) gets no more. The race ends when one config is left, when a config reaches ``max_seeds``, or when its
budget of trial-epochs is spent; a round the budget cannot pay for in full spends what is left
on the leader and the challengers nearest it. Nothing here imports Ray: the cell searcher
(:mod:`kdsearch.search.cells`) runs the rounds, the replays (:mod:`kdsearch.search.replay`)
and the summaries (:mod:`kdsearch.results.summary`) call the same functions.

Why the paired t test by default: racing spends seeds, it names no finding, and the sign-flip
test cannot separate anything below 6 seeds (it would give every config 6 seeds, the grid's cost).
``kdsearch bench calibration`` measured the t test at or below 5% (within its Monte Carlo error)
from 3 paired seeds on every null, Gaussian, with collapses and from the committed grids; at 2
seeds it was not (8.9% on the grids), so it separates nothing below ``min_seeds`` = 3. A config
it drops wrongly costs regret, which ``kdsearch bench replay`` measures, with how often the
named best set holds the true best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kdsearch.errors import SpecError
from kdsearch.results import stats

Scores = Mapping[int, float | None]  # seed -> score (None: failed)


@dataclass
class Race:
    """``search.race``: how seeds are raced (each default with its reason).

    Args:
        max_seeds: the most seeds a config gets; past 8, the configs still tied differ by less
            than the seed noise of the committed grids can show (bench calibration's power table).
        test: the paired test that separates a config from the leader (a name in
            :data:`kdsearch.results.stats.TESTS`); ``t`` (see the module).
        level: the test's two-sided level.
        min_seeds: the fewest shared seeds at which the test may separate (the t test is
            calibrated from 3).
        budget: trial-epochs per cell the race may add beyond the method's own trials (None: no
            limit but ``max_seeds``).
        partial: when a round costs more than the budget has left, give the next seed to the
            leader and the challengers nearest it by mean, as many as it pays for (False: the
            race ends there). True: in the breadth study's first run, where 36 configs tied at 3
            seeds, a whole round cost 72 trial-epochs of a budget of 60 and six of its 14 cells
            were not raced at all; the configs nearest the leader are the ones that may overturn it.
    """

    max_seeds: int = 8
    test: str = "t"
    level: float = 0.05
    min_seeds: int = 3
    budget: int | None = None
    partial: bool = True

    def check(self, where: str) -> None:
        if self.test not in stats.TESTS:
            raise SpecError(f"{where}.test: must be one of {', '.join(stats.TESTS)}, got {self.test!r}")
        if not 0 < self.level < 1:
            raise SpecError(f"{where}.level: must be in (0, 1), got {self.level}")
        if not 2 <= self.max_seeds <= 100:  # first: min_seeds is checked against it
            raise SpecError(f"{where}.max_seeds: must be in 2..100, got {self.max_seeds}")
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise SpecError(f"{where}.min_seeds: must be in 2..max_seeds ({self.max_seeds}), got {self.min_seeds}")
        if self.budget is not None and self.budget < 1:
            raise SpecError(f"{where}.budget: at least 1 trial-epoch, got {self.budget}")


def alive(scores: Mapping[str, Scores], race: Race, sign: float = 1.0) -> list[str]:
    """The leader first, then every config the race's test cannot separate from it."""
    return stats.best_set(scores, race.test, race.level, race.min_seeds, sign)


def next_seed(scores: Mapping[str, Scores], keys: list[str], sequence: list[int]) -> int | None:
    """The first seed of ``sequence`` that not every one of ``keys`` has run (None: all ran all)."""
    return next((s for s in sequence if not all(s in scores[k] for k in keys)), None)


def affordable(lacking: Sequence[str], scores: Mapping[str, Scores], cost: Mapping[str, int], left: int, leader: str,
               sign: float = 1.0) -> list[str]:
    """Of a round the budget cannot pay for in full (``lacking``: the tied configs without its
    seed), what ``left`` trial-epochs can: the leader if it lacks the seed, then the
    challengers nearest it by mean, nearest first, while they fit. Empty when that would seed
    no challenger beside the leader (a lone seed pairs with nothing)."""
    def rank(k: str) -> float:
        m = stats.seed_mean(scores[k])
        return -math.inf if m == -math.inf else sign * m
    order = ([leader] if leader in lacking else []) + sorted((k for k in lacking if k != leader), key=rank, reverse=True)
    picked: list[str] = []
    for k in order:
        if cost[k] > left:
            break
        picked.append(k)
        left -= cost[k]
    return picked if any(k != leader for k in picked) and (leader in picked or leader not in lacking) else []


def as_dict(race: Race | None) -> dict[str, Any] | None:
    return None if race is None else {"max_seeds": race.max_seeds, "test": race.test, "level": race.level,
                                      "min_seeds": race.min_seeds, "budget": race.budget, "partial": race.partial}
