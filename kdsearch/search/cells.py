"""Many cells, paired seeds and the no-KD baseline around any config-level Searcher.

Each cell (a dataset and a student size) has its own inner searcher (greedy, Optuna or
random) that sees configs only. This searcher turns each suggested config into one
trial per seed, reports the mean over seeds back to the inner searcher once all seeds
are in (any failed seed makes the config count as failed, i.e. the worst), adds the
alpha = 0 baseline of every cell, and interleaves cells so they share the cluster.
A config suggested again in a cell is not run again: the inner searcher is told the
known result at once, or when the running one finishes.

With a race (:mod:`kdsearch.search.race`), seeds go where a decision is open. A method that
decides in steps (greedy's stages, revisit's passes, halving's rungs: it waits for results
before it asks again) has its results held while it waits; the held configs are raced,
then told their means over every seed they got, so a stage's knob is fixed only after its
race. A method that never waits (TPE, random, the grid) is told as results come, and the
cell's configs are raced when it is done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from kdsearch.search import race as racing
from kdsearch.search._state import JsonStateSearcher
from kdsearch.knobs import BASELINE_STAGE, key

QUEUED, RESOLVED, IDLE = "queued", "resolved", "idle"  # what a race step did


@dataclass
class Group:
    """One config in one cell, run once per seed."""

    cell: str
    config: dict[str, Any]
    inner_ids: list[str]
    seeds: list[int]
    scores: dict[int, float | None] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # other configs asked that train the same
    told: list[str] = field(default_factory=list)  # inner ids answered already
    rounds: dict[int, int] = field(default_factory=dict)  # seed -> the race round that added it

    @property
    def done(self) -> bool:
        return all(s in self.scores for s in self.seeds)

    @property
    def baseline(self) -> bool:
        return self.config.get("stage") == BASELINE_STAGE

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
        race: seeds raced where a decision is open (None: every config gets ``seeds``).
        race_at_end: the inner searchers never wait for results (samplers, the grid): a cell
            races its configs when it is done, instead of at each decision.
        race_seeds: the seeds a race adds, in order (default: counting up past ``seeds``; a
            replay draws them from its grid's).
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
        race: racing.Race | None = None,
        race_at_end: bool = False,
        race_seeds: list[int] | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.race = race
        self.race_at_end = race_at_end
        top = max(seeds)
        self.sequence = [*seeds, *(race_seeds if race_seeds is not None else range(top + 1, top + 1 + (race.max_seeds if race else 0)))]
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
        self.held: dict[str, list[list[str]]] = {c: [] for c in self.cells}  # cell -> [group id, inner id] awaiting a race
        self.race_over = {c: False for c in self.cells}  # a cell's end race is done
        self.race_rounds = {c: 0 for c in self.cells}
        self.race_spent = {c: 0 for c in self.cells}  # trial-epochs the races added
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
        group = Group(cell, config, [inner_id] if inner_id else [], list(self.seeds))  # its own: a race adds seeds
        self.groups[gid] = group
        self.by_key[(cell, self._key(cell, config))] = gid
        self.queue.extend((gid, s) for s in self.seeds)
        return group

    def _tell(self, cell: str, inner_id: str, group: Group) -> None:
        mean = group.mean()
        group.told.append(inner_id)
        self.inner[cell].on_trial_complete(inner_id, None if mean is None else {"score": mean}, error=mean is None)

    def _answer(self, gid: str) -> None:
        """A done group's asks get its mean, or wait for the cell's race (a stepwise method)."""
        group = self.groups[gid]
        for inner_id in group.inner_ids:
            if inner_id in group.told or [gid, inner_id] in self.held[group.cell]:
                continue
            if self.race is not None and not self.race_at_end:
                self.held[group.cell].append([gid, inner_id])
            else:
                self._tell(group.cell, inner_id, group)

    # -- racing -----------------------------------------------------------------------
    def _busy(self, cell: str) -> bool:
        return any(self.groups[g].cell == cell for g, _ in self.queue) or any(
            self.groups[g].cell == cell for g, _ in self.live.values())

    def _epochs(self, group: Group) -> int:
        return int(group.config.get("epochs", self.base.get(group.cell, {}).get("epochs", 1)))

    def _race_step(self, cell: str) -> str:
        """One race round in ``cell`` when it is idle: queue the next seed for the configs still
        tied with the leader (QUEUED), or end the race and tell what it held (RESOLVED)."""
        if self.race is None or self._busy(cell):
            return IDLE
        if self.race_at_end:
            if not self.cell_done[cell] or self.race_over[cell]:
                return IDLE
            gids = [g for g, grp in self.groups.items() if grp.cell == cell and not grp.baseline and grp.done]
        else:
            gids = list(dict.fromkeys(g for g, _ in self.held[cell]))
        if not gids:
            return IDLE
        scores = {g: self.groups[g].scores for g in gids}
        tied = racing.alive(scores, self.race)  # scores are kept higher-is-better (on_trial_complete)
        seed = racing.next_seed(scores, tied, self.sequence) if len(tied) > 1 else None
        lacking: list[str] = []
        if seed is not None and max(len(scores[g]) for g in tied) < self.race.max_seeds:
            lacking = [g for g in tied if seed not in scores[g]]
            cost = {g: self._epochs(self.groups[g]) for g in lacking}
            left = None if self.race.budget is None else self.race.budget - self.race_spent[cell]
            if left is not None and sum(cost.values()) > left:  # a whole round does not fit: what of it does
                lacking = racing.affordable(lacking, scores, cost, left, tied[0]) if self.race.partial else []
            if lacking:
                self.race_rounds[cell] += 1
                for g in lacking:
                    group = self.groups[g]
                    group.seeds.append(seed)
                    group.rounds[seed] = self.race_rounds[cell]
                    self.queue.append((g, seed))
                self.race_spent[cell] += sum(cost[g] for g in lacking)
                return QUEUED
        if self.race_at_end:
            self.race_over[cell] = True
            return IDLE
        held, self.held[cell] = self.held[cell], []
        for g, inner_id in held:
            self._tell(cell, inner_id, self.groups[g])
        return RESOLVED

    def _ask(self, cell: str) -> bool:
        """Ask the cell's searcher for a new config; True when one (or a race's seeds) was queued."""
        searcher = self.inner[cell]
        for _ in range(self.max_redundant):
            if self.budget is not None and self.asked[cell] >= self.budget:
                self.cell_done[cell] = True
                return self._race_step(cell) == QUEUED  # a decision the budget cut still ends its race
            inner_id = f"{cell}#{self.n_asks}"
            self.n_asks += 1
            config = searcher.suggest(inner_id)
            if config is None:  # it waits for results: the held ones are raced now, then told
                step = self._race_step(cell)
                if step == RESOLVED:
                    continue
                return step == QUEUED
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
                self._answer(gid)  # known: answer now (or with its race), ask again
            # running: its result goes to both asks; ask again (a population takes a batch)
        self.cell_done[cell] = True
        return False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.queue:
            for i in range(len(self.cells)):
                cell = self.cells[(self.turn + i) % len(self.cells)]
                # a cell done asking (maybe in this very call) still races its configs when its method races at the end
                queued = (not self.cell_done[cell] and self._ask(cell)) or (self.cell_done[cell] and self._race_step(cell) == QUEUED)
                if queued:
                    self.turn = (self.turn + i + 1) % len(self.cells)
                    break
        if not self.queue:
            racing_on = self.race is not None and any(
                self.held[c] or self.race_at_end and not self.race_over[c] for c in self.cells)
            if all(self.cell_done.values()) and not self.live and not racing_on:
                return Searcher.FINISHED
            return None
        gid, seed = self.queue.pop(0)
        group = self.groups[gid]
        self.live[trial_id] = (gid, seed)
        point = {**group.config, "cell": group.cell, "seed": seed}
        if self.race is not None:
            point["race_round"] = group.rounds.get(seed, 0)
        return point

    def get_state(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "asked": self.asked,
            "cell_done": self.cell_done,
            "groups": {
                gid: {"cell": g.cell, "config": g.config, "inner_ids": g.inner_ids, "seeds": g.seeds,
                      "scores": [[seed, v] for seed, v in g.scores.items()], "duplicates": g.duplicates, "told": g.told,
                      "rounds": [[seed, r] for seed, r in g.rounds.items()]}
                for gid, g in self.groups.items()
            },
            "held": self.held,
            "race_over": self.race_over,
            "race_rounds": self.race_rounds,
            "race_spent": self.race_spent,
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
                       g.get("duplicates", []), g.get("told", list(g["inner_ids"]) if _done(g) else []),
                       {int(seed): int(r) for seed, r in g.get("rounds", [])})
            for gid, g in state["groups"].items()
        }
        # searches saved before racing: nothing held, no race run
        self.held = {c: [list(x) for x in state.get("held", {}).get(c, [])] for c in self.cells}
        self.race_over = {c: bool(state.get("race_over", {}).get(c, False)) for c in self.cells}
        self.race_rounds = {c: int(state.get("race_rounds", {}).get(c, 0)) for c in self.cells}
        self.race_spent = {c: int(state.get("race_spent", {}).get(c, 0)) for c in self.cells}
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
            self._answer(gid)


def _done(saved: dict[str, Any]) -> bool:
    """Whether a group saved before ``told`` was recorded had every seed in (then it was told)."""
    return {int(seed) for seed, _ in saved["scores"]} >= {int(x) for x in saved["seeds"]}
