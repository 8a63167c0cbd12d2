"""Sultan et al. (2024)'s greedy, approximate grid search as a Ray Tune ``Searcher``.

Knobs are searched in order. In stage k every choice of knob k is suggested at once,
the knobs before it fixed at their stage winners and the ones after it at their
defaults. When every config of the stage has reported, the best one (ties go to the
default, then to the earlier choice) fixes knob k and stage k+1 begins. A config already
run in an earlier stage is reused, not run again; a failed config counts as the worst.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search import Searcher

from kdsearch.search._state import JsonStateSearcher
from kdsearch.knobs import Config, key
from kdsearch.search.methods import BuildContext
from kdsearch.search.space import Space


class GreedySearcher(JsonStateSearcher):
    """One cell's greedy search over ``space``; a suggestion is a config dict plus ``stage``.

    Args:
        space: the knobs, in greedy order, with choices and defaults.
        metric: the result key compared between configs.
        mode: ``max`` or ``min``.
        max_configs: stop after this many distinct configs (``None``: no cap).
    """

    def __init__(self, space: Space, metric: str = "score", mode: str = "max", max_configs: int | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        if space.ranges:
            raise ValueError(f"greedy needs choices, not ranges: {', '.join(space.ranges)}")
        self.names = list(space.names)
        self.choices = {n: list(space.choices[n]) for n in self.names}
        self.defaults = dict(space.defaults)
        self.base = dict(space.base)
        self.max_configs = max_configs
        self.stage = -1
        self.fixed: dict[str, Any] = {}
        self.queue: list[Config] = []
        self.stage_configs: list[Config] = []
        self.pending: dict[str, str] = {}  # trial id -> config key
        self.results: dict[str, float | None] = {}  # config key -> score (None: failed)
        self.history: list[dict[str, Any]] = []  # each stage: knob, configs, winner
        self.finished = False

    # -- the stage logic ------------------------------------------------------------
    def _key(self, config: Config) -> str:
        return key({**self.base, **config})

    def _config(self, stage: int, value: Any) -> Config:
        config = dict(self.defaults)
        config.update(self.fixed)
        config[self.names[stage]] = value
        return config

    def _rank(self, config: Config, position: int) -> tuple[float, int, int]:
        score = self.results.get(self._key(config))
        if score is None or not math.isfinite(score):
            value = -math.inf
        else:
            value = score if self.mode == "max" else -score
        knob = self.names[self.stage]
        is_default = int(config[knob] == self.defaults[knob])
        return (value, is_default, -position)

    def _close_stage(self) -> None:
        knob = self.names[self.stage]
        ranked = [(self._rank(c, i), c) for i, c in enumerate(self.stage_configs)]
        winner = max(ranked, key=lambda r: r[0])[1]
        self.fixed[knob] = winner[knob]
        self.history.append(
            {
                "stage": self.stage,
                "knob": knob,
                "scores": {str(c[knob]): self.results.get(self._key(c)) for c in self.stage_configs},
                "winner": winner[knob],
            }
        )

    def _open_next_stage(self) -> None:
        """Advance until a stage has something new to run, or finish."""
        while not self.queue:
            if self.stage >= 0:
                self._close_stage()
            self.stage += 1
            if self.stage >= len(self.names):
                self.finished = True
                return
            knob = self.names[self.stage]
            self.stage_configs = [self._config(self.stage, v) for v in self.choices[knob]]
            seen = set(self.results) | set(self.pending.values())
            for c in self.stage_configs:
                k = self._key(c)
                if k not in seen:
                    seen.add(k)
                    self.queue.append(c)
            if self.max_configs is not None:
                room = self.max_configs - len(self.results) - len(self.pending)
                if room <= 0 and self.queue:
                    self.queue = []
                    self.finished = True
                    return
                self.queue = self.queue[:room]

    @property
    def best(self) -> Config:
        """The winners so far, defaults elsewhere."""
        return {**self.defaults, **self.fixed}

    # -- state (JSON: see _state.py) --------------------------------------------------
    _STATE = ("stage", "fixed", "queue", "stage_configs", "pending", "results", "history", "finished")

    def get_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._STATE}

    def set_state(self, state: dict[str, Any]) -> None:
        for name in self._STATE:
            setattr(self, name, state[name])

    # -- the Searcher interface --------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.finished:
            return Searcher.FINISHED
        if not self.queue and self.pending:
            return None  # the stage is still running
        if not self.queue:
            self._open_next_stage()
            if self.finished:
                return Searcher.FINISHED
        config = self.queue.pop(0)
        self.pending[trial_id] = self._key(config)
        return {**config, "stage": self.stage}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        k = self.pending.pop(trial_id, None)
        if k is None:
            return
        score = None if error or not result or result.get(self.metric) is None else float(result[self.metric])
        self.results[k] = score
        if not self.queue and not self.pending and not self.finished:
            self._open_next_stage()  # the stage is complete: fix its winner now


def build(ctx: BuildContext) -> GreedySearcher:
    """The method table's factory (see :mod:`kdsearch.search.methods`)."""
    return GreedySearcher(ctx.space, metric="score", mode="max", max_configs=ctx.budget)
