"""Many cells, paired seeds and the no-KD baseline around any config-level Searcher.

Each cell (a dataset and a student size) has its own inner searcher (greedy, Optuna or
random) that sees configs only. This searcher turns each suggested config into one
trial per seed, reports the mean over seeds back to the inner searcher once all seeds
are in (any failed seed makes the config count as failed, i.e. the worst), adds the
alpha = 0 baseline of every cell, and interleaves cells so they share the cluster.
A config suggested again in a cell is not run again: the inner searcher is told the
known result at once, or when the running one finishes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from kdsearch.search._state import JsonStateSearcher
from kdsearch.knobs import BASELINE_STAGE, key


@dataclass
class Group:
    """One config in one cell, run once per seed."""

    cell: str
    config: dict[str, Any]
    inner_ids: list[str]
    seeds: list[int]
    scores: dict[int, float | None] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # other configs asked that train the same

    @property
    def done(self) -> bool:
        return len(self.scores) == len(self.seeds)

    def mean(self) -> float | None:
        vals = list(self.scores.values())
        if not vals or any(v is None or not math.isfinite(v) for v in vals):
            return None
        return sum(vals) / len(vals)  # type: ignore[arg-type]


class CellSearcher(JsonStateSearcher):
    """Routes suggestions between per-cell searchers, one trial per (config, seed).

    Args:
        inner: cell id -> config-level Searcher, maximising ``score`` (the metric's mean
            over seeds, negated when ``mode`` is ``min``).
        seeds: the seeds every config runs with, paired across configs.
        metric: the trial result key the configs are compared on.
        mode: ``max`` or ``min``.
        baseline: the alpha = 0 config per cell (run first), or ``None``.
        budget: at most this many configs asked of each inner searcher (``None``: until
            it says it is finished).
        max_redundant: how many already-known suggestions in a row end a cell (a random
            sampler in a small space can only repeat itself).
        base: cell -> every knob's spec value, so configs that leave a knob out are
            keyed (and deduplicated) on its real value.
        keys: cell -> the key of a config (``Space.key``: its aliases too, as t_hs = t_ll);
            default: :func:`kdsearch.knobs.key` over ``base``.
    """

    def __init__(
        self,
        inner: dict[str, Searcher],
        seeds: list[int],
        metric: str,
        mode: str = "max",
        baseline: dict[str, Any] | None = None,
        budget: int | None = None,
        max_redundant: int = 50,
        base: dict[str, dict[str, Any]] | None = None,
        keys: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.inner = inner
        self.base = base or {}
        self.keys = keys or {}
        self.seeds = list(seeds)
        self.budget = budget
        self.max_redundant = max_redundant
        self.cells = list(inner)
        self.turn = 0
        self.asked = {c: 0 for c in self.cells}
        self.cell_done = {c: False for c in self.cells}
        self.groups: dict[str, Group] = {}  # group id -> group
        self.by_key: dict[tuple[str, str], str] = {}  # (cell, config key) -> group id
        self.queue: list[tuple[str, int]] = []  # (group id, seed) to suggest
        self.live: dict[str, tuple[str, int]] = {}  # trial id -> (group id, seed)
        self.n_groups = 0
        self.n_asks = 0
        if baseline is not None:
            for cell in self.cells:
                self._new_group(cell, {**baseline, "stage": BASELINE_STAGE}, None)

    def _key(self, cell: str, config: dict[str, Any]) -> str:
        if cell in self.keys:
            return self.keys[cell]({k: v for k, v in config.items() if k != "stage"})
        return key({**self.base.get(cell, {}), **config})

    def _raw_key(self, cell: str, config: dict[str, Any]) -> str:
        return key({**self.base.get(cell, {}), **{k: v for k, v in config.items() if k != "stage"}})

    def _new_group(self, cell: str, config: dict[str, Any], inner_id: str | None) -> Group:
        gid = f"g{self.n_groups}"
        self.n_groups += 1
        group = Group(cell, config, [inner_id] if inner_id else [], self.seeds)
        self.groups[gid] = group
        self.by_key[(cell, self._key(cell, config))] = gid
        self.queue.extend((gid, s) for s in self.seeds)
        return group

    def _tell(self, cell: str, inner_id: str, group: Group) -> None:
        mean = group.mean()
        self.inner[cell].on_trial_complete(inner_id, None if mean is None else {"score": mean}, error=mean is None)

    def _ask(self, cell: str) -> bool:
        """Ask the cell's searcher for a new config; True when one was queued."""
        searcher = self.inner[cell]
        for _ in range(self.max_redundant):
            if self.budget is not None and self.asked[cell] >= self.budget:
                self.cell_done[cell] = True
                return False
            inner_id = f"{cell}#{self.n_asks}"
            self.n_asks += 1
            config = searcher.suggest(inner_id)
            if config is None:
                return False
            if config == Searcher.FINISHED:
                self.cell_done[cell] = True
                return False
            gid = self.by_key.get((cell, self._key(cell, config)))
            if gid is None:
                self.asked[cell] += 1
                self._new_group(cell, config, inner_id)
                return True
            group = self.groups[gid]
            group.inner_ids.append(inner_id)
            raw = self._raw_key(cell, config)
            if raw not in {self._raw_key(cell, c) for c in [group.config, *group.duplicates]}:
                group.duplicates.append(dict(config))  # another config, one training (t_hs = t_ll): rows for both
            if group.done:
                self._tell(cell, inner_id, group)  # known: answer now, ask again
            # running: its result goes to both asks; ask again (a population takes a batch)
        self.cell_done[cell] = True
        return False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.queue:
            for i in range(len(self.cells)):
                cell = self.cells[(self.turn + i) % len(self.cells)]
                if not self.cell_done[cell] and self._ask(cell):
                    self.turn = (self.turn + i + 1) % len(self.cells)
                    break
        if not self.queue:
            if all(self.cell_done.values()) and not self.live:
                return Searcher.FINISHED
            return None
        gid, seed = self.queue.pop(0)
        group = self.groups[gid]
        self.live[trial_id] = (gid, seed)
        return {**group.config, "cell": group.cell, "seed": seed}

    def get_state(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "asked": self.asked,
            "cell_done": self.cell_done,
            "groups": {
                gid: {"cell": g.cell, "config": g.config, "inner_ids": g.inner_ids, "seeds": g.seeds,
                      "scores": [[seed, v] for seed, v in g.scores.items()], "duplicates": g.duplicates}
                for gid, g in self.groups.items()
            },
            "queue": self.queue,
            "live": self.live,
            "n_groups": self.n_groups,
            "n_asks": self.n_asks,
            "inner": {cell: searcher.get_state() for cell, searcher in self.inner.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if set(state["inner"]) != set(self.inner):
            raise ValueError(f"saved cells {sorted(state['inner'])} are not this search's {sorted(self.inner)}")
        self.turn, self.asked, self.cell_done = state["turn"], state["asked"], state["cell_done"]
        self.groups = {
            gid: Group(g["cell"], g["config"], g["inner_ids"], g["seeds"], {int(seed): v for seed, v in g["scores"]},
                       g.get("duplicates", []))
            for gid, g in state["groups"].items()
        }
        self.by_key = {(g.cell, self._key(g.cell, g.config)): gid for gid, g in self.groups.items()}
        self.queue = [(gid, int(seed)) for gid, seed in state["queue"]]
        self.live = {tid: (gid, int(seed)) for tid, (gid, seed) in state["live"].items()}
        self.n_groups, self.n_asks = state["n_groups"], state["n_asks"]
        for cell, inner in state["inner"].items():
            self.inner[cell].set_state(inner)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric, mode and space were fixed at construction

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        gid, seed = self.live.pop(trial_id)
        group = self.groups[gid]
        value = None if error or not result or result.get(self.metric) is None else float(result[self.metric])
        if value is not None and self.mode == "min":
            value = -value
        group.scores[seed] = value
        if group.done:
            for inner_id in group.inner_ids:
                self._tell(group.cell, inner_id, group)
