"""``kdsearch bench search``: greedy against the full grid on one cell, in one run.

Both searches share the data, the teacher pool and one Ray instance. Reported: trials
each used, each one's best config (mean over paired seeds), and Ray's per-trial
overhead, the wall time from one trial's last report to the next trial's first training
step in the same worker process (reused actors).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kdsearch.bench import bench_spec, portable, write_result
from kdsearch.display import format_table
from kdsearch.results.store import ResultStore
from kdsearch.results.summary import best_per_cell
from kdsearch.knobs import BASELINE_STAGE


def trial_overheads(epochs: pd.DataFrame) -> list[float]:
    """Gaps between consecutive trials in the same worker process, in seconds."""
    spans = epochs.groupby("trial_id").agg(pid=("pid", "first"), start=("first_step_ts", "min"), end=("report_ts", "max"))
    gaps: list[float] = []
    for _, g in spans.sort_values("start").groupby("pid"):
        gaps += (g["start"].to_numpy()[1:] - g["end"].to_numpy()[:-1]).tolist()
    return gaps


def _summary(folder: Path, metric: str) -> dict[str, Any]:
    store = ResultStore(folder)
    trials = store.trials()
    search = trials[trials["stage"] != BASELINE_STAGE]
    (cell, best), = best_per_cell(trials, metric).items()
    return {
        "folder": portable(folder),
        "cell": cell,
        "trials": int(len(search)),
        "configs": int(search["config_key"].nunique()),
        "best": best[metric],
        "best_std": best["std"],
        "best_config": best["config"],
        "gaps": trial_overheads(store.epochs()),
        "trial_s": float(search["wall_s"].mean()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from kdsearch.local_ray import start_local_ray
    from kdsearch.search.runner import run_search
    from kdsearch.spec import load_spec

    overrides = [
        "name=bench-search",
        f"search.seeds={json.dumps(list(range(args.seeds)))}",
        f"search.storage={args.storage}",
        *(["data.max_train_examples=%d" % args.examples] if args.examples else []),
        f"student.train.epochs={args.epochs}",
        *args.set,
    ]
    spec_path = bench_spec(args.spec, "quick")
    start_local_ray(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    out: dict[str, Any] = {}
    try:
        for method in ("greedy", "grid"):
            spec = load_spec(spec_path, [*overrides, f"search.method={method}"])
            print(f"== bench search: {method}", flush=True)
            start = time.time()
            folder = run_search(spec)
            out[method] = _summary(folder, spec.search.metric)
            out[method]["wall_s"] = time.time() - start
    finally:
        ray.shutdown()
    gaps = out["greedy"]["gaps"] + out["grid"]["gaps"]
    for m in out.values():
        m["gaps"] = [round(g, 3) for g in m["gaps"]]
    g, f = out["greedy"], out["grid"]
    return {
        "greedy_trials": g["trials"],
        "grid_trials": f["trials"],
        "trial_fraction": g["trials"] / f["trials"],
        "greedy_best": g["best"],
        "grid_best": f["best"],
        "gap_points": 100 * (f["best"] - g["best"]),
        "overhead_s": float(pd.Series(gaps).median()) if gaps else None,
        "overhead_mean_s": float(pd.Series(gaps).mean()) if gaps else None,
        "targets": {"trial_fraction": 0.30, "gap_points": 0.5, "overhead_s": 1.0},
        "greedy": g,
        "grid": f,
        "setup": {"spec": portable(spec_path), "overrides": overrides, "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()},
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    result = run(args)
    rows = [
        {
            "method": m,
            "trials": result[m]["trials"],
            "configs": result[m]["configs"],
            "best (mean over seeds)": result[m]["best"],
            "± std": result[m]["best_std"],
            "mean trial s": result[m]["trial_s"],
            "wall s": result[m]["wall_s"],
            "best config": " ".join(f"{k}={v}" for k, v in result[m]["best_config"].items()),
        }
        for m in ("greedy", "grid")
    ]
    print(format_table(rows))
    print(
        f"greedy used {100 * result['trial_fraction']:.0f}% of the grid's trials (target <= 30%), "
        f"{result['gap_points']:+.2f} points from the grid's best (target within 0.5); "
        f"per-trial overhead median {result['overhead_s']:.2f} s, mean {result['overhead_mean_s']:.2f} s (target <= 1 s)"
    )
    write_result(args.out or "results/bench/search.json", result)
    return result
