"""Sultan et al.'s analyses across cells: what each choice costs, the config best on average,
and whether the paper's three principles hold, read from trial rows alone.

Every number starts from :func:`kdsearch.recommend.nearest.regrets`: each config of a cell at
the longest schedule it trained (successive halving trains configs at several), in points
below the best config of that schedule. A knob's choice costs, in a cell, the regret of the
best config that makes it (the other knobs free, as a user who fixes one knob and searches
the rest); this is the paper's "cost of a sub-optimal choice".

Differences between choices are seen on the seeds the configs were ranked on; those are
tested (sign-flip, :mod:`kdsearch.results.stats`) only to say whether the seeds *could* tell,
and a count of "real" differences says how many cells could be tested at all. A principle is
also tested across datasets (:func:`across_datasets`): each dataset one paired difference, on
configs matched so that neither side's best is a maximum over more configs (:func:`matched_cost`;
the A/A check in tests/reports/test_across.py measures its level: about 4% at 7 datasets, where
the unmatched cost for tau_s says "wins" about 7% of the time).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import pandas as pd

from kdsearch.knobs import BASELINE_STAGE, PAPER, Value
from kdsearch.recommend.nearest import rank_configs, without_epochs
from kdsearch.results import stats
from kdsearch.results.store import without_copies
from kdsearch.results.summary import collapsed_configs, picks, seed_scores


@dataclass(frozen=True)
class Principle:
    knob: str
    follows: str  # the paper's choice, as the column reads
    against: tuple[Value, ...]  # the choices it was claimed over (none: any other), as a config holds them
    claim: str
    rival_from: str | None = None  # the knob whose value a config's rival takes instead (tau_s: tau_t's)

    def rivals(self, config: dict[str, Value]) -> list[dict[str, Value]]:
        """The configs that differ from ``config`` (one that follows the principle) only in
        making the rival choice: its matched counterparts."""
        if self.rival_from is not None:
            value = config.get(self.rival_from)
            return [] if value is None or _as_text(value) == self.follows else [{**config, self.knob: value}]
        return [{**config, self.knob: a} for a in self.against]


# the paper's three principles (Sultan et al. 2024, section 5), each a choice over its rivals
PRINCIPLES = (
    Principle("loss", "ce", ("mse",), "CE (KL) as the distance, not MSE"),
    Principle("teacher", "t_ll", ("t_hs",), "the lowest-validation-loss teacher checkpoint, not the best-scoring one"),
    Principle("tau_s", str(float(PAPER["tau_s"])), (), "a student temperature of 1, not the teacher's", rival_from="tau_t"),
)


def _as_text(v: object) -> str:
    return str(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def one_training(trials: pd.DataFrame) -> set[tuple[str, str]]:
    """(cell, knob) pairs whose choices train one student: the teacher knob in a cell where
    t_hs and t_ll name the same checkpoint (its configs that differ only there are run once,
    the copies marked ``duplicate_of``). There the knob is no choice: every config ties."""
    if not {"teacher", "teacher_name", "stage"} <= set(trials.columns):
        return set()
    kd = trials[(trials["stage"] != BASELINE_STAGE) & trials["teacher"].notna()]
    out = set()
    for cell, g in kd.groupby("cell", sort=False):
        names = g.groupby("teacher")["teacher_name"].agg(lambda s: frozenset(s.dropna()))
        if len(names) > 1 and len(set(names)) == 1:
            out.add((str(cell), "teacher"))
    return out


def without_collapsed(table: pd.DataFrame, trials: pd.DataFrame, metric: str, mode: str) -> tuple[pd.DataFrame, list[str]]:
    """``table`` less the cells whose every distillation config collapsed to one class on every
    seed (or failed), and those cells. They name no best (:func:`kdsearch.results.summary.picks`),
    so they rank no choice either: their configs differ only by which class a seed fell to, and
    counting them would call a principle "held" on noise."""
    dead = sorted(set(table["cell"].astype(str)) - set(picks(trials, metric, mode)))
    return table[~table["cell"].isin(dead)], dead


def choice_costs(table: pd.DataFrame, skip: set[tuple[str, str]] = frozenset()) -> pd.DataFrame:
    """Per cell, knob and choice: the regret of the best config that makes that choice. Knobs
    are those the configs' keys vary (a knob that does not apply to a config, DIST's beta
    under CE, is not in its key: that config makes no choice of it). (cell, knob) pairs in
    ``skip`` (see :func:`one_training`) are left out: their choices would tie as one."""
    # a cell where every config scored alike (all collapsed to one class) ranks no choice
    table = table[table.groupby("cell")["regret"].transform("max") > 0]
    keys = table["config_key"].map(json.loads)
    rows = []
    for k in _varying(table):
        values = keys.map(lambda d: _as_text(d[k]) if k in d else None)
        for cell, g in table[values.notna()].groupby("cell", sort=True):
            if (cell, k) in skip:
                continue
            v = values[g.index]
            if v.nunique() < 2:
                continue
            for choice, h in g.groupby(v, sort=True):
                best = h.loc[h["regret"].idxmin()]
                rows.append({"cell": cell, "dataset": best["dataset"], "knob": k, "choice": choice, "cost": float(best["regret"]),
                             "config_key": best["config_key"], "trial_key": best["trial_key"], "rung": best["rung"]})
    return pd.DataFrame(rows)


def _tested(trials: pd.DataFrame, metric: str, table: pd.DataFrame, row: pd.Series) -> stats.Paired | None:
    """The best config of a choice against the best of its schedule, seed by seed (None: it is that best)."""
    same = table[(table["cell"] == row["cell"]) & (table["rung"] == row["rung"])]
    top = same.loc[same["regret"].idxmin()]
    if top["trial_key"] == row["trial_key"]:
        return None
    return stats.paired(seed_scores(trials, row["cell"], top["trial_key"], metric),
                        seed_scores(trials, row["cell"], row["trial_key"], metric))


def knob_costs(table: pd.DataFrame, trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The paper's table: each knob's choices, their cost in points (mean and worst over the
    cells that ran both as distinct trainings), the cells where each is best, and how many
    cells' seeds tell the choice from the cell's best (sign-flip at ``stats.LEVEL``, on the
    ranking seeds)."""
    costs = choice_costs(table, one_training(trials))
    if costs.empty:
        return pd.DataFrame()
    rows = []
    for (knob, choice), g in costs.groupby(["knob", "choice"], sort=False):
        worst = g.loc[g["cost"].idxmax()]
        tests = [t for _, r in g.iterrows() if (t := _tested(trials, metric, table, r)) is not None]
        real = sum(t.real for t in tests)
        could = sum(t.reachable for t in tests)
        rows.append({"knob": knob, "choice": choice, "cells": int(len(g)), "best in": int((g["cost"] == 0).sum()),
                     "mean cost": float(g["cost"].mean()), "worst cost": float(worst["cost"]), "worst cell": worst["cell"],
                     "real differences": f"{real} of {len(tests)} ({could} could tell)"})
    return pd.DataFrame(rows).sort_values(["knob", "mean cost"], kind="stable").reset_index(drop=True)


