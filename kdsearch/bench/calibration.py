"""``kdsearch bench calibration``: how often a verdict says "real" when nothing is, and how
often it finds what is.

Simulated paired differences go through each test of :data:`kdsearch.results.stats.TESTS`
and through the percentile bootstrap kdsearch used before (``bootstrap (before)``: "real"
when its 95% interval excluded 0 over at least 3 seeds), side by side:

- **A/A false-positive rate** at n = 2, 3, 5, 8, 10 paired seeds, from (a) Gaussian null
  data (a seed effect both arms share, independent noise), (b) the same with a 15% chance
  per arm and seed of collapse (the majority class, 20-40 points down), (c) pairs of
  configs of the committed full grids, seed by seed, with which arm a seed's score belongs
  to shuffled;
- **best of K identical configs against an identical baseline** (K = 8, 24, 168), judged
  on the seeds the best was picked on, or on fresh confirmation seeds;
- **power** at true gains of 1, 2 and 5 points, with the paired seed spread of the
  committed grids.

The target: every false-positive rate of the verdict test at or below the level, within
the Monte Carlo error (1.96 sqrt(level (1 - level) / draws): 0.96 points at 2,000 draws).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdsearch.bench import portable, pyplot, save_figure, write_result
from kdsearch.display import format_table
from kdsearch.results import stats

SEEDS = (2, 3, 5, 8, 10)
KS = (8, 24, 168)
GAINS = (1.0, 2.0, 5.0)  # points
POWER_SEEDS = (2, 3, 5, 6, 8, 10)
CONFIRM = (3, 6)
COLLAPSE_P = 0.15
NOISE = 1.0  # points of independent noise per arm and seed (the tests are scale-free: only tails matter)
SEED_EFFECT = 2.0  # points both arms share on a seed (cancels in a paired difference)
DRAWS = 2000
BOOT = 1000


def bootstrap_before(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The verdict kdsearch gave before: the 95% percentile bootstrap interval of the mean
    excludes 0, with at least 3 seeds (rows of ``d``: comparisons)."""
    draws, n = d.shape
    if n < 3:
        return np.zeros(draws, dtype=bool)
    out = np.zeros(draws, dtype=bool)
    for lo in range(0, draws, 200):  # chunks: draws x BOOT x n floats at once
        chunk = d[lo:lo + 200]
        idx = rng.integers(0, n, size=(len(chunk), BOOT, n))
        means = np.take_along_axis(chunk[:, None, :].repeat(BOOT, axis=1), idx, axis=2).mean(axis=2)
        low, high = np.percentile(means, [2.5, 97.5], axis=1)
        out[lo:lo + 200] = (low > 0) | (high < 0)
    return out


