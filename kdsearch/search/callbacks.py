"""Tune callbacks that run in the driver: Parquet rows, progress lines, bounded disk use.

Kept free of trial state: a driver restored after a crash rebuilds what it needs from
the trial list Tune passes in and from the Parquet tables.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from kdsearch import knobs
from kdsearch.knobs import KNOBS
from kdsearch.results.store import CONFIRM, EPOCHS, SELECT, TRIALS, ResultStore
from kdsearch.search.populations import member_id
from kdsearch.search.trial import STATE_FILE, trial_points

INFO = ("cell", "seed", "teacher_name", "node", "node_ip", "node_id", "pid", "resumed", "device", "gpu_ids", "cpus")


def _error_text(trial: Trial) -> str:
    """The last line of the trial's traceback: the exception and its message."""
    text = ""
    try:
        # the driver's own copy is written before this callback; storage syncs later
        local = trial.error_file
        if local and Path(local).is_file():
            text = Path(local).read_text()
        else:
            text = trial.get_error() or ""
    except Exception:  # noqa: BLE001 - storage may be gone; the status still says failed
        pass
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln:
            return ln[:1000]
    return (lines[-1] if lines else "trial failed")[:1000]


class ResultRecorder(Callback):
    """Writes ``epochs.parquet`` on every report and ``trials.parquet`` as trials end.

    Args:
        folder: the search's result folder.
        search_id: written in every row.
        method: greedy, grid, optuna or random.
        defaults: cell -> every knob's value when the config leaves it out.
        cell_info: cell -> columns every row of that cell carries (dataset, student).
    """

    def __init__(
        self,
        folder: str,
        search_id: str,
        method: str,
        defaults: dict[str, dict[str, Any]],
        cell_info: dict[str, dict[str, Any]],
    ) -> None:
        self.folder = folder
        self.search_id = search_id
        self.method = method
        self.defaults = defaults
        self.cell_info = cell_info

    @property
    def store(self) -> ResultStore:
        return ResultStore(self.folder)

    def _config_columns(self, trial: Trial, index: int) -> dict[str, Any]:
        points = trial_points(trial.config)
        point = points[index]
        cell = point["cell"]
        values = {**self.defaults[cell], **{k: v for k, v in point.items() if k in KNOBS}}
        row: dict[str, Any] = {
            "search_id": self.search_id,
            "trial_id": member_id(trial.trial_id, index, len(points)),
            "population": trial.trial_id,
            "members": len(points),
            "cell": cell,
            **self.cell_info[cell],
            "method": self.method,
            "stage": point.get("stage"),
            "role": point.get("role", SELECT),  # confirmation seeds say so: the search never picks from them
            **({"race_round": int(point["race_round"])} if "race_round" in point else {}),  # 0: the method's own seeds
            **knobs.resolve(values),  # tau_s a number, with the flag that it followed tau_t
            "tau_s_same": values.get("tau_s") == knobs.SAME,
            "seed": int(point["seed"]),
            "config_key": knobs.key(values),
        }
        return row

    @staticmethod
    def _member_results(trial: Trial, result: dict[str, Any]) -> list[dict[str, Any]]:
        """Each member's part of a report (a trial of one member reports for itself)."""
        n = len(trial_points(trial.config))
        return [result] if n == 1 else list(result.get("members") or [{} for _ in range(n)])

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any) -> None:
        rows = []
        for index, member in enumerate(self._member_results(trial, result)):
            # a member frozen in an earlier epoch (diverged, or cut by successive halving) adds no row
            if "epoch" not in member or member.get("status") == "diverged" or member["epoch"] != result.get("epoch"):
                continue
            row = self._config_columns(trial, index)
            row.update({k: v for k, v in member.items() if _is_metric(k) or k in INFO or k in ("epoch", "step", "status", "report_ts")})
            rows.append(row)
        self.store.append(EPOCHS, rows)

    def _trial_row(self, trial: Trial, index: int, last: dict[str, Any], status: str, error: str | None) -> dict[str, Any]:
        row = self._config_columns(trial, index)
        row.update({k: last.get(k) for k in INFO if k in last})
        row["status"] = status
        row["error"] = error
        row["failures"] = int(trial.num_failures)  # attempts that raised: retries = failures - (status == failed)
        final = {k: v for k, v in last.items() if k.startswith(("val_", "test_"))} if status == "ok" else {}
        row.update(final)
        row["epochs_run"] = last.get("epoch")
        row["diverged_at_step"] = last.get("diverged_at_step") if status == "diverged" else None
        epochs = self.store.epochs()
        if status == "ok" and not epochs.empty:
            mine = epochs[epochs["trial_id"] == row["trial_id"]]
            if len(mine) and "val_score" in mine:
                best = mine.loc[mine["val_score"].astype(float).idxmax()]
                row.update({f"best_{k}": best[k] for k in mine.columns if k.startswith("val_")})
                row["best_epoch"] = int(best["epoch"])
        start = last.get("trial_start_ts")
        row["wall_s"] = (last.get("report_ts") or time.time()) - start if start else last.get("time_total_s")
        return row

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        members = self._member_results(trial, trial.last_result or {})
        self.store.append(TRIALS, [self._trial_row(trial, i, m, m.get("status", "ok"), m.get("error")) for i, m in enumerate(members)])

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        error = _error_text(trial)
        members = self._member_results(trial, trial.last_result or {})
        self.store.append(TRIALS, [self._trial_row(trial, i, m, "failed", error) for i, m in enumerate(members)])


