"""``kdsearch compare DIR...``: a Markdown report with tables and PNG plots, from Parquet only."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from kdsearch import atomic
from kdsearch.reports import analysis
from kdsearch.knobs import BASELINE_STAGE


def _md(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)\n"
    cols = list(df.columns)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _verdict(d: dict) -> str:
    if d["seeds"] < analysis.MIN_SEEDS:
        return f"too few paired seeds ({d['seeds']}) to call"
    return "inside the noise" if d["within_noise"] else "a real difference"


def _plots(trials: pd.DataFrame, curves: pd.DataFrame, costs: pd.DataFrame, metric: str, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for cell, g in curves.groupby("cell"):
        fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for i, (method, m) in enumerate(g.groupby("method")):
            color = f"C{i}"
            # mean and spread over repeated searches of the same method
            stats = m.groupby("trials")["best"].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], label=method, color=color)
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2, color=color)
            # against compute, each search its own step line (their time axes differ)
            for j, (_, run) in enumerate(m.groupby("search_id")):
                ax_t.step(run["compute_s"] / 60, run["best"], where="post", color=color, label=method if j == 0 else None)
        ax.set_xlabel("trials run")
        ax.set_ylabel(f"best config so far ({metric}, mean over seeds)")
        ax.set_title(f"anytime: {cell}")
        ax.legend()
        ax_t.set_xlabel("trial compute (minutes, summed over trials)")
        ax_t.set_title("against compute")
        ax_t.legend()
        # a file name safe everywhere and not read as a URL scheme in Markdown (minilm-l6:first2)
        name = f"anytime_{re.sub(r'[^A-Za-z0-9_.-]', '_', cell)}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        names.append(name)
    ok = trials[trials["status"] == "ok"]
    if "val_agreement" in ok.columns and len(ok):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, fid in zip(axes, ("val_agreement", "val_kl")):
            for stage_is_base, s in ok.groupby(ok["stage"] == BASELINE_STAGE):
                ax.scatter(s[fid], s[metric], s=14, label="no KD" if stage_is_base else "KD")
            ax.set_xlabel(fid)
            ax.set_ylabel(metric)
            ax.legend()
        fig.suptitle("fidelity vs generalisation, one point per trial")
        fig.tight_layout()
        fig.savefig(out / "fidelity_vs_accuracy.png", dpi=100)
        plt.close(fig)
        names.append("fidelity_vs_accuracy.png")
    if not costs.empty:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = costs["cell"] + " " + costs["knob"]
        ax.barh(labels, costs["cost_points"])
        ax.set_xlabel(f"cost of the worst choice ({metric} points)")
        fig.tight_layout()
        fig.savefig(out / "knob_costs.png", dpi=100)
        plt.close(fig)
        names.append("knob_costs.png")
    return names


def compare(folders: Sequence[str | Path], out: str | Path, metric: str = "val_score", mode: str = "max",
            log: Callable[[str], None] = print) -> str:
    """Write ``out/report.md`` and its plots; return the report text."""
    out = Path(out)
    trials = analysis.load(folders)  # damaged input is refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    curves = analysis.anytime(trials, metric, mode)
    reg = analysis.regret(curves, mode)
    by_method = reg.groupby(["cell", "method"]).agg(
        searches=("search_id", "nunique"), trials=("trials", "mean"), best=("best", "mean"),
        best_spread=("best", "std"), regret_points=("regret_points", "mean"),
    ).reset_index().fillna({"best_spread": 0.0})
    costs = analysis.knob_costs(trials, metric, mode)
    rank = analysis.recommended_rank(trials, metric, mode)
    means = analysis.config_means(trials, metric)
    pairs = []
    for cell, g in means.groupby("cell"):
        g = g.sort_values("mean", ascending=mode != "max")
        if len(g) >= 2:
            d = analysis.paired_difference(trials, cell, g["config_key"].iloc[0], g["config_key"].iloc[1], metric)
            pairs.append({"cell": cell, "best - runner-up (points)": 100 * d["mean"], "95% CI low": 100 * d["low"],
                          "95% CI high": 100 * d["high"], "seeds": d["seeds"], "verdict": _verdict(d)})
    plots = _plots(trials, curves, costs, metric, out)
    text = "# kdsearch comparison\n\n"
    text += f"Searches: {', '.join(Path(f).name for f in folders)}. Metric: {metric} ({mode}), mean over paired seeds.\n\n"
    text += "## Methods: trials used, best reached, regret against the full grid\n\n" + _md(by_method)
    text += "\n## KD against no KD, seed by seed (best config of each cell)\n\n" + _md(analysis.kd_gain(trials, metric, mode))
    text += "\n## Best against runner-up, seed by seed\n\n" + _md(pd.DataFrame(pairs))
    text += "\n## Cost of a sub-optimal choice (other knobs at the cell's best)\n\n" + _md(costs)
    text += "\n## The paper's recommendation (t_ll, ce, tau_s = 1)\n\n" + _md(rank)
    text += "\n## Configs with fidelity\n\n" + _md(means.drop(columns=["config_key"]))
    text += "\n" + "".join(f"![{p}]({p})\n" for p in plots)
    atomic.write_text(out / "report.md", text)
    log(_md(by_method))
    log(f"report: {out / 'report.md'} ({len(plots)} plots)")
    return text