def copies_everywhere(trials: pd.DataFrame) -> set[str]:
    """Config keys (epochs left out, as :func:`kdsearch.recommend.regrets` keys them) whose every
    row, in every cell, is a copy of another config's training (``duplicate_of``: t_hs trained
    as t_ll where the two are one checkpoint)."""
    trained = set(without_copies(trials)["config_key"].map(without_epochs))
    return set(trials["config_key"].map(without_epochs)) - trained


def best_on_average(table: pd.DataFrame, top: int = 5, copies: AbstractSet[str] = frozenset()) -> pd.DataFrame:
    """The configs with the lowest mean regret over cells (each cell one vote), with their
    worst-case regret and where. Only configs run in the most cells any config was (every
    cell, for a grid or halving): a mean over other cells would not compare. Configs in
    ``copies`` (:func:`copies_everywhere`) are not listed: each would tie the training it
    copies, one row below it."""
    per = table.pivot_table(index="config_key", columns="cell", values="regret", aggfunc="mean")
    if per.empty:
        return pd.DataFrame()
    runs = per.notna().sum(axis=1)
    per = per[runs == runs.max()]
    mean = rank_configs(per.mean(axis=1))  # exact ties (configs trained as one) list the paper's choice first
    mean = mean[~mean.index.isin(list(copies))]
    rows = []
    for key in mean.index[:top]:
        knobs = json.loads(key)
        rows.append({"config": ", ".join(f"{k}={v}" for k, v in knobs.items() if k in _varying(table)),
                     "mean cost": float(mean[key]), "worst cost": float(per.loc[key].max()),
                     "worst cell": str(per.loc[key].idxmax()), "best in": int((per.loc[key] == 0).sum()),
                     "cells": f"{int(per.loc[key].notna().sum())} of {per.shape[1]}"})
    return pd.DataFrame(rows)


