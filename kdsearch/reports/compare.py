"""``kdsearch compare DIR...``: a Markdown report with tables and PNG plots, from Parquet only."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from kdsearch import atomic
from kdsearch.display import format_value
from kdsearch.errors import KDSearchError
from kdsearch.owned import check_not_owned, known
from kdsearch.reports import analysis, tradeoff
from kdsearch.results import stats
from kdsearch.results.store import CONFIRM, ResultStore, without_copies
from kdsearch.results.summary import fixed_knobs
from kdsearch.tasks import TASKS
from kdsearch.knobs import BASELINE_STAGE


def _md(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(c, v) for c, v in zip(cols, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _section(heading: str, prose: str, table: pd.DataFrame) -> str:
    """A report section: its heading (with its ``#``s), a paragraph saying how to read it, its
    table; nothing when the table is empty (the searches did not do what it reads)."""
    return "" if table.empty else f"\n{heading}\n\n{prose}\n\n{_md(table)}"


def _cell(column: str, v: object) -> str:
    # NaN stays visible in a report ("nan"): a missing number there is itself a finding
    return "nan" if isinstance(v, float) and v != v else format_value(column, v)


def _telling(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` without those of ``columns`` that hold one value everywhere (a spread of 0 with one
    search per method says nothing)."""
    return df.drop(columns=[c for c in columns if c in df and df[c].nunique(dropna=False) <= 1])


def unique_searches(folders: Sequence[str | Path]) -> list[Path]:
    """Each search once: a folder named twice, or two copies of one search (same ``search_id``)."""
    from kdsearch.results.store import open_store

    seen: set[str] = set()
    out = []
    for f in folders:
        store = open_store(f)
        ident = store.meta().get("search_id") or str(Path(f).resolve())
        if ident not in seen:
            seen.add(ident)
            out.append(Path(f))
    return out


def metric_names(trials: pd.DataFrame) -> dict[str, str]:
    """Cell -> what its score is (``accuracy``, ``f1``: the task's primary metric)."""
    if "task" not in trials:
        return {}
    return {str(c): TASKS[t].primary_metric for c, t in trials.groupby("cell")["task"].first().items() if t in TASKS}


def check_tasks(trials: pd.DataFrame) -> None:
    """Refuse a cell whose rows come from two tasks (two datasets of one name): scores of
    different metrics under one cell would be averaged together."""
    if "task" not in trials:
        return
    tasks = trials.groupby("cell")["task"].nunique()
    mixed = tasks[tasks > 1]
    if len(mixed):
        cell = mixed.index[0]
        by = trials[trials["cell"] == cell].groupby("task")["search_id"].first()
        raise KDSearchError(f"cell {cell!r} is {' in one search and '.join(f'{t} ({s})' for t, s in by.items())}: "
                            "their scores are different metrics; compare those searches apart")


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
        # one row of panels per task: accuracy and entity F1 are not one axis
        tasks = sorted(ok["task"].dropna().unique()) if "task" in ok else [None]
        fig, grid = plt.subplots(len(tasks), 2, figsize=(10, 4 * len(tasks)), squeeze=False)
        for axes, task in zip(grid, tasks):
            rows = ok if task is None else ok[ok["task"] == task]
            named = f"{metric} ({metric_names(rows).get(str(rows['cell'].iloc[0]), metric)}, {task})" if task else metric
            for ax, fid in zip(axes, ("val_agreement", "val_kl")):
                for stage_is_base, s in rows.groupby(rows["stage"] == BASELINE_STAGE):
                    ax.scatter(s[fid], s[metric], s=14, label="no KD" if stage_is_base else "KD")
                ax.set_xlabel(fid)
                ax.set_ylabel(named)
                ax.legend()
        fig.suptitle("fidelity vs generalisation, one point per trial")
        fig.tight_layout()
        fig.savefig(out / "fidelity_vs_accuracy.png", dpi=100)
        plt.close(fig)
        names.append("fidelity_vs_accuracy.png")
    if not costs.empty:
        fig, ax = plt.subplots(figsize=(6, 4))
        unit = metric_names(trials)
        labels = costs["cell"] + " " + costs["knob"] + costs["cell"].map(lambda c: f" ({unit[c]})" if c in unit else "")
        ax.barh(labels, costs["cost_points"])
        ax.set_xlabel("cost of the worst choice (points of each cell's own metric)")
        fig.tight_layout()
        fig.savefig(out / "knob_costs.png", dpi=100)
        plt.close(fig)
        names.append("knob_costs.png")
    return names


def fidelity_section(means: pd.DataFrame) -> str:
    """Every config's mean, spread and fidelity to its teacher, its knobs shown where they vary
    (a knob at one value in every row, a default nobody searched, is named once above the table)."""
    shown, fixed = fixed_knobs(means.drop(columns=["config_key"]))
    head = f"Every config here has {', '.join(f'{k} = {_cell(k, v)}' for k, v in fixed.items())}.\n\n" if fixed else ""
    return head + _md(shown)


def cost_section(served: pd.DataFrame, costs: pd.DataFrame) -> str:
    """The report's cost section: per dataset, what each student keeps and what it costs."""
    if served.empty:
        return ""
    text = "\n## What a student keeps and what it costs (test score; serving cost per architecture)\n\n"
    text += tradeoff.machine_line(costs) + " Test scores are of each student's best KD config by validation (and of no KD), "
    text += "mean ± std over its seeds; `front`: on the Pareto front of test score against ONNX latency (a student "
    text += "that collapsed to one class on every seed is never on it).\n\n"
    front = served["on_front"].map({True: "yes", False: ""}).where(~served["collapsed"], "collapsed")
    shown = served.assign(params_M=served["params"] / 1e6, front=front)
    cols = ["dataset", "model", "config", "test", "test_std", "seeds", "params_M", "embedding_share", "torch_ms_p50",
            "onnx_ms_p50", "onnx_ms_p95", "int8_ms_p50", "onnx_per_s", "front"]
    text += _md(shown[cols])
    lines = tradeoff.keeps(served)
    text += "\n" + "".join(f"- {line}\n" for line in lines) if lines else ""
    return text


def across_section(folders: Sequence[str | Path], trials: pd.DataFrame, metric: str, mode: str, gain: pd.DataFrame,
                   out: Path) -> tuple[str, list[str]]:
    """Sultan et al.'s analyses over the cells (:mod:`kdsearch.reports.across`), and with three
    datasets or more the recommender left one dataset out at a time (:mod:`kdsearch.recommend`);
    the text and its plot (``across.png``)."""
    from kdsearch.recommend import feature_ablation, leave_one_out, load_past, loo_summary, loo_verdict, regrets
    from kdsearch.reports import across

    if trials["cell"].nunique() < 2:
        return "", []
    past = load_past(folders, metric)
    table, dead = across.without_collapsed(regrets(past), trials, metric, mode)
    costs = across.knob_costs(table, trials, metric)
    if costs.empty:
        return "", []
    loo = leave_one_out(past) if len(past.features) >= 3 else pd.DataFrame()
    text = ("\n## Across cells: what each choice costs\n\n"
            "A choice's cost in a cell: the best config that makes it, in points below the cell's best (configs at the "
            "longest schedule they trained, against the best of that schedule). Mean and worst over the cells that ran the "
            "knob; `real differences`: cells whose ranking seeds tell the choice's best from the cell's best (sign-flip at "
            f"{stats.LEVEL:g}; with {stats.TESTS[stats.VERDICT_TEST].seeds_needed() - 1} seeds or fewer it never can, and "
            "those seeds picked both, so a count there would be optimistic)." + _left_out(dead) + "\n\n" + _md(costs))
    avg = across.best_on_average(table, copies=across.copies_everywhere(trials))
    if not avg.empty:
        text += ("\n### The configs best on average (each cell one vote)\n\n" + _md(avg))
    n = len(set(table["dataset"]))
    text += _section("### The paper's three principles",
                     "What following each costs in a cell: the best config that follows it minus the best that does not "
                     "(points; below 0 it wins). It holds where that is at most the cell's seed noise (median seed std of "
                     "its configs). Across datasets (a dataset's cells share its data and teacher, so the dataset is the "
                     "unit): each dataset's mean cost on matched configs (each config that follows it against the same "
                     "config with the rival choice, so both sides' bests are maxima over equally many configs), sign-flip "
                     f"tested at {stats.LEVEL:g}. " + across.reference_verdicts(gain), across.principles(table, trials, metric))
    text += _section("### Choices head to head, across datasets",
                     "Every two choices of a knob on matched configs (each config with one choice against the same config "
                     "with the other), a dataset's cells averaged, sign-flip tested over datasets at "
                     f"{stats.LEVEL:g} (the least p {n} datasets can give: "
                     f"{stats.TESTS[stats.VERDICT_TEST].smallest_p(n):.3f}); the choice named first "
                     "is ahead on average. A verdict is per row: among many rows of choices that do not matter, about one in "
                     "twenty would read \"wins\".", across.head_to_head(table, trials, metric))
    if not loo.empty:
        m = loo_summary(loo)
        text += ("\n## The recommender, one dataset left out at a time\n\n"
                 "Each dataset's config is recommended from the others, then costed on it (points below its best config, "
                 "mean over its cells): `recommender` (nearest datasets by their features), `paper` (t_ll, ce, tau_s 1 at "
                 "the alpha and tau_t best on average over the others), `average` (the config best on average over the "
                 f"others), `no_kd` (not distilling). Mean over the {m['datasets']} of {m['of']} datasets where all three "
                 f"were run: {loo_verdict(m)}.\n\n" + _md(loo))
        text += ("\nWhich features carry it: the mean recommender cost with each feature left out (a rise: it carries "
                 "the answer) and how many datasets get another config without it.\n\n" + _md(feature_ablation(past, full=loo)))
    return text, [_across_plot(costs, loo, out)]


def _left_out(dead: Sequence[str]) -> str:
    if not dead:
        return ""
    return (f" Left out of this section's tables: {len(dead)} cell(s) whose every config collapsed to one class on every "
            f"seed ({', '.join(dead)}); there no choice ranks above another.")


def _across_plot(costs: pd.DataFrame, loo: pd.DataFrame, out: Path) -> str:
    """Each choice's mean and worst cost over cells; beside it, with three datasets or more, each
    held-out dataset's cost under the recommender, the two baselines and no KD."""
    import matplotlib.pyplot as plt

    panels = 2 if not loo.empty else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, max(3.0, 0.35 * len(costs) + 1)), squeeze=False)
    ax = axes[0][0]
    labels = costs["knob"] + " = " + costs["choice"].astype(str)
    ax.barh(labels, costs["mean cost"], label="mean over cells")
    ax.scatter(costs["worst cost"], labels, color="black", marker="|", s=120, label="worst cell")
    ax.invert_yaxis()
    ax.set_xlabel("points below the cell's best config")
    ax.set_title("the cost of each choice")
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.6 / fig.get_figheight() - 0.08)}  # under the axis label: never over a bar
    ax.legend(ncol=2, **below)
    if not loo.empty:
        ax = axes[0][1]
        ways = [c for c in ("recommender", "paper", "average", "no_kd") if c in loo]
        width = 0.8 / len(ways)
        for i, way in enumerate(ways):
            ax.barh([y + i * width for y in range(len(loo))], loo[way], height=width, label=way)
        ax.set_yticks([y + 0.4 - width / 2 for y in range(len(loo))], loo["dataset"])
        ax.invert_yaxis()
        ax.set_xlabel("cost on the held-out dataset (points below its best)")
        ax.set_title("one dataset left out at a time")
        ax.legend(ncol=len(ways), **below)
    fig.tight_layout()
    fig.savefig(out / "across.png", dpi=100, bbox_inches="tight")  # the legends below the axes included
    plt.close(fig)
    return "across.png"


