"""One search's results on disk: ``spec.yaml``, ``search.json``, the Parquet tables, ``best.yaml``.

Rows are appended as trials finish. Each append rewrites the table to a temporary file
and renames it over the old one, so a crash at any moment leaves the last complete
table readable. Rows carry a key (``trial_id``; ``trial_id`` and ``epoch``) and a later
row replaces an earlier one with the same key: a trial resumed after a crash rewrites
its rows instead of adding duplicates. Knob columns have the type the knob table gives.

A damaged file is named in one line with what to do, never a pyarrow or YAML traceback.
Reading results imports neither Ray nor the search code.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kdsearch import atomic
from kdsearch.errors import KDSearchError
from kdsearch.knobs import KNOBS, PORTABLE_FORMAT, RESULTS_FORMAT

TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"
COSTS = "costs.parquet"  # what each architecture the search trained costs to serve (kdsearch.deploy.costs)
SPEC_FILE = "spec.yaml"
META_FILE = "search.json"
BEST_FILE = "best.yaml"
TUNE_DIR = "tune"
KEYS = {TRIALS: ["trial_id"], EPOCHS: ["trial_id", "epoch"], COSTS: ["dataset", "role", "model"]}

# what a row is for: the search picks from SELECT rows; CONFIRM rows are fresh seeds of configs
# it picked (kdsearch.search.confirm), read only by the verdicts. Rows before the column: SELECT.
SELECT, CONFIRM = "select", "confirm"

# columns whose type must not drift between appends (None + str); knobs say their own
STRING_COLUMNS = ("stage", "error", "status", "cell", "node", "teacher_name", "role")
SPEC_SEAL = "# kdsearch spec, sealed: "  # the last line of a stored spec: its checksum


def is_missing(v: Any) -> bool:
    """A stored value that holds nothing: None or NaN (a column a row predates)."""
    return v is None or (isinstance(v, float) and v != v)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    for col in df.columns:
        knob = KNOBS.get(col)
        kind = knob.column if knob else "string" if col in STRING_COLUMNS else None
        if kind == "string":
            df[col] = df[col].map(lambda v: None if is_missing(v) else str(v))
        elif kind == "float64" and df[col].dtype == object and not df[col].map(lambda v: isinstance(v, str)).any():
            df[col] = df[col].astype("float64")
    return df


def _damaged(path: Path, why: str) -> KDSearchError:
    return KDSearchError(
        f"{path}: {why}; it is damaged or truncated: restore it from a copy, or delete the search folder and run it again"
    )


class ResultStore:
    """The result folder of one search."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, table: str) -> Path:
        return self.folder / table

    def read(self, table: str) -> pd.DataFrame:
        p = self.path(table)
        if not p.is_file():
            return pd.DataFrame()
        try:
            # one read of the bytes: a writer replacing the file (atomically) between the reader's
            # opens of the path would mix two versions and look damaged
            return pq.read_table(pa.BufferReader(p.read_bytes())).to_pandas()
        except (pa.ArrowException, OSError) as e:
            raise _damaged(p, f"not a readable Parquet table ({str(e).splitlines()[0][:120]})") from None

    def append(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Add rows (replacing rows with the same key) and rewrite the table atomically."""
        if not rows:
            return
        new = _normalise(pd.DataFrame(list(rows)))
        old = self.read(table)
        df = new if old.empty else pd.concat([old, new], ignore_index=True)
        df = _normalise(df).drop_duplicates(subset=KEYS[table], keep="last").reset_index(drop=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_table(self, table, df)

    def trials(self, role: str | None = SELECT) -> pd.DataFrame:
        """The trial rows of one ``role`` (default: those the search picks from; None: all)."""
        return of_role(self.read(TRIALS), role)

    def epochs(self, role: str | None = SELECT) -> pd.DataFrame:
        return of_role(self.read(EPOCHS), role)

    def costs(self) -> pd.DataFrame:
        """``costs.parquet``: one row per (dataset, role, model); empty when none was measured."""
        return self.read(COSTS)

    def write_text(self, name: str, text: str) -> None:
        atomic.write_text(self.folder / name, text)

    # -- the search's own description ------------------------------------------------------
    def write_spec(self, text: str) -> None:
        """``spec.yaml`` with a last line that seals it: a truncated or edited copy is noticed."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        self.write_text(SPEC_FILE, f"{text}{SPEC_SEAL}{digest}\n")

    def spec_text(self) -> str:
        """The stored spec's YAML, checked against its seal (specs of older searches have none)."""
        p = self.path(SPEC_FILE)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise KDSearchError(f"{p} is missing: {self.folder} is not a complete kdsearch search folder") from None
        except (OSError, UnicodeDecodeError) as e:
            raise _damaged(p, f"cannot be read ({e})") from None
        body, sep, seal = text.rpartition(SPEC_SEAL)
        if sep:
            if hashlib.sha256(body.encode()).hexdigest() != seal.strip():
                raise _damaged(p, "does not match its checksum (was it edited?)")
            return body
        if self.format() >= 2:  # sealed since format 2: a missing seal is a cut file
            raise _damaged(p, "has lost its last line")
        return text

    def spec(self, overrides: list[str] | None = None, registries: bool = True) -> Any:
        """The search's spec, as it began, read against this folder wherever it now is.

        Reading never needs the models, the data or the workdir to exist (training checks
        those). A spec of results format 1 or 2 names the paths of the machine that ran it,
        and fetched models by their folders: it is read as format 3 would have written it
        (see :func:`portable_raw`). A spec this kdsearch cannot read is one line. A reader
        that never trains passes ``registries=False``: loss, layer-map and augmentation
        names are then taken as recorded, and torch is not imported to look them up.
        """
        from kdsearch.errors import SpecError
        from kdsearch.spec import parse_raw, spec_from_raw

        path = self.path(SPEC_FILE)
        try:
            raw = parse_raw(self.spec_text(), path)
            if self.format() < PORTABLE_FORMAT:
                portable_raw(raw, self.meta().get("search_id") or self.folder.name)
            return spec_from_raw(raw, path, overrides, stored=True, registries=registries)
        except SpecError as e:
            if overrides:
                raise
            raise KDSearchError(f"{path}: not a spec this kdsearch can read ({e}); was it written by a newer kdsearch?") from None

    def format(self) -> int:
        """The results format the search was written in (1: before formats were recorded)."""
        return int(self.meta().get("results_format", 1))

    def meta(self) -> dict[str, Any]:
        """``search.json``: the search's id, method, cells, teachers, datasets, results format."""
        p = self.path(META_FILE)
        if not p.is_file():
            return {}
        try:
            meta = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _damaged(p, f"is not valid JSON ({str(e)[:80]})") from None
        if not isinstance(meta, dict):
            raise _damaged(p, "is not a JSON object")
        if "search_id" not in meta or not isinstance(meta.get("results_format", 1), int):
            raise KDSearchError(f"{p}: not a kdsearch search (it has no search_id; another tool's search.json?)")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.write_text(META_FILE, json.dumps({"results_format": RESULTS_FORMAT, **meta}, indent=1))

    def finished(self) -> bool | None:
        """Whether the search ran to its end (None: written before kdsearch recorded it)."""
        meta = self.meta()
        if "finished" in meta:
            return bool(meta["finished"])
        return True if self.path(BEST_FILE).is_file() else None if self.format() < PORTABLE_FORMAT else False

    def mark_finished(self) -> None:
        meta = self.meta()
        if not meta.get("finished"):  # a later `kdsearch confirm` keeps when the search itself ended
            self.write_meta({**meta, "finished": time.time()})


def without_copies(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows of configs that trained: a config whose every row is a copy (``duplicate_of``:
    t_hs trained as t_ll where they are one checkpoint) is that other config's training again,
    and counted beside it would be its own runner-up and push every rank down."""
    if "duplicate_of" not in trials:
        return trials
    copy = trials["duplicate_of"].notna()
    return trials[~copy.groupby([trials["cell"], trials["config_key"]]).transform("all")]


def of_role(rows: pd.DataFrame, role: str | None) -> pd.DataFrame:
    """The rows of ``role`` (None: all); a row without one is a selection row."""
    if role is None or rows.empty:
        return rows
    if "role" not in rows:
        return rows if role == SELECT else rows.iloc[0:0]
    return rows[rows["role"].fillna(SELECT) == role].reset_index(drop=True)


def upgrade(folder: str | os.PathLike[str]) -> list[str]:
    """Rewrite a stored search in the current results format; what changed, in words.

    The old formats still read (:meth:`ResultStore.spec`); this makes the files themselves
    portable: ``spec.yaml`` with names and relative paths (sealed again), ``tau_s`` as a
    number beside ``tau_s_same`` (format 1), the datasets' train statistics and whether the
    search finished in ``search.json``. Trial values are never touched.
    """
    store = open_store(folder)
    meta = store.meta()
    fmt = store.format()
    if fmt >= RESULTS_FORMAT:
        return []
    from kdsearch.spec import dump_spec

    spec = store.spec(registries=False)  # a migration never trains
    changes = [f"results format {fmt} -> {RESULTS_FORMAT}"]
    before = store.spec_text()
    after = dump_spec(spec, store.folder)
    if before != after:
        store.write_spec(after)
        changes.append("spec.yaml: fetched models by name, paths relative to the search folder, sealed")
    trials = store.trials(role=None)  # every row: the table is rewritten whole
    if fmt < 2 and "tau_s" in trials and trials["tau_s"].dtype.kind not in "fiu":
        trials = tau_s_as_number(trials)
        _write_table(store, TRIALS, trials)
        epochs = store.epochs(role=None)
        if "tau_s" in epochs and epochs["tau_s"].dtype.kind not in "fiu":
            _write_table(store, EPOCHS, tau_s_as_number(epochs))
        changes.append("tau_s as a number beside tau_s_same")
    if "datasets" not in meta:
        from kdsearch.data.sources import load_raw
        from kdsearch.data.stats import train_stats

        try:
            meta["datasets"] = {(st := train_stats(load_raw(d)))["name"]: st for d in spec.data_specs}
            changes.append("search.json: the datasets' train statistics")
        except KDSearchError as e:
            changes.append(f"no train statistics ({e}): the recommender reads its data when it is there")
    if "finished" not in meta and store.finished():
        meta["finished"] = True  # when is not known
    store.write_meta({**meta, "results_format": RESULTS_FORMAT})
    return changes


def tau_s_as_number(t: pd.DataFrame) -> pd.DataFrame:
    """Format 1's ``tau_s`` text ("1.0", "same") as a number, with ``tau_s_same``."""
    import numpy as np

    if "tau_s" not in t or t["tau_s"].dtype.kind == "f":
        return t
    t = t.copy()
    same = t["tau_s"] == "same"
    t["tau_s"] = np.where(same, t["tau_t"].astype(float), pd.to_numeric(t["tau_s"], errors="coerce"))
    t["tau_s_same"] = same
    return t


def _write_table(store: ResultStore, table: str, df: pd.DataFrame) -> None:
    tmp = store.folder / f".{table}.tmp-{os.getpid()}"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    os.replace(tmp, store.path(table))


def portable_raw(raw: dict[str, Any], search_id: str) -> None:
    """A results-format 1 or 2 spec, in place, as format 3 writes it: fetched models by name
    (``minilm-l6:first2``, not ``/home/x/.kdsearch/models/minilm-l6:first2``) and other paths
    relative to the search folder as it was, so they follow it wherever it is read."""
    from kdsearch.fetch import label
    from kdsearch.spec import walk_paths

    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    storage = search.get("storage")
    if not isinstance(storage, str) or "://" in storage:
        return walk_paths(raw, lambda where, kind, v: label(v) if kind == "model" else v)
    then = Path(storage) / search_id  # where the folder was: absolute, or relative to where it ran

    def relative(where: str, kind: str, value: str) -> str:
        if kind == "model" and label(value) != value:
            return label(value)
        if kind in ("model", "dataset") and not value.startswith(("/", ".")):
            return value  # a preset, a built-in dataset or a hub name
        if kind == "storage":
            return ".."
        rel = os.path.relpath(value, then) if kind in ("workdir",) or Path(value).is_absolute() else value
        return rel if rel.startswith("..") else f"./{rel}"

    walk_paths(raw, relative)


def open_store(folder: str | os.PathLike[str]) -> ResultStore:
    """A store that must exist already (``kdsearch results DIR``)."""
    store = ResultStore(folder)
    if not store.path(TRIALS).is_file():
        if store.folder.is_file():
            raise KDSearchError(f"no search at {str(folder)!r}: it is a file, not a search folder")
        if not store.folder.is_dir():
            raise KDSearchError(f"no search at {str(folder)!r}: the folder does not exist")
        raise KDSearchError(f"no search results in {str(folder)!r}: {TRIALS} is missing (no trial has finished yet?)")
    return store
