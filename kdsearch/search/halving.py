"""Successive halving over the grid as a Ray Tune ``Searcher``.

Every config of the grid starts, trained for the first rung's epochs (``GRACE``); the best
``1/ETA`` of them (by the mean over seeds) go on to ``ETA`` times more epochs, and so on up
to the student's full epochs. A rung trains its configs anew at its length (the ``epochs``
knob: a shorter schedule, decayed to its own end), so every rung is an ordinary config with
its own row, and configs of a rung that share a cell fuse into populations like any others.
Budget is in trial-epochs: rung r costs its configs x seeds x its epochs.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search import Searcher

from kdsearch.knobs import Config
from kdsearch.search._state import JsonStateSearcher
from kdsearch.search.methods import BuildContext, rungs, survivors
from kdsearch.search.space import Space


class HalvingSearcher(JsonStateSearcher):
    """One cell's successive halving over ``space``'s grid.

    Args:
        space: the knobs (choices only); ``epochs`` must not be one of them: halving sets it.
        metric: the result key compared (the mean over seeds).
        max_configs: stop after this many distinct (config, rung) trainings.
    """

    def __init__(self, space: Space, metric: str = "score", mode: str = "max", max_configs: int | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        if space.ranges or "epochs" in space.names:
            raise ValueError("halving runs a grid of choices and sets epochs itself")
        self.space = space
        self.rungs = rungs(int(space.base["epochs"]))
        self.max_configs = max_configs
        self.rung = 0
        self.queue: list[Config] = list(space.grid())
        self.current: list[Config] = list(self.queue)  # this rung's configs
        self.pending: dict[str, str] = {}  # trial id -> config key
        self.results: dict[str, float | None] = {}
        self.asked = 0
        self.finished = False

    def _key(self, config: Config) -> str:
        return self.space.key(config)

    def _epoched(self, config: Config) -> Config:
        return {**config, "epochs": self.rungs[self.rung]}

    def _promote(self) -> None:
        """This rung is in: its best ``1/ETA`` train at the next rung's length, or the search ends."""
        if self.rung + 1 >= len(self.rungs):
            self.finished = True
            return
        sign = 1.0 if self.mode == "max" else -1.0

        def score(c: Config) -> float:
            v = self.results.get(self._key(self._epoched(c)))
            return -math.inf if v is None or not math.isfinite(v) else sign * v

        ranked = sorted(self.current, key=score, reverse=True)  # stable: ties keep the grid's order
        self.current = ranked[: survivors(len(ranked))]
        self.rung += 1
        self.queue = list(self.current)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.queue and not self.pending and not self.finished:
            self._promote()
        if self.finished or (self.max_configs is not None and self.asked >= self.max_configs and not self.pending):
            return Searcher.FINISHED
        if not self.queue or (self.max_configs is not None and self.asked >= self.max_configs):
            return None  # the rung is still running
        config = self._epoched(self.queue.pop(0))
        self.pending[trial_id] = self._key(config)
        self.asked += 1
        return {**config, "stage": self.rung}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        k = self.pending.pop(trial_id, None)
        if k is None:
            return
        self.results[k] = None if error or not result or result.get(self.metric) is None else float(result[self.metric])

    _STATE = ("rung", "queue", "current", "pending", "results", "asked", "finished")

    def get_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._STATE}

    def set_state(self, state: dict[str, Any]) -> None:
        for name in self._STATE:
            setattr(self, name, state[name])


def build(ctx: BuildContext) -> HalvingSearcher:
    """The method table's factory (see :mod:`kdsearch.search.methods`)."""
    return HalvingSearcher(ctx.space, metric="score", mode="max", max_configs=ctx.budget)
