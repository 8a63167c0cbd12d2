"""``kdsearch bench race``: what a race's budget buys when a round does not fit in it, whole
rounds only against partial rounds (``race.partial``), side by side.

The grid as the studies run it (3 seeds a config, then an end race of at most 6 seeds) is
replayed (:mod:`kdsearch.search.replay`) over every committed truth grid that ``kdsearch bench
replay`` takes, with the race's budget at 10%, 28% and 50% of the grid's own trial-epochs (28%:
the breadth study's 60 of 216). With whole rounds only, a round that costs more than is left
ends the race; with partial rounds, what is left seeds the leader and the challengers nearest
it by mean. Per budget and policy, over every replay of every table: mean, 90th-percentile and
worst regret (points below the 10-seed truth's best), the share of replays within 0.5 point of
it, how often the best set holds it, and the trial-epochs spent (share of the 10-seed grid).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kdsearch.bench import portable, pyplot, save_figure, write_summary
from kdsearch.bench.replay import FIRST_SEEDS, replay_tables
from kdsearch.errors import KDSearchError

SHARES = (0.1, 0.28, 0.5)  # the race's budget, as a share of the grid's own trial-epochs (3 seeds a config)
MAX_SEEDS = 6  # as the breadth study races: the sign-flip verdicts need 6, and confirmation gives them afresh
POLICIES = {False: "whole rounds", True: "partial rounds"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kdsearch.search.race import Race, as_dict
    from kdsearch.search.replay import regrets, summary

    root = Path(args.results or "results")
    if args.replays < 1:
        raise KDSearchError(f"--replays: at least 1 replay per policy and grid cell, got {args.replays}")
    if not root.is_dir():
        raise KDSearchError(f"--results {root}: no such folder (it holds the committed grids: results/*/NAME-TIME/)")
    tables, left_out = replay_tables(root)
    rows = []
    for t in tables:
        own = len(t.scores) * FIRST_SEEDS * t.epochs
        for share in SHARES:
            for partial, policy in POLICIES.items():
                start = time.perf_counter()
                race = Race(max_seeds=MAX_SEEDS, budget=max(1, round(share * own)), partial=partial)
                r = regrets("grid", t, args.replays, [1.0], FIRST_SEEDS, race)  # no outer limit: the race's budget is the one
                rows.append(r.assign(method=policy, budget=share, table=f"{t.source} {t.cell}"))
                print(f"  {t.source} {t.cell}: race budget {race.budget} ({share:.0%}), {policy} x {args.replays} "
                      f"in {time.perf_counter() - start:.0f} s", flush=True)
    all_rows = pd.concat(rows, ignore_index=True)
    all_rows["cell"] = all_rows["table"]
    noise = {f"{t.source} {t.cell}": t.best_std_points for t in tables}
    overall = summary(all_rows, noise).rename(columns={"method": "policy", "budget": "race_budget"})
    per_table = pd.concat([summary(g, noise).assign(table=name) for name, g in all_rows.groupby("table")], ignore_index=True)
    per_table = per_table.rename(columns={"method": "policy", "budget": "race_budget"})
    return {
        "race_budgets": list(SHARES),
        "replays_per_cell": args.replays,
        "first_seeds": FIRST_SEEDS,
        "race": {k: v for k, v in (as_dict(Race(max_seeds=MAX_SEEDS)) or {}).items() if k not in ("budget", "partial")},
        "tables": [{"search": t.source, "cell": t.cell, "configs": len(t.scores), "seeds": t.seeds, "epochs": t.epochs,
                    "grid_trial_epochs": len(t.scores) * FIRST_SEEDS * t.epochs} for t in tables],
        "left_out": left_out,
        "summary": overall.drop(columns=["race"]).to_dict("records"),
        "per_table": per_table.drop(columns=["race"]).to_dict("records"),
        "setup": {"results": portable(root), "date": time.strftime("%Y-%m-%d")},
    }


def plot(result: dict[str, Any], out: Path) -> None:
    """Per table, mean regret against the race's budget: solid partial rounds, dashed whole rounds."""
    plt = pyplot()

    s = pd.DataFrame(result["per_table"])
    fig, (ax, ax_hit) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (table, g) in enumerate(s.groupby("table", sort=True)):
        for policy, h in g.groupby("policy"):
            h = h.sort_values("race_budget")
            style = "-" if policy == POLICIES[True] else "--"
            ax.plot(100 * h["race_budget"], h["mean_regret"], style, marker="o", color=f"C{i}", label=f"{table}: {policy}")
            ax_hit.plot(100 * h["race_budget"], 100 * h["within_half_point"], style, marker="o", color=f"C{i}",
                        label=f"{table}: {policy}")
    ax.set_xlabel("race budget (% of the 3-seed grid's trial-epochs)")
    ax.set_ylabel("mean regret below the true best (points)")
    ax.set_title(f"the grid + an end race, {result['replays_per_cell']} replays a cell")
    ax_hit.set_xlabel("race budget (% of the 3-seed grid's trial-epochs)")
    ax_hit.set_ylabel("% of replays within 0.5 point of the best")
    ax_hit.legend(fontsize=7)
    save_figure(fig, out)


def main(args: argparse.Namespace) -> dict[str, Any]:
    result = run(args)
    write_summary(args.out or "results/bench/race.json", result, plot)
    return result