def _varying(table: pd.DataFrame) -> list[str]:
    keys = table["config_key"].map(json.loads)
    names = dict.fromkeys(k for d in keys for k in d)
    return [k for k in names if len({str(d.get(k)) for d in keys}) > 1]


@dataclass(frozen=True)
class Matched:
    """One cell's matched comparison: the cost in points (below 0 the followed choice wins) and
    the trial keys of the two sides' bests (to tell when both collapsed)."""

    cost: float
    keys: tuple[str, str]


def matched_cost(cell_table: pd.DataFrame, p: Principle) -> Matched | None:
    """In one cell, the best config that follows ``p`` minus the best of their counterparts
    (each config with the rival choice, every other knob the same), in points; None without
    a matched pair.

    Why matched: each side's best is a maximum over its configs, picked on the same seeds, and
    a maximum over more configs is higher by chance alone. With tau_s = 1 against tau_s = tau_t,
    the side of 1 holds the configs of every tau_t, the rival only those of tau_t != 1, so an
    unmatched comparison favours the principle under the null. Matched, the two sides are
    equally many configs that swap labels pair by pair: under the null (no difference) the
    cost is as likely +d as -d, which the test across datasets needs."""
    rows = {k: (r, t) for k, r, t in zip(cell_table["config_key"], cell_table["regret"], cell_table["trial_key"])}
    mine, theirs = [], []
    for key, row in rows.items():
        config = json.loads(key)
        if p.knob not in config or _as_text(config[p.knob]) != p.follows:
            continue
        for rival in p.rivals(config):
            other = rows.get(json.dumps(rival, sort_keys=True))
            if other is not None:
                mine.append(row)
                theirs.append(other)
    if not mine:
        return None
    a, b = min(mine), min(theirs)
    return Matched(float(a[0] - b[0]), (str(a[1]), str(b[1])))


def across_datasets(costs: dict[str, list[float]], level: float = stats.LEVEL) -> tuple[str, str]:
    """The test of a principle over datasets (the unit: a dataset's cells share its data and
    teacher): each dataset's mean matched cost, sign-flip tested (exact, as every verdict;
    :mod:`kdsearch.results.stats`). Returns the figures and the verdict, in words."""
    per = [sum(v) / len(v) for _, v in sorted(costs.items())]
    if not per:
        return "-", "not judged: no dataset with matched configs"
    t = stats.Paired(dict(enumerate(per)), stats.VERDICT_TEST, level)
    name = stats.TESTS[t.test].label
    figures = f"{t.mean:+.2f} points, {name} p {t.p:.3f}, {t.seeds} dataset(s)"
    if not t.reachable:
        return figures, (f"cannot tell: {t.seeds} dataset(s) can never show a difference at {level:g} with the {name} "
                         f"test; {t.needed} can")
    if t.real:
        return figures, "following it wins" if t.mean < 0 else "following it loses"
    return figures, "cannot tell: inside the noise"


