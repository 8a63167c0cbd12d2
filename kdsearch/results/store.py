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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kdsearch import atomic
from kdsearch.errors import KDSearchError
from kdsearch.knobs import KNOBS, RESULTS_FORMAT

TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"
SPEC_FILE = "spec.yaml"
META_FILE = "search.json"
BEST_FILE = "best.yaml"
TUNE_DIR = "tune"
KEYS = {TRIALS: ["trial_id"], EPOCHS: ["trial_id", "epoch"]}

# columns whose type must not drift between appends (None + str); knobs say their own
STRING_COLUMNS = ("stage", "error", "status", "cell", "node", "teacher_name")
SPEC_SEAL = "# kdsearch spec, sealed: "  # the last line of a stored spec: its checksum


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    for col in df.columns:
        knob = KNOBS.get(col)
        kind = knob.column if knob else "string" if col in STRING_COLUMNS else None
        if kind == "string":
            df[col] = df[col].map(lambda v: None if _is_missing(v) else str(v))
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
            return pq.read_table(p).to_pandas()
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
        tmp = self.folder / f".{table}.tmp-{os.getpid()}"
        self.folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
        os.replace(tmp, self.path(table))

    def trials(self) -> pd.DataFrame:
        return self.read(TRIALS)

    def epochs(self) -> pd.DataFrame:
        return self.read(EPOCHS)

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
        if self.meta().get("results_format", 1) >= 2:  # sealed since format 2: a missing seal is a cut file
            raise _damaged(p, "has lost its last line")
        return text

    def spec(self) -> Any:
        """The search's spec, as it began (a damaged one: one line naming the file)."""
        from kdsearch.errors import SpecError
        from kdsearch.spec import spec_from_text

        try:
            return spec_from_text(self.spec_text(), self.path(SPEC_FILE))
        except SpecError as e:
            raise _damaged(self.path(SPEC_FILE), f"is not a valid spec ({e})") from None

    def meta(self) -> dict[str, Any]:
        """``search.json``: the search's id, method, cells, teachers, results format."""
        p = self.path(META_FILE)
        if not p.is_file():
            return {}
        try:
            meta = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _damaged(p, f"is not valid JSON ({str(e)[:80]})") from None
        if not isinstance(meta, dict):
            raise _damaged(p, "is not a JSON object")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.write_text(META_FILE, json.dumps({"results_format": RESULTS_FORMAT, **meta}, indent=1))


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