# the plots a report writes, by name: a report replaced (--force) leaves none of the old one's
# that the new one does not draw (a cell since split in two, a dataset no longer compared)
PLOT_NAMES = re.compile(r"(anytime_.+|tradeoff_.+|knob_costs|fidelity_vs_accuracy|across)\.png")


def _drop_stale_plots(out: Path, plots: Sequence[str]) -> None:
    for old in out.glob("*.png"):
        if PLOT_NAMES.fullmatch(old.name) and old.name not in plots:
            old.unlink()


def check_out(out: Path, force: bool, folders: Sequence[str | Path] = ()) -> None:
    """A report goes into a folder; an existing report there is replaced only with ``force``;
    never into a folder kdsearch owns (a search, a workdir: :mod:`kdsearch.owned`)."""
    if out.exists() and not out.is_dir():
        raise KDSearchError(f"--out {out}: exists and is not a folder (a report is a folder: report.md and its plots)")
    # a report is written into its folder, not in place of it: beside searches is fine, in one is not
    check_not_owned(out, known(None, folders), holding=False)
    if (out / "report.md").exists() and not force:
        raise KDSearchError(f"--out {out}: holds a report already; pass --force to replace it")


def compare(folders: Sequence[str | Path], out: str | Path, metric: str = "val_score", mode: str = "max",
            log: Callable[[str], None] = print, force: bool = False) -> str:
    """Write ``out/report.md`` and its plots; return the report text.

    Every refusal (a damaged or empty search, nothing finished, two tasks under one cell, an
    existing report without ``force``) comes before anything is written.
    """
    out = Path(out)
    given = list(folders)
    folders = unique_searches(given)  # damaged input is refused before anything is written
    trials = analysis.load(folders)
    confirm = analysis.load(folders, CONFIRM)
    if trials.empty:
        raise KDSearchError(f"no trial rows in {', '.join(map(str, folders))}: nothing to compare")
    ok = trials["status"] == "ok"
    if metric not in trials and ok.any():  # finished rows without it: a column, not a failure
        raise KDSearchError(f"{', '.join(str(Path(f) / 'trials.parquet') for f in folders)}: no column {metric!r} "
                            "(the metric compared; --metric names another)")
    if metric not in trials or not (ok & trials[metric].notna()).any():
        raise KDSearchError(f"no finished trial in {', '.join(map(str, folders))} (every one failed or diverged): nothing to compare")
    check_tasks(trials)
    check_out(out, force, folders)
    out.mkdir(parents=True, exist_ok=True)
    curves = analysis.anytime(trials, metric, mode)
    reg = analysis.regret(curves, mode)
    by_method = reg.groupby(["cell", "method"]).agg(
        searches=("search_id", "nunique"), trials=("trials", "mean"), best=("best", "mean"),
        best_spread=("best", "std"), regret_points=("regret_points", "mean"),
    ).reset_index().fillna({"best_spread": 0.0})
    by_method = _telling(by_method, ["searches", "best_spread"] if (by_method["searches"] <= 1).all() else [])
    costs = analysis.knob_costs(trials, metric, mode)
    rank = analysis.recommended_rank(trials, metric, mode)
    means = analysis.config_means(without_copies(trials), metric)  # a copy is no runner-up
    pairs = []
    for cell, g in means.groupby("cell"):
        g = g.sort_values("mean", ascending=mode != "max")
        if len(g) >= 2:
            d = stats.Paired(analysis.paired_difference(trials, cell, g["config_key"].iloc[0], g["config_key"].iloc[1],
                                                        metric)["by_seed"])
            # both were ranked on these very seeds: the p-value is shown, never called a verdict
            pairs.append({"cell": cell, "best - runner-up (points)": 100 * d.mean, "t 95% CI": d.interval(100),
                          "p (sign-flip)": d.p, "seeds": d.seeds,
                          "what it says": "nothing yet: both were ranked on these seeds (optimistic)"
                          if d.reachable else f"nothing: {d.seeds} seeds can never reach {d.level:g}; {d.needed} can"})
    gain = analysis.kd_gain(trials, metric, mode, confirm)  # its table, and the across-cell section's verdict line
    plots = _plots(trials, curves, costs, metric, out)
    costs_by_search = tradeoff.load_costs(folders, per_search=True)  # a split cell's teacher is its experiment's
    served = tradeoff.table(trials, costs_by_search, metric, mode)
    if not served.empty:
        task_metric = trials.groupby("dataset")["task"].first().map(lambda t: TASKS[t].primary_metric) if "task" in trials else {}
        plots += tradeoff.plot(served, out, dict(task_metric))
    text = "# kdsearch comparison\n\n"
    text += f"Searches: {', '.join(Path(f).name for f in folders)}. Metric: {metric} ({mode}), mean over paired seeds"
    tasks = trials.groupby("task")["cell"].first().map(metric_names(trials)) if "task" in trials else pd.Series(dtype=str)
    if tasks.nunique() > 1:
        per = "; ".join(f"{task}: {name}" for task, name in tasks.items())
        text += f"; each task scores its own way ({per}), so cells are compared within themselves, never averaged together"
    text += ".\n\n"
    if len(folders) < len(given):
        text += f"({len(given) - len(folders)} folder(s) named a search already compared; each search counts once.)\n\n"
    running = [Path(f).name for f in folders if not ResultStore(f).meta().get("finished")]
    if running:
        text += (f"Not finished (running or stopped): {', '.join(running)}; what follows reads their rows so far, "
                 "and a cell whose confirmation has not run has no verdict yet.\n\n")
    regret = by_method["regret_points"]
    if not ((regret.notna() & (by_method["method"] != "grid")).any() or (regret.fillna(0.0) != 0.0).any()):
        # a full grid against itself, or no grid to measure against: a column of zeros or NaN says nothing
        text += ("## Methods: trials used and best reached\n\nNo cell ran a method beside a full grid of its space, "
                 "so no regret is shown.\n\n" + _md(by_method.drop(columns=["regret_points"])))
    else:
        text += "## Methods: trials used, best reached, regret against the full grid\n\n" + _md(by_method)
    text += cost_section(served, tradeoff.flatten(costs_by_search))
    text += ("\n## KD against no KD (best config of each cell)\n\n"
             "The best config was picked on its selection seeds, so its gain there is optimistic and gets no verdict. "
             "Verdicts come from confirmation seeds it was not picked on (rows with `role: confirm`), on the test split: "
             f"{stats.TESTS[stats.VERDICT_TEST].label} test of the mean paired difference at {stats.LEVEL:g} (two-sided; exact "
             f"at any seed count, it cannot reject below {stats.TESTS[stats.VERDICT_TEST].seeds_needed()} seeds), with the "
             "paired t interval beside it. The same against the paper's recommendation (t_ll, ce, tau_s = 1 at its best "
             "alpha and tau_t).\n\n" + _md(gain))
    text += _section("## Racing: where the extra seeds went",
                     "After the first seeds, the leader and the configs a paired t test could not yet separate from it got "
                     "more seeds (race rounds). Per cell: the configs raced and their trials, racing's share of the cell's "
                     "trial-epochs, the most seeds a config reached, where the best named at the end ranked on the first "
                     "seeds alone (1: racing kept the leader), and how many configs a paired t test (Holm-adjusted, at "
                     f"{stats.LEVEL:g}) still cannot separate from the best at the end.", analysis.racing(trials, metric, mode))
    text += "\n## Best against runner-up, seed by seed (selection seeds)\n\n" + _md(pd.DataFrame(pairs))
    text += "\n## Cost of a sub-optimal choice (other knobs at the cell's best)\n\n" + _md(costs)
    text += "\n## The paper's recommendation (t_ll, ce, tau_s = 1)\n\n" + _md(rank)
    if analysis.uses_later_objectives(trials):
        text += ("\n## Objectives since the paper, against its recommendation (per cell, seed by seed)\n\n"
                 "Each config against the cell's reference (t_ll, ce, tau_s = 1, no DIST, no standardised logits, a "
                 "constant temperature): its gain in points on each paired seed (selection and confirmation seeds alike: "
                 "each row is a pre-set arm against the reference), the paired t interval of the mean gain, the sign-flip "
                 f"p, and the verdict (\"a real gain\" or \"a real loss\" only where p <= {stats.LEVEL:g}; below "
                 f"{stats.TESTS[stats.VERDICT_TEST].seeds_needed()} seeds it cannot be reached and the row says so).\n\n")
        text += _md(analysis.against_reference(pd.concat([trials, confirm], ignore_index=True), metric, mode))
    across_text, across_plots = across_section(folders, trials, metric, mode, gain, out)
    text += across_text
    plots += across_plots
    text += "\n## Configs with fidelity\n\n" + fidelity_section(means)
    text += "\n" + "".join(f"![{p}]({p})\n" for p in plots)
    atomic.write_text(out / "report.md", text)
    _drop_stale_plots(out, plots)
    log(_md(by_method))
    log(f"report: {out / 'report.md'} ({len(plots)} plots)")
    return text
