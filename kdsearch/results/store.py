"""One search's results on disk: ``trials.parquet``, ``epochs.parquet``, ``best.yaml``.

Rows are appended as trials finish. Each append rewrites the table to a temporary file
and renames it over the old one, so a crash at any moment leaves the last complete
table readable. Rows carry a key (``trial_id``; ``trial_id`` and ``epoch``) and a later
row replaces an earlier one with the same key: a trial resumed after a crash rewrites
its rows instead of adding duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kdsearch import atomic
from kdsearch.errors import KDSearchError

TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"
KEYS = {TRIALS: ["trial_id"], EPOCHS: ["trial_id", "epoch"]}

# columns whose type must not drift between appends (None + str or 1 + "same")
STRING_COLUMNS = ("stage", "tau_s", "teacher", "loss", "error", "status", "cell", "node", "teacher_name")


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    for col in STRING_COLUMNS:
        if col in df.columns:
            df[col] = df[col].map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    return df


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
        return pq.read_table(p).to_pandas()

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


def open_store(folder: str | os.PathLike[str]) -> ResultStore:
    """A store that must exist already (``kdsearch results DIR``)."""
    store = ResultStore(folder)
    if not store.path(TRIALS).is_file():
        if not store.folder.is_dir():
            raise KDSearchError(f"no search at {str(folder)!r}: the folder does not exist")
        raise KDSearchError(f"no search results in {str(folder)!r}: {TRIALS} is missing (no trial has finished yet?)")
    return store
