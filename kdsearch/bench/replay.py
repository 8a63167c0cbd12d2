"""``kdsearch bench replay``: how often, and by how much, each method misses the true best,
with and without racing, when seeds are part of the budget.

Every committed cell with a full grid of at least ``TRUTH_SEEDS`` seeds (``results/*/``
searches run with ``method: grid``, as ``results/grids/truth-*``) becomes a table (config x
seed -> score after each epoch) whose mean over every seed is the truth. Each method's own
searcher is replayed over it (:mod:`kdsearch.search.replay`) ``--replays`` times, each with
its own search seed and its own draw of the grid's seeds: the first ``--seeds`` are the
method's, a race adds the others in that order, and every (config, seed, epochs) asked is
paid for. At 10%, 20% and 30% of the grid's trial-epochs (every config on every seed), per
method, racing or not: mean, 90th-percentile and worst regret (points below the true best),
the share of replays naming a config within 0.5 point of it, and the share whose best set
(the configs a paired test cannot separate from the named one) holds it. Grids of fewer
seeds, collapsed or too small to search are left out and listed. ``auto`` is the method
:func:`kdsearch.search.methods.choose` picks for each table's space on a CPU, racing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kdsearch.bench import portable, pyplot, save_figure, write_summary
from kdsearch.errors import KDSearchError

BUDGETS = (0.1, 0.2, 0.3)
MIN_CONFIGS = 8  # a grid smaller than this has nothing for a method to find
TRUTH_SEEDS = 10  # fewer seeds give no truth to measure a named config against (the best's own spread is 1-14 points)
FIRST_SEEDS = 3  # the method's own seeds per config: the race's t test separates from 3 (bench calibration)
TARGET = {"budget": 0.3, "mean_regret": 0.5, "within_half_point": 0.90, "best_set_covers": 0.95}


def grid_folders(root: Path) -> tuple[list[Path], list[str]]:
    """Every committed full-grid search under ``root``, and the grid searches left out and why."""
    from kdsearch.results.store import ResultStore

    found, left_out = [], []
    for meta in sorted(root.glob("*/*/search.json")):
        store = ResultStore(meta.parent)
        if store.meta().get("method") != "grid" or not store.path("trials.parquet").is_file() or store.finished() is False:
            continue
        if store.spec(registries=False).search.configs:  # arms of an experiment: a sampler would ask for configs nobody ran
            left_out.append(f"{meta.parent.name}: a list of configs (search.configs), not the grid of a space")
        else:
            found.append(meta.parent)
    return found, left_out


def replay_tables(root: Path) -> tuple[list[Any], list[str]]:
    """The committed full grids under ``root`` that can be a truth (as GridTables), and what was
    left out and why; none is one line naming why."""
    from kdsearch.search.replay import tables_from_search

    folders, left_out = grid_folders(root)
    tables = []
    for folder in folders:
        for t in tables_from_search(folder):
            where = f"{folder.name} {t.cell}"
            if len(t.seeds) < TRUTH_SEEDS:
                left_out.append(f"{where}: {len(t.seeds)} seeds, fewer than the {TRUTH_SEEDS} a truth needs")
            elif t.missing:
                left_out.append(f"{where}: {t.missing} config(s) of its grid not finished on every seed")
            elif len(t.scores) < MIN_CONFIGS:
                left_out.append(f"{where}: {len(t.scores)} configs, too few to search")
            elif t.collapsed():
                left_out.append(f"{where}: collapsed (every config scores alike)")
            else:
                tables.append(t)
    if not tables:
        why = f": {'; '.join(left_out)}" if left_out else ""
        raise KDSearchError(f"no full grid to replay under {root} (a finished search with method grid, as results/grids/){why}")
    return tables, left_out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kdsearch.search.methods import METHODS, choose
    from kdsearch.search.race import Race, as_dict as race_settings
    from kdsearch.search.replay import regrets, summary

    root = Path(args.results or "results")
    unknown = [m for m in args.methods or [] if m not in METHODS]
    if unknown:
        raise KDSearchError(f"--methods: unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    if args.replays < 1:
        raise KDSearchError(f"--replays: at least 1 replay per method and cell, got {args.replays}")
    if not root.is_dir():
        raise KDSearchError(f"--results {root}: no such folder (it holds the committed grids: results/*/NAME-TIME/)")
    tables, left_out = replay_tables(root)
    fewest = min(len(t.seeds) for t in tables)
    first = args.seeds if args.seeds is not None else FIRST_SEEDS
    if not 1 <= first <= fewest:
        raise KDSearchError(f"--seeds: a replay uses 1..{fewest} of the grids' seeds, got {first}")
    asked = args.methods or list(METHODS)
    methods = [m for m in asked if not METHODS[m].auto]
    rows = []
    for t in tables:
        auto, why = choose(t.space, gpu=False)
        # `auto` alone (--methods auto) replays only what it picks here, raced as it runs
        todo = methods + ([auto] if auto not in methods and any(METHODS[m].auto for m in asked) else [])
        for m in todo:
            for race in ((None, Race()) if m in methods else (Race(),)):
                start = time.perf_counter()
                r = regrets(m, t, args.replays, BUDGETS, first, race)
                rows.append(r.assign(table=f"{t.source} {t.cell}"))
                if m == auto and race is not None:  # auto races
                    rows.append(r.assign(method="auto", table=f"{t.source} {t.cell}"))
                print(f"  {t.source} {t.cell} ({len(t.scores)} configs): {m}{' raced' if race else ''} x {args.replays} "
                      f"in {time.perf_counter() - start:.0f} s", flush=True)
    all_rows = pd.concat(rows, ignore_index=True)
    all_rows["cell"] = all_rows["table"]
    noise = {f"{t.source} {t.cell}": t.best_std_points for t in tables}
    overall = summary(all_rows, noise)
    per_table = pd.concat([summary(g, noise).assign(table=name) for name, g in all_rows.groupby("table")], ignore_index=True)
    auto = per_table[(per_table["method"] == "auto") & (per_table["budget"] == TARGET["budget"])]
    return {
        "budgets": list(BUDGETS),
        "replays_per_cell": args.replays,
        "first_seeds": first,
        "race": race_settings(Race()),
        "tables": [{"search": t.source, "cell": t.cell, "configs": len(t.scores), "seeds": t.seeds, "epochs": t.epochs,
                    "trial_epochs": t.trial_epochs, "grid_best": t.mean(t.best), "grid_best_std_points": t.best_std_points,
                    "auto": choose(t.space, gpu=False)[0]} for t in tables],
        "left_out": left_out,
        "summary": overall.to_dict("records"),
        "per_table": per_table.to_dict("records"),
        "target": TARGET,
        # auto's pick depends on the space's size, so it is named per table, not once
        "auto_on_cpu": {f"{t.source} {t.cell}": choose(t.space, gpu=False)[0] for t in tables},
        # on every cell: within 0.5 point and covered often enough, small mean regret
        "auto_meets_target": bool(len(auto) == len(tables) and (auto["mean_regret"] <= TARGET["mean_regret"]).all()
                                  and (auto["within_half_point"] >= TARGET["within_half_point"]).all()
                                  and (auto["best_set_covers"] >= TARGET["best_set_covers"]).all()),
        "setup": {"results": portable(root), "date": time.strftime("%Y-%m-%d")},
    }


def plot(result: dict[str, Any], out: Path) -> None:
    """Mean regret (band to p90) and the share within 0.5 point, against budget: solid raced, dashed not."""
    plt = pyplot()

    s = pd.DataFrame(result["summary"])
    fig, (ax, ax_hit) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (method, g) in enumerate(s.groupby("method", sort=True)):
        for raced, h in g.groupby("race"):
            h = h.sort_values("budget")
            style = "-" if raced else "--"
            label = f"{method}{' raced' if raced else ''}"
            ax.plot(100 * h["budget"], h["mean_regret"], style, marker="o", color=f"C{i}", label=label)
            if raced:
                ax.fill_between(100 * h["budget"], h["mean_regret"], h["p90_regret"].clip(upper=h["mean_regret"].max() * 3 + 1),
                                color=f"C{i}", alpha=0.12)
            ax_hit.plot(100 * h["budget"], 100 * h["within_half_point"], style, marker="o", color=f"C{i}", label=label)
    ax.axhline(TARGET["mean_regret"], color="black", linestyle=":", linewidth=1, label="target mean regret")
    ax.set_xlabel("budget (% of the 10-seed grid's trial-epochs)")
    ax.set_ylabel("regret below the true best (points): mean, band to p90")
    ax.set_title(f"replays over {len(result['tables'])} grid cells, {result['replays_per_cell']} each")
    ax_hit.axhline(100 * TARGET["within_half_point"], color="black", linestyle=":", linewidth=1)
    ax_hit.set_xlabel("budget (% of the 10-seed grid's trial-epochs)")
    ax_hit.set_ylabel("% of replays naming a config within 0.5 point of the best")
    ax_hit.legend(fontsize=7, ncol=2)
    save_figure(fig, out)


def main(args: argparse.Namespace) -> dict[str, Any]:
    result = run(args)
    write_summary(args.out or "results/bench/replay.json", result, plot)
    return result
