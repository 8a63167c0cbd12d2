"""Dataset sources: built-in names, local files and Hugging Face hub names -> raw splits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kdsearch.errors import DataError
from kdsearch.spec import DataSpec
from kdsearch.tasks import TASKS

BUILTIN_DIR = Path(__file__).parent / "builtin"
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}
_EXTENSIONS = (".parquet", ".csv", ".jsonl", ".json")

BUILTIN: dict[str, dict[str, Any]] = {
    "rotten_tomatoes": {"task": "classification", "columns": {"text": "text", "label": "label"}},
    "bbc_news": {"task": "classification", "columns": {"text": "text", "label": "label"}},
    "wnut16": {"task": "token_classification", "columns": {"tokens": "tokens", "tags": "ner_tags"}},
}



@dataclass
class RawData:
    """Raw splits with the task and column roles resolved, plus a content fingerprint."""

    task: str
    columns: dict[str, str]
    splits: dict[str, pd.DataFrame]
    fingerprint: str
    source: str  # the dataset's name in results: a built-in or hub name, a local folder's own name
    train_rows: int | None = None  # the train split's rows before data.max_train_examples took a sample

    @property
    def subsampled(self) -> str:
        """How train was cut, for messages about labels it lacks ("" when it was whole)."""
        if self.train_rows is None:
            return ""
        return f" (train is a random {len(self.splits['train'])} of its {self.train_rows} rows: data.max_train_examples)"


def _read_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl")
    except (ValueError, OSError) as e:
        raise DataError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    raise DataError(f"{path}: unsupported file type {suffix!r} (use csv, jsonl or parquet)")


def _find_split_file(folder: Path, split: str) -> Path | None:
    for alias in _SPLIT_ALIASES[split]:
        for ext in _EXTENSIONS:
            cand = folder / f"{alias}{ext}"
            if cand.is_file():
                return cand
    return None


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _local_files(spec: DataSpec) -> dict[str, Path]:
    if spec.files:
        files = {}
        for split, path in spec.files.items():
            if split not in SPLITS:
                raise DataError(f"data.files: unknown split {split!r} (known: {', '.join(SPLITS)})")
            p = Path(path)
            if not p.is_file():
                raise DataError(f"data.files.{split}: file {path!r} does not exist")
            files[split] = p
        return files
    folder = BUILTIN_DIR / spec.dataset if spec.dataset in BUILTIN else Path(spec.dataset)
    files = {}
    for split in SPLITS:
        f = _find_split_file(folder, split)
        if f is not None:
            files[split] = f
    return files


def _load_hub(spec: DataSpec) -> tuple[dict[str, pd.DataFrame], str]:
    import datasets

    try:
        dd = datasets.load_dataset(spec.dataset, spec.hub_config)
    except Exception as e:  # the hub raises many types; the user needs the one line
        raise DataError(
            f"dataset {spec.dataset!r} is not a built-in name ({', '.join(BUILTIN)}), "
            f"not a local folder, and could not be loaded from the Hugging Face hub: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    splits = {}
    for split in SPLITS:
        for alias in _SPLIT_ALIASES[split]:
            if alias in dd:
                ds = dd[alias]
                df = ds.to_pandas()
                # ClassLabel ints -> names, so labels read the same as in local files
                for col, feat in ds.features.items():
                    names = getattr(feat, "names", None) or getattr(getattr(feat, "feature", None), "names", None)
                    if names:
                        df[col] = df[col].map(
                            (lambda v, n=names: [n[i] for i in v]) if hasattr(feat, "feature") else (lambda v, n=names: n[v])
                        )
                splits[split] = df
                break
    return splits, f"hub:{spec.dataset}:{spec.hub_config}:{dd['train']._fingerprint if 'train' in dd else ''}"


def _subsample(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """A fixed random ``n`` rows in file order: files are often sorted by label, so the
    first ``n`` rows may hold one class."""
    if len(df) <= n:
        return df
    return df.sample(n=n, random_state=0).sort_index().reset_index(drop=True)


def load_raw(spec: DataSpec) -> RawData:
    """Load the splits named by ``spec`` and check their columns against the task."""
    is_local = spec.files or spec.dataset in BUILTIN or Path(spec.dataset).exists()
    if is_local:
        files = _local_files(spec)
        splits = {s: _read_file(p) for s, p in files.items()}
        fingerprint = _hash_files([files[s] for s in sorted(files)])
        source = spec.dataset if spec.dataset in BUILTIN else str(Path(spec.dataset))
        if not files:
            raise DataError(
                f"dataset folder {spec.dataset!r} has no train/validation/test files "
                f"({', '.join(_EXTENSIONS)})"
            )
    elif spec.dataset.startswith((".", "/", "~")):
        raise DataError(f"dataset folder {spec.dataset!r} does not exist")
    else:
        splits, fingerprint = _load_hub(spec)
        source = f"hub:{spec.dataset}"
    for required in ("train", "validation"):
        if required not in splits:
            raise DataError(f"dataset {source!r} has no {required} split")

    builtin = BUILTIN.get(spec.dataset, {})
    task = spec.task or builtin.get("task") or _infer_task(splits["train"], spec.columns)
    columns = dict(builtin.get("columns") or TASKS[task].columns)
    columns.update(spec.columns)
    roles = tuple(TASKS[task].columns)
    for split, df in splits.items():
        for role in roles:
            col = columns[role]
            if col not in df.columns:
                raise DataError(
                    f"{split} split of {source!r} has no column {col!r} for {role} "
                    f"(columns: {', '.join(map(str, df.columns))}; set data.columns.{role})"
                )
        if len(df) == 0:
            raise DataError(f"{split} split of {source!r} is empty")
        _check_values(df, columns, roles, split, source)
        keep = [columns[r] for r in roles]
        splits[split] = df[keep].reset_index(drop=True)
    train_rows = None
    if spec.max_train_examples and len(splits["train"]) > spec.max_train_examples:
        train_rows = len(splits["train"])
        splits["train"] = _subsample(splits["train"], spec.max_train_examples)
    if spec.max_eval_examples:
        for s in ("validation", "test"):
            if s in splits:
                splits[s] = _subsample(splits[s], spec.max_eval_examples)
    key = json.dumps(
        [fingerprint, task, columns, spec.max_train_examples, spec.max_eval_examples, "random-subsample"], sort_keys=True
    )
    # what results call it: a local folder by its name, as its cells are (a path of this machine
    # in trials.parquet would not read on another); messages above named the whole path
    name = Path(source).name if is_local and spec.dataset not in BUILTIN and not spec.files else source
    return RawData(task, columns, splits, hashlib.sha256(key.encode()).hexdigest()[:16], name, train_rows)


def _rows(mask: pd.Series) -> str:
    rows = [str(i) for i in mask[mask].index[:5]]
    return ", ".join(rows) + (", ..." if int(mask.sum()) > 5 else "")


def _check_values(df: pd.DataFrame, columns: dict[str, str], roles: tuple[str, ...], split: str, source: str) -> None:
    """Texts present and not all empty; word and tag columns holding lists; answers spans of their contexts."""
    for role in roles:
        col = df[columns[role]]
        if role in ("text", "text_pair"):
            missing = col.isna()
            if missing.any():
                raise DataError(f"{split} split of {source!r} has missing texts in column {columns[role]!r} (rows {_rows(missing)})")
            if not col.astype(str).str.strip().astype(bool).any():
                raise DataError(f"{split} split of {source!r}: every text in column {columns[role]!r} is empty")
            empty = ~col.astype(str).str.strip().astype(bool)
            if role == "text_pair" and empty.any():  # half a pair: nothing to compare the first text with
                raise DataError(f"{split} split of {source!r} has empty texts in column {columns[role]!r} (rows {_rows(empty)}): "
                                "a pair needs both its texts")
        elif role == "answers":
            from kdsearch.data.qa import check_answers

            check_answers(df, columns, split, source)
        elif role in ("tokens", "tags"):
            not_list = col.map(lambda v: isinstance(v, str) or not hasattr(v, "__len__"))
            if not_list.any():
                raise DataError(
                    f"{split} split of {source!r}: column {columns[role]!r} must hold lists (rows {_rows(not_list)}); "
                    "CSV cannot hold lists: use jsonl or parquet"
                )


def _infer_task(train: pd.DataFrame, columns: dict[str, str]) -> str:
    cols = set(train.columns)
    if all(columns.get(r, r) in cols for r in ("question", "context", "answers")):
        return "question_answering"  # SQuAD's columns
    if columns.get("tokens", "tokens") in cols and columns.get("tags", "tags") in cols:
        return "token_classification"
    if columns.get("text_pair", "text_pair") in cols:
        return "pair_classification"
    return "classification"


def label_names(raw: RawData) -> list[str]:
    """The label set from train: sorted, with ``O`` first for token tags (QA: a window's two rows)."""
    if TASKS[raw.task].extractive:
        from kdsearch.data.qa import QA_LABELS

        return list(QA_LABELS)
    if TASKS[raw.task].per_token:
        values = {str(t) for tags in raw.splits["train"][raw.columns["tags"]] for t in tags}
        return sorted(values, key=lambda t: (t != "O", t[2:] if t[:2] in ("B-", "I-") else t, t))
    values = raw.splits["train"][raw.columns["label"]]
    if values.isna().any():
        raise DataError(f"train split of {raw.source!r} has missing labels in column {raw.columns['label']!r}")
    uniq = sorted(set(values.tolist()), key=lambda v: (str(type(v)), v))
    return [str(v) for v in uniq]
