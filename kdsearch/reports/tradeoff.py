"""What a student keeps and what it costs: test score against serving cost, per dataset.

Read from the trials (each student's best KD config by validation, and its no-KD
baseline, scored on test over their seeds) and ``costs.parquet`` (parameters, ONNX
latency and throughput per architecture), never by measuring again. The Pareto front is
over test score (higher is better) and ONNX batch-1 latency (lower is better).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from kdsearch.knobs import BASELINE_STAGE
from kdsearch.results.store import open_store

LATENCY = "onnx_ms_p50"  # what the front and the "x lower latency" lines compare


def load_costs(folders: Sequence[str | Path], per_search: bool = False) -> pd.DataFrame:
    """The ``costs.parquet`` rows of several searches, one per (dataset, role, model), newest
    last; with ``per_search``, one per search and (dataset, role, model), with its ``search_id``
    (searches with other tokenizers measure other lengths and embeddings; a cell run as two
    experiments has two teachers)."""
    frames = []
    for f in folders:
        store = open_store(f)
        costs = store.costs()
        if not costs.empty:
            frames.append(costs.assign(search_id=store.meta().get("search_id", Path(f).name)))
    if not frames:
        return pd.DataFrame()
    costs = pd.concat(frames, ignore_index=True)
    if "measured_at" in costs:
        costs = costs.sort_values("measured_at", kind="stable")
    out = costs.drop_duplicates(["search_id", "dataset", "role", "model"], keep="last").reset_index(drop=True)
    return out if per_search else flatten(out)


def flatten(costs: pd.DataFrame) -> pd.DataFrame:
    """Costs of several searches (newest last) as one row per (dataset, role, model): the newest."""
    if costs.empty or "search_id" not in costs:
        return costs
    return costs.drop_duplicates(["dataset", "role", "model"], keep="last").drop(columns=["search_id"]).reset_index(drop=True)


def experiment(cell: str) -> str:
    """What tells apart a cell that searches ran as several experiments (``breadth`` of
    ``rotten_tomatoes/xs (breadth)``, :mod:`kdsearch.results.experiments`); "" for one run one way."""
    return cell[:-1].partition(" (")[2] if cell.endswith(")") else ""


def _seed_scores(rows: pd.DataFrame, column: str) -> pd.Series:
    """One value per seed (a config run by two searches counts once)."""
    return rows.groupby("seed")[column].mean()


def table(trials: pd.DataFrame, costs: pd.DataFrame, metric: str = "val_score", mode: str = "max",
          collapsed_on_front: bool = False) -> pd.DataFrame:
    """Per dataset: the teacher, then each student's best KD config and its no-KD baseline.

    A student that collapsed to one class on every seed is listed but left off the front
    unless ``collapsed_on_front`` (``export --pareto --force``, which says so in each card).
    ``costs`` may be one row per search (``load_costs(per_search=True)``): a cell that searches
    ran as several experiments (:mod:`kdsearch.results.experiments`) then gets each experiment's
    own teacher and measurements; otherwise, and for a cell run one way, the newest of each.

    Columns: dataset, model, config ("teacher", "KD", "no KD"), teacher (the model label of the
    teacher row a student is read against; "" where its experiment's teacher was never
    measured), test (mean over seeds), test_std, seeds, params, embedding_share, the ONNX and
    PyTorch latencies, throughput.
    """
    if costs.empty or trials.empty or "test_score" not in trials:
        return pd.DataFrame()
    ok = trials[(trials["status"] == "ok") & trials[metric].notna()]
    flat = flatten(costs)
    by_model = flat.set_index(["dataset", "role", "model"])
    rows: list[dict[str, Any]] = []
    for dataset in sorted(flat["dataset"].unique()):
        mine = ok[ok["dataset"] == dataset]
        # by cell, not by student: a cell that the searches ran as two experiments is two cells,
        # each its own rows ("xs (breadth)"), read against its own teacher
        cells = list(mine.groupby("cell" if "cell" in mine else "student", sort=True))
        split = "search_id" in costs and "search_id" in mine and any(experiment(str(c)) for c, _ in cells)
        teachers: dict[str, str] = {}  # experiment -> the label of its teacher row
        if split:
            searches: dict[str, set[str]] = {}
            for cell, s in cells:
                searches.setdefault(experiment(str(cell)), set()).update(s["search_id"])
            shown: dict[tuple[str, str], str] = {}  # (model, test score) -> label
            # named experiments first, so a teacher they share with the cells run one way bears their name
            for exp in sorted(searches, key=lambda e: (e == "", e)):
                own = costs[(costs["dataset"] == dataset) & (costs["role"] == "teacher") & costs["search_id"].isin(searches[exp])]
                for t in own.drop_duplicates("model", keep="last").to_dict("records"):
                    # one teacher measured by several searches (its test score tells it) is one row
                    key = (str(t["model"]), f"{t.get('test_score', math.nan):.6f}")
                    if key not in shown:
                        shown[key] = t["model"] if not exp or exp.startswith("teacher ") else f"{t['model']} ({exp})"
                        rows.append(_teacher_row(dataset, shown[key], t))
                    teachers.setdefault(exp, shown[key])
        else:
            for t in flat[(flat["dataset"] == dataset) & (flat["role"] == "teacher")].to_dict("records"):
                rows.append(_teacher_row(dataset, t["model"], t))
                teachers.setdefault("", t["model"])
        for cell, s in cells:
            student, exp = str(s["student"].iloc[0]), experiment(str(cell))
            measured = costs[(costs["dataset"] == dataset) & (costs["role"] == "student") & (costs["model"] == student)
                             & costs["search_id"].isin(set(s["search_id"]))] if split else costs.iloc[:0]
            if measured.empty and (dataset, "student", student) not in by_model.index:
                continue
            # an architecture costs the same in every experiment; its own search's measurement first
            cost = _cost(measured.iloc[-1].to_dict() if len(measured) else by_model.loc[(dataset, "student", student)].to_dict())
            head = {"dataset": dataset, "model": f"{student} ({exp})" if exp else student, "teacher": teachers.get(exp if split else "", "")}
            kd = s[s["stage"] != BASELINE_STAGE]
            if len(kd):
                val = kd.groupby("config_key")[metric].mean()
                best = val.idxmax() if mode == "max" else val.idxmin()
                rows.append({**head, "config": "KD", **_spread(kd[kd["config_key"] == best]), **cost})
            base = s[s["stage"] == BASELINE_STAGE]
            if len(base):
                rows.append({**head, "config": "no KD", **_spread(base), **cost})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["collapsed"] = out.get("collapsed", pd.Series(False, index=out.index)).fillna(False).astype(bool)
    out["on_front"] = False
    # a student that predicts one class is fast and scores something, but nobody should ship it:
    # it is listed, never on the front (and so never exported by --pareto)
    for dataset, g in (out if collapsed_on_front else out[~out["collapsed"]]).groupby("dataset"):
        out.loc[g.index, "on_front"] = pareto(g["test"].to_numpy(), g[LATENCY].to_numpy())
    return out


def _teacher_row(dataset: str, model: str, t: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dataset, "model": model, "config": "teacher", "teacher": model, "test": t.get("test_score", math.nan),
            "test_std": math.nan, "seeds": math.nan, **_cost(t)}


def _spread(rows: pd.DataFrame) -> dict[str, Any]:
    scores = _seed_scores(rows, "test_score")
    collapsed = "val_collapsed" in rows and bool(rows["val_collapsed"].fillna(False).astype(bool).all())
    return {"test": float(scores.mean()), "test_std": float(scores.std(ddof=1)) if len(scores) > 1 else math.nan,
            "seeds": int(len(scores)), "collapsed": collapsed}


def _cost(c: dict[str, Any]) -> dict[str, Any]:
    keys = ("params", "params_embedding", "embedding_share", "seq_len", "torch_ms_p50", "onnx_ms_p50", "onnx_ms_p95",
            "onnx_per_s", "int8_ms_p50", "int8_per_s", "weights_mb", "int8_mb", "threads")
    return {k: c.get(k, math.nan) for k in keys}


def pareto(score: Sequence[float], latency: Sequence[float]) -> list[bool]:
    """Which points no other beats: as good a score at no more latency, better in one."""
    points = list(zip(score, latency))
    out = []
    for i, (s, lat) in enumerate(points):
        if s != s or lat != lat:
            out.append(False)
            continue
        beaten = any(j != i and s2 >= s and l2 <= lat and (s2 > s or l2 < lat) for j, (s2, l2) in enumerate(points)
                     if s2 == s2 and l2 == l2)
        out.append(not beaten)
    return out


def keeps(t: pd.DataFrame) -> list[str]:
    """One line per student (its best KD config): what it keeps of the teacher's test score, at what saving."""
    lines = []
    for dataset, g in t.groupby("dataset", sort=True):
        teacher = g[g["config"] == "teacher"]
        if teacher.empty:
            continue
        for r in g[g["config"] == "KD"].itertuples():
            # against the teacher of its own experiment (a cell run several ways has several)
            own = teacher[teacher["model"] == r.teacher]
            if getattr(r, "collapsed", False):
                lines.append(f"{dataset}: {r.model} collapsed to one class on every seed (test {r.test:.4f}): nothing to ship")
                continue
            if own.empty:
                lines.append(f"{dataset}: {r.model}: its experiment's teacher was never measured (`kdsearch costs`), "
                             "so what it keeps of it is not known here")
                continue
            tr = own.iloc[0]
            share = f"keeps {r.test / tr.test:.0%} of the teacher's test score" if tr.test == tr.test and tr.test > 0 else \
                "(the teacher's test score was not recorded)"
            lines.append(f"{dataset}: {r.model} {share} ({r.test:.4f} against {tr.test:.4f}) at "
                         f"{getattr(tr, LATENCY) / getattr(r, LATENCY):.1f}x lower latency and {tr.params / r.params:.1f}x fewer "
                         f"parameters ({r.embedding_share:.0%} of its parameters are embeddings)")
    return lines


