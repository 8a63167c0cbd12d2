"""Confirmation seeds: what a search picked, trained again on seeds it was not picked on.

The best of many configs, compared with a baseline on the seeds it was picked on, looks
better than it is (the seeds that flattered it are the reason it was picked: with 24 configs
all equal to no KD, half of such comparisons called the best "a real gain"). So when a search
ends, each cell's best config, its no-KD baseline and the paper's recommendation
(:class:`kdsearch.results.summary.Picks`) train again on ``search.confirm_seeds`` fresh seeds,
paired across the three, and every verdict is read from those rows (``role: confirm``) on the
test split. ``kdsearch confirm DIR`` adds them to a finished search, or more of them: it runs
only the (config, seed) points that have no row yet, so a stopped one continues by running
it again.

Confirmation seeds count up from :data:`CONFIRM_SEEDS_FROM`, past any selection seed (a race
adds selection seeds counting up from the spec's), so the two never meet. Nothing here
imports Ray: the runner trains the points.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from kdsearch import knobs
from kdsearch.errors import KDSearchError
from kdsearch.knobs import BASELINE_STAGE
from kdsearch.results.store import CONFIRM
from kdsearch.results.summary import config_table, picks

CONFIRM_SEEDS_FROM = 100_000


def confirm_seeds(selection: Iterable[int], n: int) -> list[int]:
    """The first ``n`` confirmation seeds: from :data:`CONFIRM_SEEDS_FROM` up, none a selection seed."""
    taken = {int(s) for s in selection}
    out: list[int] = []
    seed = CONFIRM_SEEDS_FROM
    while len(out) < n:
        if seed not in taken:
            out.append(seed)
        seed += 1
    return out


def _targets(select: pd.DataFrame, metric: str, mode: str, every: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """Cell -> config key -> (role, config): what each cell confirms."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for cell, p in picks(select, metric, mode).items():
        out[cell] = {key: {"role": role, "config": config} for role, (key, config) in reversed(p.configs().items())}
    if every:  # pre-set arms (an objectives grid): each of them, not just what was picked
        table = config_table(select, metric)
        for _, row in table[(table["failed"] == 0) & (table["seeds"] > 0)].iterrows():
            config = knobs.from_row({k: v.item() if hasattr(v, "item") else v for k, v in row.items()})
            out.setdefault(str(row["cell"]), {}).setdefault(str(row["config_key"]), {"role": "config", "config": config})
    return out


def points(select: pd.DataFrame, confirm: pd.DataFrame, metric: str, mode: str, n_seeds: int,
           cells: Iterable[str] | None = None, every: bool = False) -> list[dict[str, Any]]:
    """The (cell, config, seed) points still to train so that each confirmed config has
    ``n_seeds`` confirmation seeds; a point with a finished or diverged row is not run again.

    Points are ordered seed by seed, so that a stopped confirmation leaves whole pairs.
    """
    if select.empty:
        raise KDSearchError("nothing to confirm: the search has no finished trial")
    targets = _targets(select, metric, mode, every)
    wanted = set(cells) if cells is not None else None
    if wanted is not None:
        unknown = wanted - set(select["cell"].astype(str))
        if unknown:
            raise KDSearchError(f"--cell {sorted(unknown)[0]}: no such cell (cells: {', '.join(sorted(set(select['cell'].astype(str))))})")
        targets = {c: t for c, t in targets.items() if c in wanted}
    seeds = confirm_seeds(select["seed"].astype(int), n_seeds)
    have: set[tuple[str, str, int]] = set()
    if not confirm.empty:
        kept = confirm[confirm["status"].isin(["ok", "diverged"])]
        have = {(str(c), str(k), int(s)) for c, k, s in zip(kept["cell"], kept["config_key"], kept["seed"])}
    out = []
    for seed in seeds:
        for cell, configs in targets.items():
            for key, t in configs.items():
                if (cell, key, seed) not in have:
                    # no KD keeps its stage: readers tell the baseline from KD configs by it
                    stage = BASELINE_STAGE if not knobs.uses_teacher(t["config"]) else f"confirm:{t['role']}"
                    out.append({**t["config"], "cell": cell, "seed": seed, "stage": stage, "role": CONFIRM})
    return out


def nothing_left(select: pd.DataFrame, metric: str, mode: str, n_seeds: int, every: bool = False) -> str:
    """Why :func:`points` found nothing to train, in one line."""
    if not every and not picks(select, metric, mode):
        return "nothing to confirm: no cell names a best config (every config failed or collapsed to one class)"
    return f"every confirmed config has its {n_seeds} fresh seed(s) already"
