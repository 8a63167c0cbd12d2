"""The command line on bad input: one line naming the problem, non-zero exit, no traceback.

Bad input runs `main()` in process (fast); the end-to-end case runs the real console
entry point in a subprocess.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def kdsearch(*args: str, cwd: Path, workdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KDSEARCH_WORKDIR": str(workdir), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kdsearch", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def spec_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


SMALL = """
data: {dataset: DATASET, max_length: 32, max_train_examples: 64, max_eval_examples: 32, tokenizer: {vocab_size: 500}}
teachers: {model: TEACHER, seeds: [0], train: {epochs: 1}}
student: {model: STUDENT, train: {epochs: 1}}
distill: {teacher: t_ll, loss: LOSS, alpha: 0.5}
"""


def small(dataset: str = "rotten_tomatoes", teacher: str = "xs", student: str = "xs", loss: str = "ce") -> str:
    return SMALL.replace("DATASET", dataset).replace("TEACHER", teacher).replace("STUDENT", student).replace("LOSS", loss)


def bad_folder(tmp_path: Path, change: str) -> str:
    import pandas as pd

    rt = pd.read_parquet(ROOT / "kdsearch/data/builtin/rotten_tomatoes/train.parquet").iloc[:60]
    frames = {"train": rt.iloc[:40], "validation": rt.iloc[40:60]}
    if change == "missing column":
        frames = {k: v.rename(columns={"label": "y"}) for k, v in frames.items()}
    elif change == "unknown label":
        frames["validation"] = frames["validation"].assign(label="meh")
    elif change == "empty split":
        frames["validation"] = frames["validation"].iloc[:0]
    folder = tmp_path / "data"
    folder.mkdir()
    for k, v in frames.items():
        v.to_parquet(folder / f"{k}.parquet")
    return str(folder)


CASES = {
    "missing column": (lambda t: small(bad_folder(t, "missing column")), ["teachers", "train"], "no column 'label'"),
    "unknown label": (lambda t: small(bad_folder(t, "unknown label")), ["teachers", "train"], "has label 'meh', not among train's labels"),
    "empty split": (lambda t: small(bad_folder(t, "empty split")), ["teachers", "train"], "validation split .* is empty"),
    "unknown loss": (lambda t: small(loss="hinge"), ["distill"], "distill.loss: unknown loss 'hinge'"),
    "unknown preset": (lambda t: small(student="xxl"), ["distill"], "student.model: unknown model .xxl.: not a preset"),
    "max length 0": (lambda t: small().replace("max_length: 32", "max_length: 0"), ["distill"], "data.max_length: must be in 1..8192 tokens, got 0"),
    "missing teacher folder": (lambda t: small(), ["teachers", "register"], "teacher folder .* does not exist"),
    "malformed yaml": (lambda t: "data: [oops", ["distill"], "not valid YAML"),
    "unknown dataset folder": (lambda t: small("./no/such/folder"), ["teachers", "train"], "dataset folder .* does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_error(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from kdsearch.cli import main

    make, command, pattern = CASES[case]
    spec = spec_file(tmp_path, make(tmp_path))
    args = [*command, str(spec)]
    if case == "missing teacher folder":
        args.append(str(tmp_path / "no-teacher"))
    monkeypatch.setenv("KDSEARCH_WORKDIR", str(tmp_path / "wd"))
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2  # in process: a traceback would fail the test itself
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("kdsearch: error:")]
    assert len(err) == 1 and len(stderr.strip().splitlines()) == 1, stderr
    if pattern:
        import re

        assert re.search(pattern, err[0]), err[0]


def test_teachers_train_then_distill_end_to_end(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, small(teacher="xs"))
    wd = tmp_path / "wd"
    r = kdsearch("teachers", "train", str(spec), cwd=tmp_path, workdir=wd)
    assert r.returncode == 0, r.stderr
    assert "t_hs" in r.stdout and "t_ll" in r.stdout
    r = kdsearch("distill", str(spec), "--json", "--set", "distill.teacher=t_hs", cwd=tmp_path, workdir=wd)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout[r.stdout.index("{") :])
    assert metrics["status"] == "ok"
    assert {"val_accuracy", "val_agreement", "val_kl", "test_accuracy"} <= set(metrics)


def test_results_of_one_cell_of_a_committed_search(capsys: pytest.CaptureFixture[str]) -> None:
    """`results --cell` prints that cell's configs, trials and pick alone; a cell the search does
    not have is one line naming it and the cells it has, exit 2."""
    from kdsearch.cli import main

    folder = ROOT / "results" / "pretrained" / "pretrained-20261126-004650"  # greedy over nine cells
    assert main(["results", str(folder), "--cell", "bbc_news/xs", "--trials"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if "/" in line.split(" ", 1)[0] and not line.startswith(" ")]
    assert rows and set(rows) == {"bbc_news/xs"}, out
    assert "best bbc_news/xs:" in out and "rotten_tomatoes" not in out and "wnut16" not in out
    # what the dataset's students keep and cost: BBC News' teacher and every student of it (its front)
    served = out.split("what each student keeps and costs")[1].splitlines()
    assert {line.split()[1] for line in served if line.startswith("bbc_news ")} == {"minilm-l6", "xs", "minilm-l6:first1",
                                                                                  "minilm-l6:first2"}
    assert main(["results", str(folder), "--cell", "bbc_news/xxl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdsearch: error: --cell bbc_news/xxl: no such cell in") and "bbc_news/xs" in err[0]
