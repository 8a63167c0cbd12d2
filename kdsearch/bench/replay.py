"""``kdsearch bench replay``: how often, and by how much, each method misses the grid's best.

Every committed cell with a full grid (``results/*/`` searches run with ``method: grid``)
becomes a table (config x seed -> score after each epoch); each method's own searcher is
replayed over it (:mod:`kdsearch.search.replay`) ``--replays`` times with different search
seeds and seed subsets, and stopped at 10%, 20% and 30% of the grid's trial-epochs. Per
method and budget: mean, 90th-percentile and worst regret (points below the grid's best),
and the share of replays within the grid best's own seed noise. Cells whose grid collapsed
(every config scoring alike) or too small to search are left out and listed. ``auto`` is the
method :func:`kdsearch.search.methods.choose` picks for each table's space on a CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kdsearch.bench import portable, write_result
from kdsearch.display import format_table
from kdsearch.errors import KDSearchError

BUDGETS = (0.1, 0.2, 0.3)
MIN_CONFIGS = 8  # a grid smaller than this has nothing for a method to find
TARGET = {"budget": 0.3, "mean_regret": 0.5, "worst_regret": 2.0}


def grid_folders(root: Path) -> tuple[list[Path], list[str]]:
    """Every committed full-grid search under ``root``, and the grid searches left out and why."""
    from kdsearch.results.store import ResultStore

    found, left_out = [], []
    for meta in sorted(root.glob("*/*/search.json")):
        store = ResultStore(meta.parent)
        if store.meta().get("method") != "grid" or not store.path("trials.parquet").is_file() or store.finished() is False:
            continue
        if store.spec().search.configs:  # arms of an experiment: a sampler would ask for configs nobody ran
            left_out.append(f"{meta.parent.name}: a list of configs (search.configs), not the grid of a space")
        else:
            found.append(meta.parent)
    return found, left_out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kdsearch.search.methods import METHODS, choose
    from kdsearch.search.replay import regrets, summary, tables_from_search

    root = Path(args.results or "results")
    unknown = [m for m in args.methods or [] if m not in METHODS]
    if unknown:
        raise KDSearchError(f"--methods: unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    if args.replays < 1:
        raise KDSearchError(f"--replays: at least 1 replay per method and cell, got {args.replays}")
    if not root.is_dir():
        raise KDSearchError(f"--results {root}: no such folder (it holds the committed grids: results/*/NAME-TIME/)")
    folders, left_out = grid_folders(root)
    tables = []
    for folder in folders:
        for t in tables_from_search(folder):
            where = f"{folder.name} {t.cell}"
            if t.missing:
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
    fewest = min(len(t.seeds) for t in tables)
    if not 1 <= args.seeds <= fewest:
        raise KDSearchError(f"--seeds: a replay uses 1..{fewest} of the grids' seeds, got {args.seeds}")
    methods = [m for m in (args.methods or METHODS) if not METHODS[m].auto]
    rows = []
    for t in tables:
        auto, why = choose(t.space, gpu=False)
        for m in methods:
            start = time.perf_counter()
            r = regrets(m, t, args.replays, BUDGETS, seeds_per_replay=args.seeds)
            rows.append(r.assign(table=f"{t.source} {t.cell}"))
            if m == auto:
                rows.append(r.assign(method="auto", table=f"{t.source} {t.cell}"))
            print(f"  {t.source} {t.cell} ({len(t.scores)} configs): {m} x {args.replays} in {time.perf_counter() - start:.0f} s",
                  flush=True)
    all_rows = pd.concat(rows, ignore_index=True)
    all_rows["cell"] = all_rows["table"]
    noise = {f"{t.source} {t.cell}": t.best_std_points for t in tables}
    overall = summary(all_rows, noise)
    per_table = pd.concat([summary(g, noise).assign(table=name) for name, g in all_rows.groupby("table")], ignore_index=True)
    at = overall[overall["budget"] == TARGET["budget"]].set_index("method")
    return {
        "budgets": list(BUDGETS),
        "replays_per_cell": args.replays,
        "seeds_per_replay": args.seeds,
        "tables": [{"search": t.source, "cell": t.cell, "configs": len(t.scores), "seeds": t.seeds, "epochs": t.epochs,
                    "trial_epochs": t.trial_epochs, "grid_best": t.mean(t.best), "grid_best_std_points": t.best_std_points,
                    "auto": choose(t.space, gpu=False)[0]} for t in tables],
        "left_out": left_out,
        "summary": overall.to_dict("records"),
        "per_table": per_table.to_dict("records"),
        "target": TARGET,
        # auto's pick depends on the space's size, so it is named per table, not once
        "auto_on_cpu": {f"{t.source} {t.cell}": choose(t.space, gpu=False)[0] for t in tables},
        "auto_meets_target": bool(len(at) and "auto" in at.index and at.loc["auto", "mean_regret"] <= TARGET["mean_regret"]
                                  and at.loc["auto", "worst_regret"] <= TARGET["worst_regret"]),
        "setup": {"results": portable(root), "date": time.strftime("%Y-%m-%d")},
    }


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = pd.DataFrame(result["summary"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, g) in enumerate(s.groupby("method", sort=True)):
        g = g.sort_values("budget")
        ax.plot(100 * g["budget"], g["mean_regret"], marker="o", color=f"C{i}", label=method)
        ax.fill_between(100 * g["budget"], g["mean_regret"], g["p90_regret"].clip(upper=g["mean_regret"].max() * 3 + 1),
                        color=f"C{i}", alpha=0.12)
    ax.axhline(TARGET["mean_regret"], color="black", linestyle=":", linewidth=1, label="target mean regret")
    ax.set_xlabel("budget (% of the grid's trial-epochs)")
    ax.set_ylabel("regret below the grid's best (points): mean, band to p90")
    ax.set_title(f"replays over {len(result['tables'])} committed grid cells, {result['replays_per_cell']} each")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict[str, Any]:
    result = run(args)
    s = pd.DataFrame(result["summary"])
    print(format_table(s.to_dict("records")))
    for line in result["left_out"]:
        print(f"left out: {line}")
    out = Path(args.out or "results/bench/replay.json")
    write_result(out, result)
    plot(result, out.with_suffix(".png"))
    print(f"written: {out.with_suffix('.png')}")
    return result
