"""Dataset sources: built-in, local folders and named files, columns, labels, bad input."""

from pathlib import Path

import pandas as pd
import pytest

from kdsearch.data.prepare import prepare_data
from kdsearch.data.sources import label_names, load_raw
from kdsearch.errors import DataError
from kdsearch.spec import DataSpec
from tests.conftest import small_data_spec


def write_splits(folder: Path, frames: dict[str, pd.DataFrame], fmt: str = "csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, df in frames.items():
        if fmt == "csv":
            df.to_csv(folder / f"{split}.csv", index=False)
        elif fmt == "jsonl":
            df.to_json(folder / f"{split}.jsonl", orient="records", lines=True)
        else:
            df.to_parquet(folder / f"{split}.parquet")
    return folder


def rt_frames(n: int = 40) -> dict[str, pd.DataFrame]:
    rt = pd.read_parquet(Path(__file__).parents[2] / "kdsearch/data/builtin/rotten_tomatoes/train.parquet")
    return {"train": rt.iloc[:n], "validation": rt.iloc[n : n + 20], "test": rt.iloc[n + 20 : n + 40]}


@pytest.mark.parametrize("name, task, n_labels", [("rotten_tomatoes", "classification", 2), ("bbc_news", "classification", 5), ("wnut16", "token_classification", 21)])
def test_builtin_datasets(name: str, task: str, n_labels: int) -> None:
    raw = load_raw(DataSpec(dataset=name))
    assert raw.task == task
    assert set(raw.splits) == {"train", "validation", "test"}
    assert len(label_names(raw)) == n_labels
    if task == "token_classification":
        assert label_names(raw)[0] == "O"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_local_folder_each_format(tmp_path: Path, fmt: str) -> None:
    folder = write_splits(tmp_path / fmt, rt_frames(), fmt)
    raw = load_raw(DataSpec(dataset=str(folder)))
    assert len(raw.splits["train"]) == 40 and raw.task == "classification"


def test_named_files_custom_columns_and_int_labels(tmp_path: Path) -> None:
    frames = rt_frames()
    renamed = {s: pd.DataFrame({"sentence": df["text"].values, "y": (df["label"] == "fresh").astype(int).values}) for s, df in frames.items()}
    write_splits(tmp_path, renamed, "csv")
    spec = DataSpec(
        dataset="mine",
        files={"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "validation.csv")},
        columns={"text": "sentence", "label": "y"},
    )
    raw = load_raw(spec)
    assert label_names(raw) == ["0", "1"]
    assert "test" not in raw.splits


def test_pair_classification_gets_segment_ids(tmp_path: Path, workdir: Path) -> None:
    frames = {s: df.assign(text_pair=df["text"].str[::-1]) for s, df in rt_frames().items()}
    folder = write_splits(tmp_path / "pairs", frames, "parquet")
    data = prepare_data(DataSpec(dataset=str(folder), max_length=48, tokenizer=small_data_spec().tokenizer), workdir)
    assert data.task == "pair_classification"
    types = data.splits["train"].token_type_ids
    assert types is not None and int(types.max()) == 1


def test_missing_column_is_named(tmp_path: Path) -> None:
    frames = {s: df.rename(columns={"label": "sentiment"}) for s, df in rt_frames().items()}
    folder = write_splits(tmp_path, frames)
    with pytest.raises(DataError, match="no column 'label' for label"):
        load_raw(DataSpec(dataset=str(folder)))


def test_unknown_label_in_validation(tmp_path: Path, workdir: Path) -> None:
    frames = rt_frames()
    frames["validation"] = frames["validation"].assign(label=["fresh"] * 19 + ["spoiled"])
    folder = write_splits(tmp_path, frames)
    with pytest.raises(DataError, match="validation split .* has label 'spoiled', not among train's labels"):
        prepare_data(DataSpec(dataset=str(folder), tokenizer=small_data_spec().tokenizer), workdir)


def test_empty_split(tmp_path: Path) -> None:
    frames = rt_frames()
    frames["validation"] = frames["validation"].iloc[:0]
    folder = write_splits(tmp_path, frames, "parquet")
    with pytest.raises(DataError, match="validation split .* is empty"):
        load_raw(DataSpec(dataset=str(folder)))


def test_missing_folder_and_missing_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_raw(DataSpec(dataset=str(tmp_path / "nope")))
    folder = write_splits(tmp_path / "onlytrain", {"train": rt_frames()["train"]})
    with pytest.raises(DataError, match="no validation split"):
        load_raw(DataSpec(dataset=str(folder)))


def test_ner_token_tag_mismatch(tmp_path: Path, workdir: Path) -> None:
    df = pd.DataFrame({"tokens": [["a", "b"], ["c"]] * 5, "tags": [["O", "B-x"], ["O"]] * 5})
    bad = df.copy()
    bad.at[0, "tags"] = ["O"]
    folder = write_splits(tmp_path, {"train": df, "validation": bad}, "parquet")
    with pytest.raises(DataError, match="validation row 0 .* 2 tokens but 1 tags"):
        prepare_data(DataSpec(dataset=str(folder), tokenizer=small_data_spec().tokenizer), workdir)
