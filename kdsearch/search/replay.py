"""Replaying a search method over a finished full grid, without training anything.

A committed full grid is a table: (config, seed) -> its validation score after each epoch.
A replay drives a method's own searcher (the class a live search builds, from the method
table) through the protocol Ray Tune drives it with, ``suggest`` then
``on_trial_complete``, wrapped in the same :class:`~kdsearch.search.cells.CellSearcher`
that pairs seeds; each trial's result is looked up instead of trained, and costs its epochs
(a halving rung's shorter run reads the grid's score after that many epochs: the same
student, stopped early, where the live rung decays its learning rate to its own end).
At given budgets of trial-epochs the replay notes what the method would answer: the best
config (mean over its seeds) among those it has run in full. Regret is that config's mean
over all of the grid's seeds below the grid's best, in points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdsearch import knobs
from kdsearch.knobs import BASELINE_STAGE
from kdsearch.search.race import Race
from kdsearch.search.space import Space

METRIC = "val_score"


@dataclass
class GridTable:
    """A cell's full grid: per (config key, seed), the validation score after each epoch."""

    cell: str
    space: Space
    seeds: list[int]
    epochs: int
    scores: dict[str, dict[int, list[float]]]  # config key (full length) -> seed -> score after epoch 1..epochs
    source: str = ""
    missing: int = 0  # configs of the space's grid with no finished row on every seed
    _means: dict[str, float] = field(default_factory=dict, repr=False)

    def key(self, config: dict[str, Any]) -> str:
        """The key of ``config`` trained to full length (a halving rung's ``epochs`` set aside)."""
        return self.space.key({k: v for k, v in config.items() if k != "epochs"})

    def score(self, config: dict[str, Any], seed: int) -> float:
        epochs = int(config.get("epochs", self.epochs))
        per_epoch = self.scores[self.key(config)][seed]
        return per_epoch[min(epochs, len(per_epoch)) - 1]

    def mean(self, key: str) -> float:
        if key not in self._means:
            vals = [s[-1] for s in self.scores[key].values()]
            self._means[key] = float(np.mean(vals)) if vals and all(v == v for v in vals) else -math.inf
        return self._means[key]

    @property
    def best(self) -> str:
        return max(self.scores, key=self.mean)

    @property
    def best_std_points(self) -> float:
        """The grid best's own spread over seeds (points): a regret below it is inside its noise."""
        return 100 * float(np.std([s[-1] for s in self.scores[self.best].values()], ddof=1))

    @property
    def trial_epochs(self) -> int:
        return len(self.scores) * len(self.seeds) * self.epochs

    def collapsed(self) -> bool:
        """Every config scores as every other (one class everywhere): nothing to find."""
        return len({round(self.mean(k), 6) for k in self.scores}) <= 1


def tables_from_search(folder: str | Path) -> list[GridTable]:
    """The cells of a finished full-grid search as tables (only configs every seed finished)."""
    from kdsearch.results.store import ResultStore

    store = ResultStore(folder)
    spec = store.spec(registries=False)
    trials, epochs = store.trials(), store.epochs()
    ok = trials[(trials["status"] == "ok") & (trials["stage"] != BASELINE_STAGE)]
    per_trial = epochs.sort_values("epoch").groupby("trial_id")[METRIC].apply(list)
    out = []
    for cell, rows in ok.groupby("cell", sort=True):
        student = next(st for st in spec.student_specs if str(cell).endswith("/" + rows["student"].iloc[0].split("/")[-1]))
        space = Space(spec.search.space, spec.distill, student.train, configs=spec.search.configs)
        full = int(student.train.epochs)
        scores: dict[str, dict[int, list[float]]] = {}
        for r in rows.to_dict("records"):
            config = {k: r[k] for k in space.names}
            if r.get("tau_s_same"):
                config["tau_s"] = knobs.SAME
            series = per_trial.get(r["trial_id"], [r[METRIC]])
            series = (list(series) + [r[METRIC]] * full)[:full] if len(series) < full else list(series)[:full]
            series[-1] = float(r[METRIC])
            scores.setdefault(space.key(config), {})[int(r["seed"])] = [float(x) for x in series]
        seeds = sorted(set(ok["seed"].astype(int)))
        complete = {k: v for k, v in scores.items() if set(v) == set(seeds)}
        missing = sum(1 for c in space.grid() if space.key(c) not in complete)
        out.append(GridTable(str(cell), space, seeds, full, complete, source=Path(folder).name, missing=missing))
    return out


@dataclass
class ReplayResult:
    picks: dict[float, str | None]  # budget (share of the grid's trial-epochs) -> the key the method names
    best_sets: dict[float, list[str]]  # budget -> the configs a paired test cannot separate from it
    spent: int  # trial-epochs asked in all, every (config, seed) it asked at its epochs
    configs: int  # distinct configs run in full
    spent_at: dict[float, int] = field(default_factory=dict)  # budget -> trial-epochs asked when it answered