def machine_line(costs: pd.DataFrame) -> str:
    """Where and how the latencies were taken: every figure is of one machine."""
    if costs.empty:
        return ""
    first = costs.iloc[0]
    cpus = ", ".join(sorted(set(costs["cpu"].astype(str)))) if "cpu" in costs else "?"
    lengths = ", ".join(f"{d} {int(n)}" for d, n in costs.groupby("dataset")["seq_len"].first().items())
    return (f"Latency: one example at a time at each dataset's median token length ({lengths} tokens), p50 (and p95) over "
            f"{int(first.get('runs', 30))} timed runs after warm-up, {int(first['threads'])} thread(s), on {cpus} "
            f"({int(first['cores'])} cores; torch {first['torch']}, onnxruntime {first['onnxruntime']}); throughput at "
            "batch 32. A latency is a figure of this machine, not of the model alone.")


def plot(t: pd.DataFrame, out: Path, metric_names: dict[str, str] | None = None) -> list[str]:
    """One PNG per dataset: test score against ONNX latency (log), KD and no-KD points, the front."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for dataset, g in t.groupby("dataset", sort=True):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        markers = {"teacher": ("*", 180), "KD": ("o", 60), "no KD": ("s", 50)}
        for i, (model, m) in enumerate(g.groupby("model", sort=True)):
            for _, r in m.iterrows():
                marker, size = markers[r["config"]]
                face = "none" if r["config"] == "no KD" else f"C{i}"
                label = f"{model} ({r['config']})"
                if r.get("collapsed", False):  # an x: one class on every seed, never on the front
                    ax.scatter(r[LATENCY], r["test"], marker="x", s=size, color=f"C{i}", label=f"{label}, collapsed")
                else:
                    ax.scatter(r[LATENCY], r["test"], marker=marker, s=size, facecolors=face, edgecolors=f"C{i}", label=label)
                if r["test_std"] == r["test_std"]:
                    ax.errorbar(r[LATENCY], r["test"], yerr=r["test_std"], color=f"C{i}", alpha=0.5, capsize=2)
        front = g[g["on_front"]].sort_values(LATENCY)
        ax.step(front[LATENCY], front["test"], where="post", color="black", linestyle="--", linewidth=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("ONNX Runtime latency, batch 1 (ms, log scale)")
        unit = (metric_names or {}).get(dataset, "score")
        ax.set_ylabel(f"test {unit} (mean ± std over seeds)")
        ax.set_title(f"what a student keeps and costs: {dataset}")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        name = f"tradeoff_{re.sub(r'[^A-Za-z0-9_.-]', '_', dataset)}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names
