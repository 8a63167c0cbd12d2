"""Bad QA and pair data, through the CLI: one line naming the split and row, exit 2, no teacher trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.qa.handmade import pair_frame, qa_frame
from tests.test_bad_input import BASE, one_line_error, run_main, write_spec


def _qa(folder: Path, case: str) -> str:
    frames = {s: qa_frame(12, seed=i) for i, s in enumerate(("train", "validation"))}
    train = frames["train"]
    if case == "answer not in its context":
        train.at[3, "answers"] = {"text": ["Zagreb"], "answer_start": [0]}
    elif case == "answer_start off its text":
        a = train.answers[5]
        train.at[5, "answers"] = {"text": list(a["text"]), "answer_start": [int(a["answer_start"][0]) + 1]}
    elif case == "answers not in SQuAD's shape":
        train["answers"] = train.answers.map(lambda a: str(a["text"][0]))
    elif case == "a question the stride cannot get past":
        train.at[2, "question"] = "Where " * 40 + "did Alice go?"
    for split, df in frames.items():
        df.to_parquet(folder / f"{split}.parquet")
    return "max_length: 32" if case != "a question the stride cannot get past" else "max_length: 48, doc_stride: 16"


def refused_before_teachers(tmp_path: Path, text: str, folder: Path, pattern: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`kdsearch teachers train` on ``folder``: one line matching ``pattern``, exit 2, no teacher trained."""
    spec = write_spec(tmp_path, text, dataset=str(folder))
    code, err = run_main(["teachers", "train", str(spec)], capsys)
    one_line_error(code, err, pattern)
    assert not (tmp_path / "wd" / "teachers").exists()


QA_CASES = {
    "answer not in its context": r"train split of '.*qa', row 3: the answer at answer_start 0 does not match its text \(the text is not in its context\)",
    "answer_start off its text": r"train split of '.*qa', row 5: the answer at answer_start \d+ does not match its text \(the text occurs at \d+\)",
    "answers not in SQuAD's shape": r"train split of '.*qa', row 0: column 'answers' must hold SQuAD answers",
    "a question the stride cannot get past": r"train split of 'qa', row 2: the question takes \d+ tokens, leaving \d+ of data.max_length 48 .* document stride of 16",
}


@pytest.mark.parametrize("case", list(QA_CASES))
def test_bad_qa_data(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "qa"
    folder.mkdir()
    lengths = _qa(folder, case)
    refused_before_teachers(tmp_path, BASE.replace("max_length: 32", lengths), folder, QA_CASES[case], capsys)


PAIR_CASES = {
    "no pair column": r"train split of '.*pairs' has no column 'text_pair' for text_pair",
    "an empty claim": r"train split of '.*pairs' has empty texts in column 'text_pair' \(rows 4\): a pair needs both its texts",
}


@pytest.mark.parametrize("case", list(PAIR_CASES))
def test_bad_pair_data(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i, split in enumerate(("train", "validation")):
        df = pair_frame(20, seed=i)
        if split == "train" and case == "no pair column":
            df = df.drop(columns="text_pair")
        if split == "train" and case == "an empty claim":
            df.at[4, "text_pair"] = "  "
        df.to_parquet(folder / f"{split}.parquet")
    text = BASE.replace("data: {", "data: {task: pair_classification, ")
    refused_before_teachers(tmp_path, text, folder, PAIR_CASES[case], capsys)


def test_augmentation_on_qa_is_refused_before_any_teacher_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "qa"
    folder.mkdir()
    _qa(folder, "fine")
    text = BASE.replace("max_length: 32", "max_length: 48, doc_stride: 16").replace("alpha: 0.5,", "alpha: 0.5, augment: mask,")
    spec = write_spec(tmp_path, text, dataset=str(folder))
    code, err = run_main(["run", str(spec)], capsys)
    one_line_error(code, err, r"augment: mask on 'qa': .*an extractive QA answer is a span of the context")
    assert not (tmp_path / "wd" / "teachers").exists() and not (tmp_path / "searches").exists()