def principles(table: pd.DataFrame, trials: pd.DataFrame, metric: str = "val_score") -> pd.DataFrame:
    """Each principle per cell: what following it costs against its rivals (points: the best
    config that follows it minus the best that does not; below 0 it wins), and whether it
    holds (it costs at most the cell's seed noise: the median over configs of the seed std).
    Cells where its choices trained as one (t_hs and t_ll one checkpoint) are named, not counted;
    so are cells where the best of both sides collapsed to one class on every seed: there the
    two tie at the majority class, which says nothing of the principle (and the noise is 0).
    The counted cells are then tested across datasets on matched configs (:func:`across_datasets`)."""
    costs = choice_costs(table, one_training(trials))
    tied = choice_costs(table)
    dead = collapsed_configs(trials, metric)
    rows = []
    for p in PRINCIPLES:
        mine = costs[costs["knob"] == p.knob]
        ran = set(tied.loc[tied["knob"] == p.knob, "cell"])
        one = sorted(ran - set(mine["cell"]))
        held, broke, both_dead, cells = [], [], [], 0
        matched: dict[str, list[float]] = {}  # dataset -> its cells' matched costs
        for cell, g in mine.groupby("cell", sort=True):
            by = g.set_index("choice")
            rivals = [c for c in by.index if c != p.follows and (not p.against or c in p.against)]
            if p.follows not in by.index or not rivals:
                continue
            rival = by.loc[rivals, "cost"].idxmin()
            if {(str(cell), by.loc[c, "trial_key"]) for c in (p.follows, rival)} <= dead:
                both_dead.append(str(cell))
                continue
            cells += 1
            cost = float(by.loc[p.follows, "cost"] - by.loc[rival, "cost"])
            noise = float(table.loc[table["cell"] == cell, "std"].median() * 100.0)
            (held if cost <= noise else broke).append(f"{cell} ({cost:+.2f}, noise {noise:.2f})")
            cell_table = table[table["cell"] == cell]
            m = matched_cost(cell_table, p)
            if m is not None:
                matched.setdefault(str(cell_table["dataset"].iloc[0]), []).append(m.cost)
        if not cells and not one and not both_dead:
            continue
        verdict = ("not judged: no cell could tell its choices apart" if not cells else "holds in every cell"
                   if not broke else "holds in most cells" if len(held) > len(broke)
                   else "holds in half the cells" if len(held) == len(broke) else "does not hold")
        figures, tested = across_datasets(matched)
        rows.append({"principle": p.claim, "cells": cells, "holds in": len(held), "verdict": verdict,
                     "across datasets (matched configs)": figures, "across datasets: verdict": tested,
                     "where it does not (cost, noise)": "; ".join(broke) or "-",
                     "where it holds": "; ".join(held) or "-",
                     "choices trained as one (not counted)": "; ".join(one) or "-",
                     "both sides collapsed (not counted)": "; ".join(both_dead) or "-"})
    out = pd.DataFrame(rows)
    if not out.empty and (out["both sides collapsed (not counted)"] == "-").all():
        out = out.drop(columns="both sides collapsed (not counted)")  # rare: shown where it happened
    return out


def head_to_head(table: pd.DataFrame, trials: pd.DataFrame, metric: str = "val_score") -> pd.DataFrame:
    """Every two choices of each knob, across datasets, on matched configs (:func:`matched_cost`:
    each config with one choice against the same config with the other): per dataset the mean
    over its cells, sign-flip tested with the dataset as the unit (:func:`across_datasets`). The
    choice named first is the one ahead on average. Cells where the two choices trained as one
    (:func:`one_training`) or where both sides' bests collapsed on every seed are left out."""
    skip = one_training(trials)
    dead = collapsed_configs(trials, metric)
    keys = table["config_key"].map(json.loads)
    rows = []
    for knob in _varying(table):
        values = sorted({_as_text(d[knob]): d[knob] for d in keys if knob in d}.items())
        for (a_text, _), (b_text, b) in itertools.combinations(values, 2):
            p = Principle(knob, a_text, (b,), "")
            costs: dict[str, list[float]] = {}
            for cell, g in table.groupby("cell", sort=True):
                m = None if (str(cell), knob) in skip else matched_cost(g, p)
                if m is not None and not {(str(cell), k) for k in m.keys} <= dead:
                    costs.setdefault(str(g["dataset"].iloc[0]), []).append(m.cost)
            if not costs:
                continue
            mean = sum(sum(v) / len(v) for v in costs.values()) / len(costs)
            first, second = (a_text, b_text) if mean <= 0 else (b_text, a_text)
            oriented = {d: [c if mean <= 0 else -c for c in v] for d, v in costs.items()}
            figures, verdict = across_datasets(oriented)
            ahead = sum(sum(v) / len(v) < 0 for v in oriented.values())
            verdict = verdict.replace("following it wins", f"{first} wins").replace("following it loses", f"{second} wins")
            rows.append({"knob": knob, "choice": first, "against": second, "ahead in": f"{ahead} of {len(costs)} datasets",
                         "difference (matched configs)": figures, "verdict": verdict})
    return pd.DataFrame(rows)


def reference_verdicts(gain: pd.DataFrame) -> str:
    """One line from the confirmation verdicts of ``analysis.kd_gain``: the best against the
    paper's recommendation on fresh seeds, counted over cells."""
    col = "vs the paper's recommendation: verdict"
    if gain.empty or col not in gain:
        return ""
    v = gain[col].astype(str)
    counts = {"a real gain for the best": v.str.startswith("a real gain").sum(),
              "a real loss for the best": v.str.startswith("a real loss").sum(),
              "cannot tell": v.str.contains("cannot tell").sum(),
              "the best is the recommendation": (v == "the best is the recommendation").sum()}
    said = "; ".join(f"{name}: {n}" for name, n in counts.items() if n)
    return f"On fresh seeds, the best config against the paper's recommendation in {len(gain)} cell(s): {said or 'no verdicts'}."