def replay(method: str, table: GridTable, order: Sequence[int], first: int, search_seed: int, budgets: Sequence[float],
           race: Race | None = None) -> ReplayResult:
    """Run ``method``'s searcher over ``table`` until the largest budget, paying for every
    (config, seed) it asks: the first ``first`` seeds of ``order`` (the grid's seeds as this
    replay draws them) are the method's own, a race adds the rest in that order.

    ``budgets`` are shares of the grid's trial-epochs (every config on every seed). At each,
    the answer is the leader by its mean over the seeds it got, among the configs run in full
    on at least the first seeds, and the best set: those a paired test cannot separate from it.
    """
    from ray.tune.search import Searcher

    from kdsearch.results import stats
    from kdsearch.search.cells import CellSearcher
    from kdsearch.search.methods import METHODS, BuildContext

    m = METHODS[method]
    inner = m.build(BuildContext(table.space, table.cell, f"replay-{search_seed}", None, search_seed, None))
    seeds = list(order[:first])
    cells = CellSearcher({table.cell: inner}, seeds, METRIC, base={table.cell: table.space.base},
                         keys={table.cell: table.space.key}, race=race, race_at_end=m.races_at_end,
                         race_seeds=list(order[first:]))
    limits = sorted(b * table.trial_epochs for b in budgets)
    done: dict[str, dict[int, float]] = {}
    picks: dict[float, str | None] = {}
    sets: dict[float, list[str]] = {}
    spent_at: dict[float, int] = {}
    test = race or Race()
    spent, n = 0, 0

    def answer(budget: float) -> None:
        full = {k: v for k, v in done.items() if set(seeds) <= set(v)}
        picks[budget] = stats.leader(full) if full else None
        sets[budget] = stats.best_set(full, test.test, test.level, test.min_seeds) if full else []
        spent_at[budget] = spent

    while True:
        point = cells.suggest(f"t{n}")
        if point is None or point == Searcher.FINISHED:
            break
        config = {k: v for k, v in point.items() if k in knobs.KNOBS}
        cost = int(config.get("epochs", table.epochs))
        while limits and spent + cost > limits[0]:  # this trial would cross a budget: note the answer there
            answer(limits.pop(0) / table.trial_epochs)
        if not limits:
            break
        spent += cost
        score = table.score(config, int(point["seed"]))
        if cost == table.epochs:
            done.setdefault(table.key(config), {})[int(point["seed"])] = score
        cells.on_trial_complete(f"t{n}", {METRIC: score})
        n += 1
    for limit in limits:  # finished under the budget: its final answer stands
        answer(limit / table.trial_epochs)
    return ReplayResult(picks, sets, spent, sum(set(seeds) <= set(v) for v in done.values()), spent_at)


def regrets(method: str, table: GridTable, replays: int, budgets: Sequence[float], first: int,
            race: Race | None = None, rng_seed: int = 0) -> pd.DataFrame:
    """``replays`` replays of ``method`` on ``table``, each with its own search seed and its own
    draw of the grid's seeds (the first ``first`` are the method's, a race adds the others in
    that order); a row per (replay, budget), measured against the grid's truth (every seed)."""
    rng = np.random.default_rng(rng_seed)
    truth = table.best
    best = table.mean(truth)
    rows = []
    for i in range(replays):
        order = rng.permutation(table.seeds).tolist()
        result = replay(method, table, order, first, search_seed=i, budgets=budgets, race=race)
        for budget, pick in result.picks.items():
            regret = math.nan if pick is None else 100 * (best - table.mean(pick))
            named = result.best_sets[budget]
            rows.append({"method": method, "race": race is not None, "cell": table.cell, "replay": i,
                         "budget": round(budget, 4), "first_seeds": first, "regret": regret, "found": pick is not None,
                         # a config tied with the truth's best over every seed is the best too (on BBC News
                         # t_hs and t_ll are one checkpoint: their configs train alike, and either is "it")
                         "within_half": bool(pick is not None and regret <= 0.5),
                         "covered": any(table.mean(k) >= best - 1e-12 for k in named),
                         "best_set": len(named), "spent": result.spent_at[budget] / table.trial_epochs})
    return pd.DataFrame(rows)


def summary(rows: pd.DataFrame, noise: dict[str, float]) -> pd.DataFrame:
    """Per method, racing or not, and budget, over every replay of every cell: mean, p90 and
    worst regret (points; a replay that found nothing counts as the worst), the share of replays
    naming a config within 0.5 point of the true best, the share whose best set holds the true
    best (and the set's mean size), and the share within the grid best's own seed noise."""
    rows = rows.copy()
    rows["noise"] = rows["cell"].map(noise)
    rows["regret"] = rows["regret"].fillna(np.inf)
    out = []
    for (method, raced, budget), g in rows.groupby(["method", "race", "budget"], sort=True):
        finite = g["regret"].replace(np.inf, np.nan)
        out.append({"method": method, "race": bool(raced), "budget": budget, "replays": int(len(g)),
                    "mean_regret": float(finite.mean()), "p90_regret": float(np.percentile(g["regret"], 90)),
                    "worst_regret": float(g["regret"].max()), "within_half_point": float(g["within_half"].mean()),
                    "best_set_covers": float(g["covered"].mean()), "best_set_size": float(g["best_set"].mean()),
                    "within_noise": float((g["regret"] <= g["noise"]).mean()), "found": float(g["found"].mean()),
                    "spent": float(g["spent"].mean())})  # share of the grid's trial-epochs
    return pd.DataFrame(out)