def _is_metric(k: str) -> bool:
    return k.startswith(("val_", "test_", "train_")) or k in ("elapsed_s", "first_step_ts", "trial_start_ts")


def recorded_best(folder: str | Path, metric: str, mode: str) -> dict[str, float]:
    """Each cell's best single-trial ``metric`` among the rows a search picks from, as recorded."""
    t = ResultStore(folder).trials()
    if t.empty or metric not in t or "cell" not in t:
        return {}
    scores = t[t["status"] == "ok"].dropna(subset=[metric]).groupby("cell")[metric]
    return {str(c): float(v) for c, v in (scores.max() if mode == "max" else scores.min()).items()}


class ProgressPrinter(Callback):
    """One line per finished trial: counts, the trial's score, and its cell's best so far.

    Only the trial's own cell: a breadth search has 14, and a line naming every cell's best
    (what this printed before) ran to a thousand characters that no one could follow."""

    def __init__(self, metric: str, mode: str, print_fn: Any = None, recorded: Mapping[str, float] | None = None) -> None:
        self.metric = metric
        self.mode = mode
        # Tune pickles callbacks, and a builtin pickles by name: once Ray's tqdm_ray has
        # swapped builtins.print, the original print no longer does. Look it up per call.
        builtin_print = getattr(print_fn, "__self__", None) is builtins and getattr(print_fn, "__name__", "") == "print"
        self.print_fn = None if builtin_print else print_fn
        # each cell's best single trial; a resumed search's lines go on from what it recorded before
        self.best: dict[str, float] = dict(recorded or {})
        self.warned_cpu_fallback = False

    def _print(self, text: str) -> None:
        (self.print_fn or builtins.print)(text, flush=True)

    def _counts(self, trials: list[Trial]) -> str:
        st = [t.status for t in trials]
        done = st.count(Trial.TERMINATED)
        return f"[{done} done, {st.count(Trial.RUNNING)} running, {st.count(Trial.PENDING)} pending, {st.count(Trial.ERROR)} failed]"

    @staticmethod
    def _describe(point: dict[str, Any]) -> str:
        names = set(point)
        if point.get("role") == CONFIRM:  # a whole config (every knob): the ones that change what it trains
            names = set(json.loads(knobs.key(point)))
        text = " ".join(f"{k}={v}" for k, v in point.items() if k in KNOBS and k in names)
        stage = point.get("stage")
        return f"{point['cell']} seed {point['seed']}" + (f" stage {stage}" if stage is not None else "") + f": {text}"

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        last = trial.last_result or {}
        points = trial_points(trial.config)
        results = [last] if len(points) == 1 else list(last.get("members") or [{} for _ in points])
        where = f" (member {{}} of a population of {len(points)})" if len(points) > 1 else ""
        for i, (point, result) in enumerate(zip(points, results)):
            cell = point["cell"]
            value = result.get(self.metric)
            improved = False
            if result.get("status") == "diverged" or value is None or value != value:
                outcome = f"diverged ({result.get('error', 'no metric')})"
            else:
                outcome = f"{self.metric} {value:.4f}"
                prev = self.best.get(cell)
                if prev is None or (value > prev if self.mode == "max" else value < prev):
                    self.best[cell] = float(value)
                    improved = True
            standing = ("the cell's best so far" if improved else f"cell best {self.best[cell]:.4f}"
                        if cell in self.best else "no score in this cell yet")
            self._print(f"{self._counts(trials)} {self._describe(point)}{where.format(i + 1)} -> {outcome} | {standing}")
        if last.get("gpu_ids") and last.get("device") == "cpu" and not self.warned_cpu_fallback:
            self.warned_cpu_fallback = True
            self._print(f"warning: Ray gave trials GPU {last['gpu_ids']} on {last.get('node', 'a node')}, but torch there "
                        "sees no CUDA device, so they ran on CPU (a CPU-only torch build?)")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for point in trial_points(trial.config):
            self._print(f"{self._counts(trials)} {self._describe(point)} -> FAILED: {_error_text(trial)}")


class CheckpointJanitor(Callback):
    """Drops a finished trial's weights, keeping its final report: disk use stays bounded.

    The report stays because a search resumed from a state saved just before the trial
    finished restores the trial from this checkpoint (it then replays the report). A
    finished student is retrained from its config and seed when exported: same weights.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        path = Path(trial.path or "")  # the storage copy (local_path is a staging dir)
        if path.is_dir() and path.resolve().is_relative_to(Path(self.folder).resolve()):
            for state in path.glob(f"checkpoint_*/{STATE_FILE}"):
                state.unlink(missing_ok=True)
