"""Sultan et al. (2024)'s greedy, approximate grid search as a Ray Tune ``Searcher``.

Knobs are searched in order. In stage k every choice of knob k is suggested at once,
the knobs before it fixed at their stage winners and the ones after it at their
defaults. When every config of the stage has reported, the best one (ties go to the
default, then to the earlier choice) fixes knob k and stage k+1 begins. A config already
run in an earlier stage is reused, not run again; a failed config counts as the worst.

With ``revisit``, the paper's pass is followed by further passes over the knobs, each
starting from the best config found so far (ties keep its values): one knob's choices
at a time around it, so two knobs that only pay together (alpha = 1 with tau_t = 4) meet.
It stops when a pass leaves the best config as it was, or the budget ends; a config
already run is never run again.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search import Searcher

from kdsearch.search._state import JsonStateSearcher
from kdsearch.knobs import Config
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

    def __init__(self, space: Space, metric: str = "score", mode: str = "max", max_configs: int | None = None,
                 revisit: bool = False) -> None:
        super().__init__(metric=metric, mode=mode)
        if space.ranges:
            raise ValueError(f"greedy needs choices, not ranges: {', '.join(space.ranges)}")
        self.names = list(space.names)
        self.choices = {n: list(space.choices[n]) for n in self.names}
        self.defaults = dict(space.defaults)
        self.space = space
        self.max_configs = max_configs
        self.stage = -1
        self.fixed: dict[str, Any] = {}
        self.queue: list[Config] = []
        self.stage_configs: list[Config] = []
        self.pending: dict[str, str] = {}  # trial id -> config key
        self.results: dict[str, float | None] = {}  # config key -> score (None: failed)
        self.history: list[dict[str, Any]] = []  # each stage: knob, configs, winner
        self.finished = False
        self.revisit = revisit
        self.round = 0  # which pass over the knobs (0: the paper's)
        self.configs: dict[str, Config] = {}  # config key -> the config, for picking the best to revisit from
        self.duplicates: list[dict[str, Any]] = []  # configs asked that train as another (see the runner's record_duplicates)

    # -- the stage logic ------------------------------------------------------------
    def _key(self, config: Config) -> str:
        return self.space.key(config)  # this cell's: configs that train the same share it

    def _raw(self, config: Config) -> str:
        return self.space.raw_key(config)  # the config itself, no alias

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
                "round": self.round,
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
            if self.stage >= len(self.names) and not self._next_round():
                self.finished = True
                return
            knob = self.names[self.stage]
            self.stage_configs = [self._config(self.stage, v) for v in self.choices[knob]]
            seen = {k: self.configs.get(k) for k in [*self.results, *self.pending.values()]}
            for c in self.stage_configs:
                k = self._key(c)
                if k not in seen:
                    seen[k] = c
                    self.queue.append(c)
                elif seen[k] is not None and self._raw(c) != self._raw(seen[k]) and \
                        self._raw(c) not in {self._raw(d["duplicate"]) for d in self.duplicates}:
                    # another config that trains as one run or queued (t_hs = t_ll): asked, not run
                    self.duplicates.append({"config": seen[k], "duplicate": c, "stage": self.round * len(self.names) + self.stage})
            if self.max_configs is not None:
                room = self.max_configs - len(self.results) - len(self.pending)
                if room <= 0 and self.queue:
                    self.queue = []
                    self.finished = True
                    return
                self.queue = self.queue[:room]

    def _next_round(self) -> bool:
        """With ``revisit``: begin another pass from the best config so far, unless the last pass
        changed nothing (the best config is the one it started from). True when one begins."""
        if not self.revisit:
            return False
        scored = [(v if self.mode == "max" else -v, k) for k, v in self.results.items()
                  if v is not None and math.isfinite(v) and k in self.configs]
        if not scored:
            return False
        best = self.configs[max(scored)[1]]
        start = {**self.defaults, **self.fixed} if self.round == 0 else self.defaults
        if self.round > 0 and self._key(best) == self._key(start):
            return False
        self.round += 1
        self.defaults = {n: best[n] for n in self.names}
        self.fixed = {}
        self.stage = 0
        return True

    @property
    def best(self) -> Config:
        """The winners so far, defaults elsewhere."""
        return {**self.defaults, **self.fixed}

    # -- state (JSON: see _state.py) --------------------------------------------------
    _STATE = ("stage", "fixed", "queue", "stage_configs", "pending", "results", "history", "finished", "round", "configs",
              "defaults", "duplicates")

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
        self.configs[self._key(config)] = config
        return {**config, "stage": self.round * len(self.names) + self.stage}

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


def build_revisit(ctx: BuildContext) -> GreedySearcher:
    """Greedy, then passes around the best config until one changes nothing (see the module)."""
    return GreedySearcher(ctx.space, metric="score", mode="max", max_configs=ctx.budget, revisit=True)