def rejects(d: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Whether each row of ``d`` is called a real difference, per test."""
    out = {name: test.pvalues(d) <= stats.LEVEL for name, test in stats.TESTS.items()}
    out["bootstrap (before)"] = bootstrap_before(d, rng)
    return out


def _arm(rng: np.random.Generator, shape: tuple[int, ...], collapse: float) -> np.ndarray:
    """Scores (points) of one arm around 0: noise, and collapses to the majority class."""
    x = rng.normal(0.0, NOISE, shape)
    if collapse:
        fell = rng.random(shape) < collapse
        x = np.where(fell, -rng.uniform(20.0, 40.0, shape), x)
    return x


def null_gaussian(rng: np.random.Generator, draws: int, n: int) -> np.ndarray:
    seed = rng.normal(0.0, SEED_EFFECT, (draws, n))
    return (seed + _arm(rng, (draws, n), 0.0)) - (seed + _arm(rng, (draws, n), 0.0))


def null_collapse(rng: np.random.Generator, draws: int, n: int) -> np.ndarray:
    seed = rng.normal(0.0, SEED_EFFECT, (draws, n))
    return (seed + _arm(rng, (draws, n), COLLAPSE_P)) - (seed + _arm(rng, (draws, n), COLLAPSE_P))


def grid_scores(root: Path) -> list[np.ndarray]:
    """Per committed full-grid cell: configs x seeds of validation scores (points), configs
    that finished every seed."""
    from kdsearch.bench.replay import grid_folders
    from kdsearch.knobs import BASELINE_STAGE
    from kdsearch.results.store import ResultStore

    out = []
    for folder in grid_folders(root)[0]:
        t = ResultStore(folder).trials()
        t = t[(t["status"] == "ok") & (t["stage"] != BASELINE_STAGE) & ~t["trial_id"].astype(str).str.endswith("=dup")]
        for _, g in t.groupby("cell"):
            table = g.pivot_table(index="config_key", columns="seed", values="val_score", aggfunc="mean").dropna()
            if len(table) >= 2 and table.shape[1] >= 2:
                out.append(100 * table.to_numpy(dtype=float))
    return out


def null_from_grids(cells: list[np.ndarray]) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    """A/A from real scores: a random pair of configs of a random cell, seed by seed (distinct
    seeds while the grid has enough, drawn again beyond), each seed's two scores swapped
    between the arms at random."""

    def draw(rng: np.random.Generator, draws: int, n: int) -> np.ndarray:
        out = np.empty((draws, n))
        for i in range(draws):
            scores = cells[rng.integers(len(cells))]
            a, b = rng.choice(len(scores), size=2, replace=False)
            seeds = rng.choice(scores.shape[1], size=n, replace=n > scores.shape[1])
            out[i] = (scores[a, seeds] - scores[b, seeds]) * rng.choice([-1.0, 1.0], size=n)
        return out

    return draw


def paired_spread(cells: list[np.ndarray]) -> float:
    """The standard deviation of a paired difference between two configs over seeds
    (points): pooled over every pair of configs in every cell, each pair centred on its mean."""
    pooled = []
    for scores in cells:
        n = scores.shape[1]
        i, j = np.triu_indices(len(scores), 1)
        d = scores[i] - scores[j]
        pooled.append(((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1) / (n - 1))
    return float(np.sqrt(np.median(np.concatenate(pooled))))


def best_of_k(rng: np.random.Generator, draws: int, k: int, n_select: int, n_confirm: int | None) -> np.ndarray:
    """Differences best - baseline where all K configs equal the baseline: picked on
    ``n_select`` seeds, judged on those (``n_confirm`` None) or on ``n_confirm`` fresh ones."""
    seed = rng.normal(0.0, SEED_EFFECT, (draws, 1, n_select))
    configs = seed + _arm(rng, (draws, k, n_select), 0.0)
    base = seed[:, 0] + _arm(rng, (draws, n_select), 0.0)
    best = configs.mean(axis=2).argmax(axis=1)
    if n_confirm is None:
        return configs[np.arange(draws), best] - base
    fresh = rng.normal(0.0, SEED_EFFECT, (draws, n_confirm))
    return (fresh + _arm(rng, (draws, n_confirm), 0.0)) - (fresh + _arm(rng, (draws, n_confirm), 0.0))


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.search_seed)
    draws = args.draws
    root = Path(args.results or "results")
    cells = grid_scores(root)
    nulls: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
        "gaussian": null_gaussian, f"collapse {COLLAPSE_P:.0%}": null_collapse}
    if cells:
        nulls["committed grids, arms shuffled"] = null_from_grids(cells)
    aa = []
    for null, draw in nulls.items():
        for n in SEEDS:
            start = time.perf_counter()
            for test, hit in rejects(draw(rng, draws, n), rng).items():
                aa.append({"null": null, "seeds": n, "test": test, "false_positive": float(hit.mean())})
            print(f"  A/A {null}, {n} seeds: {time.perf_counter() - start:.1f} s", flush=True)
    picked = []
    for k in KS:
        for n_select in (3, 6):
            for n_confirm in (None, *CONFIRM):
                d = best_of_k(rng, draws, k, n_select, n_confirm)
                judged = "the seeds it was picked on" if n_confirm is None else f"{n_confirm} fresh seeds"
                for test, hit in rejects(d, rng).items():
                    picked.append({"K": k, "selection_seeds": n_select, "judged_on": judged, "test": test,
                                   "false_positive": float(hit.mean())})
        print(f"  best of {k}", flush=True)
    spread = paired_spread(cells) if cells else 2 * NOISE
    power = []
    for gain in GAINS:
        for n in POWER_SEEDS:
            d = rng.normal(gain, spread, (draws, n))
            for test, hit in rejects(d, rng).items():
                power.append({"gain_points": gain, "seeds": n, "test": test, "power": float(hit.mean())})
    mc = 1.96 * math.sqrt(stats.LEVEL * (1 - stats.LEVEL) / draws)
    verdict = stats.TESTS[stats.VERDICT_TEST].name
    aa_v = [r["false_positive"] for r in aa if r["test"] == verdict]
    confirmed_v = [r["false_positive"] for r in picked if r["test"] == verdict and r["judged_on"] != "the seeds it was picked on"]
    return {
        "level": stats.LEVEL,
        "draws": draws,
        "monte_carlo_error": mc,
        "verdict_test": verdict,
        "tests": {name: t.why for name, t in stats.TESTS.items()},
        "a_a": aa,
        "best_of_k": picked,
        "power": power,
        "paired_spread_points": spread,
        "grid_cells": len(cells),
        "targets": {"a_a_false_positive_max": stats.LEVEL + mc, "best_of_k_confirmed_max": stats.LEVEL + mc},
        "meets_targets": {"a_a": bool(max(aa_v) <= stats.LEVEL + mc),
                          "best_of_k_confirmed": bool(max(confirmed_v) <= stats.LEVEL + mc)},
        "setup": {"results": portable(root), "noise_points": NOISE, "seed_effect_points": SEED_EFFECT,
                  "collapse": COLLAPSE_P, "bootstrap_resamples": BOOT, "search_seed": args.search_seed,
                  "date": time.strftime("%Y-%m-%d")},
    }


def tables(result: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The three tables as printed and written in the note: tests as columns."""
    aa = pd.DataFrame(result["a_a"]).pivot_table(index=["null", "seeds"], columns="test", values="false_positive", sort=False)
    bk = pd.DataFrame(result["best_of_k"]).pivot_table(index=["K", "selection_seeds", "judged_on"], columns="test",
                                                       values="false_positive", sort=False)
    pw = pd.DataFrame(result["power"]).pivot_table(index=["gain_points", "seeds"], columns="test", values="power", sort=False)
    return {"A/A false-positive rate": aa, "best of K identical configs vs the baseline": bk,
            f"power (paired spread {result['paired_spread_points']:.2f} points)": pw}


def plot(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()

    aa = pd.DataFrame(result["a_a"])
    pw = pd.DataFrame(result["power"])
    nulls = list(dict.fromkeys(aa["null"]))
    fig, axes = plt.subplots(1, len(nulls) + 1, figsize=(4.2 * (len(nulls) + 1), 4))
    for ax, null in zip(axes, nulls):
        for i, (test, g) in enumerate(aa[aa["null"] == null].groupby("test", sort=False)):
            ax.plot(g["seeds"], 100 * g["false_positive"], marker="o", color=f"C{i}", label=test)
        ax.axhline(100 * result["level"], color="black", linestyle=":", linewidth=1)
        ax.axhspan(0, 100 * (result["level"] + result["monte_carlo_error"]), color="green", alpha=0.06)
        ax.set_title(f"A/A: {null}", fontsize=9)
        ax.set_xlabel("paired seeds")
        ax.set_ylabel("% called real")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for i, (gain, g) in enumerate(pw[pw["test"] == result["verdict_test"]].groupby("gain_points")):
        ax.plot(g["seeds"], 100 * g["power"], marker="o", color=f"C{i}", label=f"+{gain:g} points")
    ax.set_title(f"power of the verdict test ({result['paired_spread_points']:.1f}-point paired spread)", fontsize=9)
    ax.set_xlabel("paired seeds")
    ax.set_ylabel("% found")
    ax.legend(fontsize=7)
    save_figure(fig, out)


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.draws is None:
        args.draws = DRAWS
    if args.draws < 100:
        from kdsearch.errors import KDSearchError

        raise KDSearchError(f"--draws: at least 100 draws per cell of the tables, got {args.draws}")
    result = run(args)
    for title, table in tables(result).items():
        print(f"\n{title}:")
        print(format_table(table.reset_index().to_dict("records")))
    print(f"\nMonte Carlo error ±{100 * result['monte_carlo_error']:.2f} points; targets met: {result['meets_targets']}")
    out = Path(args.out or "results/bench/calibration.json")
    write_result(out, result)
    plot(result, out.with_suffix(".png"))
    print(f"written: {out.with_suffix('.png')}")
    return result
