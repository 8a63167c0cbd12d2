"""Bad input and faults, driven through the CLI: the rule is the same everywhere.

Every case asserts exit 2 (or a run that heals), exactly one line on stderr that starts
``kdsearch: error:`` and names the field or file, no traceback, and nothing half-written
(no result folder, no workdir, an old export left as it was). Spec and CLI cases run
``main()`` in this process (a traceback would fail the test itself); the search-folder
cases share one real finished search.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from kdsearch.cli import main
from tests.conftest import SharedRay

ROOT = Path(__file__).resolve().parents[1]

BASE = """name: bad
data: {dataset: DATASET, max_length: 32, max_train_examples: 64, max_eval_examples: 32, tokenizer: {vocab_size: 500}}
teachers: {model: xs, seeds: [0], train: {epochs: 1, batch_size: 32, learning_rate: 2.0e-3}}
student: {model: xs, train: {epochs: 1, batch_size: 32, learning_rate: 1.0e-3}}
distill: {teacher: t_ll, loss: ce, alpha: 0.5, tau_t: 1.0, tau_s: 1.0}
workdir: WORKDIR
search:
  method: greedy
  space: {loss: [ce, mse]}
  seeds: [0]
  storage: STORAGE
  confirm_seeds: 0
"""


def write_spec(tmp_path: Path, text: str = BASE, dataset: str = "rotten_tomatoes", workdir: Path | None = None) -> Path:
    p = tmp_path / "spec.yaml"
    wd = workdir or tmp_path / "wd"
    p.write_text(text.replace("DATASET", dataset).replace("WORKDIR", str(wd)).replace("STORAGE", str(tmp_path / "searches")))
    return p


def one_line_error(code: int, err: str, pattern: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("kdsearch: error: "), lines
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as e:  # argparse exits on misuse
        code = int(e.code or 0)
    return code, capsys.readouterr().err


# -- spec fields: types, ranges, extreme numbers, unknown and duplicate keys ------------------
SPEC_CASES: dict[str, tuple[list[str] | tuple[str, str], str]] = {
    "epochs not a number": (["student.train.epochs=two"], r"student.train.epochs: expected an integer"),
    "alpha above 1": (["distill.alpha=1.5"], r"distill.alpha: alpha must be in \[0, 1\]"),
    "infinite learning rate": (["student.train.learning_rate=.inf"], r"student.train.learning_rate: must be finite"),
    "NaN temperature": (["distill.tau_t=.nan"], r"distill.tau_t: must be finite"),
    "zero temperature in the space": (["search.space={tau_t: [0.0, 1.0]}"], r"search.space.tau_t\[0\]: tau_t must be > 0"),
    "huge max length": (["data.max_length=1000000000"], r"data.max_length: must be in 1..8192"),
    "negative seed": (["search.seeds=[-1, 0]"], r"search.seeds: a seed must be in 0\.\."),
    "seed too large": (["student.seed=1099511627776"], r"student.seed: a seed must be in 0\.\."),
    "teacher seed too large": (["teachers.seeds=[18446744073709551616]"], r"teachers.seeds: a seed must be in"),
    "CPU share too small": (["search.resources.cpu=0.001"], r"search.resources.cpu: must be at least 0.01"),
    "negative memory": (["search.resources.memory=-1"], r"search.resources.memory: must be >= 0"),
    "more CPUs than the machine": (["search.resources.cpu=1000"], r"search.resources.cpu: 1000 CPU per trial asked, but (this machine|the cluster's largest node) has \d"),
    "more memory than the machine": (["search.resources.memory=100000"], r"search.resources.memory: 100000 GiB of memory per trial asked, but (this machine|the cluster's largest node) has"),
    "a GPU on a machine without": (["search.resources.gpu=1"], r"search.resources.gpu: 1 GPU per trial asked, but (this machine|the cluster) has no GPU"),
    "device cuda without CUDA": (["device=cuda"], r"device: cuda (asked, but torch .* sees no CUDA device|needs search.resources.gpu > 0)"),
    "unknown device": (["device=tpu"], r"device: must be auto, cpu or cuda"),
    "unknown top-level key": (["studnet.model=xs"], r"studnet: unknown field"),
    "unknown distill key": (["distill.alphaa=0.3"], r"distill.alphaa: unknown field"),
    "duplicate key": (("alpha: 0.5, tau_t", "alpha: 0.5, alpha: 0.7, tau_t"), r"spec.yaml: line 5: key 'alpha' appears twice"),
    "duplicate section": (("workdir:", "student: {model: xs}\nworkdir:"), r"spec.yaml: line \d+: key 'student' appears twice"),
    "name with a slash": (["name=../../elsewhere"], r"name: '../../elsewhere' names the result folder"),
    "name of dots": (["name=.."], r"name: '..' names the result folder"),
    "unknown method": (["search.method=bayes"], r"search.method: must be one of auto, greedy, revisit, halving, grid, optuna, random"),
    "range with grid": (["search.method=grid", "search.space={tau_t: {low: 1, high: 4}}"], r"a range works with auto or optuna or random; grid"),
    "ASHA with grid": (["search.method=grid", "search.asha={grace_period: 1}"], r"search.asha: early stopping works with optuna or random"),
    "race word": (["search.race=maybe"], r"search.race: must be auto, off, on or a block"),
    "race of one seed": (["search.race={max_seeds: 1}"], r"search.race.max_seeds: must be in 2..100, got 1"),
    "race test": (["search.race={test: bootstrap}"], r"search.race.test: must be one of"),
    "tiny vocabulary": (["data.tokenizer.vocab_size=5"], r"data.tokenizer.vocab_size: must be at least 100"),
    "zero train examples": (["data.max_train_examples=0"], r"data.max_train_examples: must be > 0"),
    "unknown column role": (["data.columns={txt: review}"], r"data.columns: unknown role 'txt'"),
    "override without =": (["distill.alpha"], r"override 'distill.alpha': expected dotted.key=value"),
    "override into a number": (["data.max_length.x=1"], r"override 'data.max_length.x=1': max_length is not a mapping"),
    "override of bad YAML": (["search.space={loss: [ce"], r"override 'search.space=\{loss: \[ce': value is not valid YAML"),
    "spec not a mapping": (("<ALL>", "- a\n- b\n"), r"the spec must be a YAML mapping, got list"),
    "name over the length limit": ([f"name={'n' * 101}"], r"name: 101 characters; it names the result folder, at most 100"),
    "a cut of no layers": (["student.model=minilm-l6:first0"], r"student.model: model 'minilm-l6:first0': :first0 keeps 0 layers; "
                                                             r"a cut keeps K >= 1 of the model's layers"),
    "a cut of a preset": (["student.model=xs:first1"], r"student.model: model 'xs:first1': a cut .* takes a pretrained model, not the preset xs"),
    "an empty list of configs": (["search.method=grid", "search.space={}", "search.configs=[]"],
                                 r"search.configs: an empty list; give at least one config, or leave configs out"),
    "halving with epochs in its space": (["search.method=halving", "search.space={epochs: [1, 2]}"],
                                         r"search.space.epochs: halving sets each rung's epochs itself"),
    "negative confirmation seeds": (["search.confirm_seeds=-1"], r"search.confirm_seeds: must be in 0..100, got -1"),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_spec_field(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    change, pattern = SPEC_CASES[case]
    text = BASE
    sets: list[str] = []
    if isinstance(change, tuple):
        text = change[1] if change[0] == "<ALL>" else BASE.replace(*change)
    else:
        sets = [a for item in change for a in ("--set", item)]
    spec = write_spec(tmp_path, text)
    ray_before = ray.is_initialized()  # another module's Ray may be up: this one must start none
    code, err = run_main(["run", str(spec), *sets], capsys)
    one_line_error(code, err, pattern)
    assert not (tmp_path / "searches").exists() and not (tmp_path / "wd").exists() and ray.is_initialized() == ray_before


# -- data files: columns, labels, degenerate texts, encodings, formats ------------------------
def data_folder(tmp_path: Path, change: str) -> Path:
    rt = pd.read_parquet(ROOT / "kdsearch/data/builtin/rotten_tomatoes/train.parquet")
    rt = pd.concat([rt[rt.label == "fresh"].iloc[:30], rt[rt.label == "rotten"].iloc[:30]]).sample(frac=1, random_state=0)
    frames = {"train": rt.iloc[:40].reset_index(drop=True), "validation": rt.iloc[40:].reset_index(drop=True)}
    folder = tmp_path / "data"
    folder.mkdir()
    ext = "parquet"
    if change == "missing texts":
        frames["train"].loc[[3, 7], "text"] = None
    elif change == "empty texts":
        frames["train"]["text"] = "   "
    elif change == "one label":
        frames["train"]["label"] = "fresh"
    elif change == "unseen label":
        frames["validation"].loc[2, "label"] = "meh"
    elif change == "label lost to the subsample":  # one train row has it; max_train_examples leaves it out
        frames["train"].loc[5, "label"] = "meh"
        frames["validation"].loc[2, "label"] = "meh"
    elif change == "latin-1 csv":
        frames["train"].loc[0, "text"] = "caf\u00e9 cr\u00e8me"
        for name, df in frames.items():
            (folder / f"{name}.csv").write_bytes(df.to_csv(index=False).encode("latin-1", errors="replace"))
        return folder
    elif change == "malformed jsonl":
        ext = "jsonl"
        (folder / "train.jsonl").write_text('{"text": "fine", "label": "fresh"}\n{"text": "broken, "label"\n')
        frames["validation"].to_json(folder / "validation.jsonl", orient="records", lines=True)
        return folder
    elif change == "truncated parquet":
        frames["train"].to_parquet(folder / "train.parquet")
        data = (folder / "train.parquet").read_bytes()
        (folder / "train.parquet").write_bytes(data[: len(data) // 2])
        frames["validation"].to_parquet(folder / "validation.parquet")
        return folder
    elif change == "NER tags as CSV text":
        ner = pd.DataFrame({"tokens": ["['a', 'b']"] * 8, "tags": ["['O', 'O']"] * 4 + ["['B-x', 'O']"] * 4})
        ner.to_csv(folder / "train.csv", index=False)
        ner.to_csv(folder / "validation.csv", index=False)
        return folder
    for name, df in frames.items():
        getattr(df, f"to_{ext}")(folder / f"{name}.{ext}")
    return folder


DATA_CASES = {
    "missing texts": (r"train split of '.*data' has missing texts in column 'text' \(rows 3, 7\)", None),
    "empty texts": (r"train split of '.*data': every text in column 'text' is empty", None),
    "one label": (r"train split of '.*data' has 1 label\(s\); need at least 2", None),
    "unseen label": (r"validation split of '.*data' has label 'meh', not among train's labels \(fresh, rotten\)$", None),
    "label lost to the subsample": (r"validation split of '.*data' has label 'meh', not among train's labels \(fresh, rotten\) "
                                    r"\(train is a random 20 of its 40 rows: data.max_train_examples\)", None),
    "latin-1 csv": (r"cannot read .*train.csv: 'utf-8' codec can't decode", None),
    "malformed jsonl": (r"cannot read .*train.jsonl", None),
    "truncated parquet": (r"cannot read .*train.parquet", None),
    "NER tags as CSV text": (r"column 'tokens' must hold lists \(rows 0, 1, 2, 3, 4, \.\.\.\); CSV cannot hold lists", "token_classification"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pattern, task = DATA_CASES[case]
    folder = data_folder(tmp_path, case)
    text = BASE if task is None else BASE.replace("data: {", "data: {task: token_classification, ")
    if case == "label lost to the subsample":
        from kdsearch.data.sources import _subsample

        assert "meh" not in set(_subsample(pd.read_parquet(folder / "train.parquet"), 20).label)
        text = text.replace("max_train_examples: 64", "max_train_examples: 20")
    spec = write_spec(tmp_path, text, dataset=str(folder))
    code, err = run_main(["teachers", "train", str(spec)], capsys)
    one_line_error(code, err, pattern)
    assert not (tmp_path / "wd" / "teachers").exists()


# -- CLI misuse -------------------------------------------------------------------------------
def test_cli_misuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path)
    cases = [
        (["frobnicate"], r"invalid choice: 'frobnicate'"),
        (["run", str(spec), "--methd", "grid"], r"unrecognized arguments: --methd grid"),
        (["run", str(spec), "--method", "bayes"], r"argument --method: invalid choice: 'bayes'"),
        (["distill"], r"distill needs a spec: SPEC or --config SPEC"),
        (["jobs", "status"], r"jobs status needs a job id"),
        (["recommend"], r"recommend needs --data DATASET \(or --loo\)"),
        (["export", str(tmp_path)], r"the following arguments are required: --out"),
        (["export", str(tmp_path), "--out", str(tmp_path / "x")], r"export needs --cell CELL \(or --pareto\)"),
        (["export", str(tmp_path), "--cell", "a/b", "--pareto", "--out", str(tmp_path / "x")], r"--cell and --pareto"),
        (["export", str(tmp_path), "--cell", "a/b", "--out", str(tmp_path / "x"), "--quantize", "int4"],
         r"argument --quantize: invalid choice: 'int4'"),
        (["costs", str(tmp_path / "nowhere")], r"no search at '.*nowhere': the folder does not exist"),
        (["upgrade", str(tmp_path / "nowhere")], r"no search at '.*nowhere': the folder does not exist"),
        (["run", "--resume"], r"run needs a SPEC, or --resume DIR"),
        (["recommend", "--data", "rotten_tomatoes", "--store", str(tmp_path / "none"), "--max-ms", "2"], r"store '.*none' does not exist"),
        (["results", str(spec)], r"no search at '.*spec.yaml': it is a file, not a search folder"),
        (["compare", str(tmp_path / "nowhere")], r"no search at '.*nowhere': the folder does not exist"),
        (["run", str(tmp_path / "missing.yaml")], r"spec file '.*missing.yaml' does not exist"),
        (["run", str(spec), "--resume", str(tmp_path)], r"cannot resume '.*': it is not a kdsearch search folder"),
        (["run", str(spec), "--resume", "--method", "grid"], r"--method: a resumed search keeps its method"),
        (["run", str(spec), "--dataset", "imdb"], r"--dataset imdb: not a dataset of this spec \(its datasets: rotten_tomatoes\)"),
        (["run", "--resume", str(tmp_path), "--dataset", "rotten_tomatoes"], r"--dataset: a resumed search keeps its datasets"),
        (["submit", str(spec), "--dataset", "imdb", "--address", "http://127.0.0.1:1"], r"--dataset imdb: not a dataset of this spec"),
        (["recommend", "--data", "rotten_tomatoes", "--store", str(tmp_path / "none")], r"store '.*none' does not exist"),
        (["costs", str(tmp_path), "--threads", "-1"], rf"--threads: must be in 1..{os.cpu_count()} \(this machine's cores\), got -1"),
        (["costs", str(tmp_path), "--threads", "0"], r"--threads: must be in 1\.\.\d+ \(this machine's cores\), got 0"),
        (["costs", str(tmp_path), "--threads", "999"], r"--threads: must be in 1\.\.\d+ \(this machine's cores\), got 999"),
        (["bench", "deploy", "--threads", "999", "--out", str(tmp_path / "d.json")], r"--threads: must be in 1\.\.\d+"),
        (["bench", "deploy", "--spec", "nosuch", "--out", str(tmp_path / "d.json")], r"--spec nosuch: no such file, nor a shipped space \(.*quick"),
        (["bench", "replay", "--results", str(tmp_path), "--out", str(tmp_path / "r.json")], r"no full grid to replay under"),
        (["bench", "replay", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "r.json")], r"--results .*none: no such folder"),
        (["bench", "replay", "--methods", "foo", "--out", str(tmp_path / "r.json")], r"--methods: unknown method 'foo' \(known: auto, greedy"),
        (["bench", "replay", "--replays", "0", "--out", str(tmp_path / "r.json")], r"--replays: at least 1 replay per method and cell, got 0"),
        (["bench", "replay", "--replays", "-1", "--out", str(tmp_path / "r.json")], r"--replays: at least 1 replay per method and cell, got -1"),
        (["bench", "replay", "--seeds", "0", "--results", str(ROOT / "results"), "--out", str(tmp_path / "r.json")],
         r"--seeds: a replay uses 1\.\.10 of the grids' seeds, got 0"),
        (["bench", "replay", "--seeds", "99", "--results", str(ROOT / "results"), "--out", str(tmp_path / "r.json")],
         r"--seeds: a replay uses 1\.\.10 of the grids' seeds, got 99"),
        (["bench", "calibration", "--draws", "10", "--out", str(tmp_path / "c.json")], r"--draws: at least 100 draws"),
        (["confirm", str(tmp_path / "nowhere")], r"no search at '.*nowhere': the folder does not exist"),
        (["confirm", str(tmp_path), "--seeds", "0"], r"--seeds: confirmation seeds per config must be in 1..100, got 0"),
    ]
    for args, pattern in cases:
        code, err = run_main(args, capsys)
        one_line_error(code, err, pattern)
    assert not (tmp_path / "searches").exists() and not (tmp_path / "wd").exists()
    assert not list(tmp_path.glob("*.json")) and not (ROOT / "results" / "bench" / "d.json").exists()


def test_a_dataset_path_that_loops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop")
    code, err = run_main(["run", str(write_spec(tmp_path, dataset="./loop"))], capsys)
    one_line_error(code, err, r"data.dataset: './loop' cannot be resolved \(a symbolic link loop\)")
    assert not (tmp_path / "searches").exists() and not (tmp_path / "wd").exists()


def test_a_max_length_with_no_room_for_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["teachers", "train", str(write_spec(tmp_path)), "--set", "data.max_length=2"], capsys)
    one_line_error(code, err, r"data.max_length: 2 token\(s\) leave no room for text: the tokenizer adds 2 special tokens "
                              r"to every example; use at least 3")
    assert not (tmp_path / "wd" / "teachers").exists() and not list((tmp_path / "wd").glob("cache/data/*"))


def test_storage_and_workdir_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    spec = write_spec(tmp_path)
    code, err = run_main(["run", str(spec), "--set", f"search.storage={blocker}/searches"], capsys)
    one_line_error(code, err, r"search.storage: cannot write to .*a-file/searches")
    code, err = run_main(["run", str(spec), "--set", f"workdir={blocker}/wd"], capsys)
    one_line_error(code, err, r"workdir: cannot write to .*a-file/wd")
    if os.geteuid() != 0:  # root writes through permission bits; the file case above covers it there
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        code, err = run_main(["run", str(spec), "--set", f"search.storage={ro}/searches"], capsys)
        one_line_error(code, err, r"search.storage: cannot write to .*read-only/searches \(Permission denied\)")
    assert blocker.read_text() == "not a folder"


def test_a_huge_unbroken_word_does_not_stall_the_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import random

    from kdsearch.data.prepare import prepare_data
    from kdsearch.spec import DataSpec, TokenizerSpec

    rng = random.Random(0)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(2_000_000))  # hours for WordPiece's trainer
    frames = {"train": pd.DataFrame({"text": ["a fine film"] * 20 + [word] + ["a dull film"] * 20, "label": ["a"] * 21 + ["b"] * 20}),
              "validation": pd.DataFrame({"text": ["fine", "dull"], "label": ["a", "b"]})}
    (tmp_path / "data").mkdir()
    for name, df in frames.items():
        df.to_parquet(tmp_path / "data" / f"{name}.parquet")
    lines: list[str] = []
    data = prepare_data(DataSpec(dataset=str(tmp_path / "data"), tokenizer=TokenizerSpec(vocab_size=200)), tmp_path / "wd", log=lines.append)
    assert data.splits["train"].lengths[20] == 3  # [CLS] [UNK] [SEP]
    assert any("training a WordPiece tokenizer" in ln for ln in lines) and any("tokenized train" in ln for ln in lines)


# -- a finished search, then damage to each kind of file kdsearch writes ----------------------
@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, shared_ray: SharedRay) -> tuple[Path, Path]:
    """A finished greedy search (2 configs + baseline) and its spec; copied per test.

    Its own workdir: these tests damage the caches they then watch heal."""
    tmp = tmp_path_factory.mktemp("searched")
    spec = write_spec(tmp)
    shared_ray.ensure()
    assert main(["run", str(spec)]) == 0
    (folder,) = (tmp / "searches").glob("bad-*")
    return folder, spec


@pytest.fixture
def search(searched: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    folder, spec = searched
    copy = tmp_path / "searches" / folder.name
    shutil.copytree(folder, copy, symlinks=True)
    return copy, spec


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("command", ["results", "compare", "export"])
def test_truncated_trials_table(search: tuple[Path, Path], command: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = search
    truncate(folder / "trials.parquet")
    args = {"results": ["results", str(folder)], "compare": ["compare", str(folder), "--out", str(tmp_path / "report")],
            "export": ["export", str(folder), "--cell", "rotten_tomatoes/xs", "--out", str(tmp_path / "student")]}[command]
    code, err = run_main(args, capsys)
    one_line_error(code, err, r"trials.parquet: not a readable Parquet table .* damaged or truncated: restore it from a copy")
    assert not (tmp_path / "report" / "report.md").exists() and not (tmp_path / "student").exists()


@pytest.mark.parametrize("damage", ["truncated", "edited"])
def test_damaged_stored_spec(search: tuple[Path, Path], damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder, spec = search
    text = (folder / "spec.yaml").read_text()
    if damage == "truncated":
        (folder / "spec.yaml").write_text(text[: len(text) // 2])
        pattern = r"spec.yaml: has lost its last line"
    else:
        (folder / "spec.yaml").write_text(text.replace("alpha: 0.5", "alpha: 0.9"))
        pattern = r"spec.yaml: does not match its checksum \(was it edited\?\)"
    for args in (["results", str(folder)], ["run", str(spec), "--resume", str(folder)]):
        code, err = run_main(args, capsys)
        one_line_error(code, err, pattern)


def test_damaged_search_json(search: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder, spec = search
    (folder / "search.json").write_text('{"search_id": "bad-')
    code, err = run_main(["run", str(spec), "--resume", str(folder)], capsys)
    one_line_error(code, err, r"search.json: is not valid JSON")
    code, err = run_main(["recommend", "--data", "rotten_tomatoes", "--store", str(folder)], capsys)
    one_line_error(code, err, r"search.json: is not valid JSON")


def test_damaged_tune_state(search: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder, spec = search
    for state in (folder / "tune").glob("experiment_state-*.json"):
        truncate(state)
    code, err = run_main(["run", str(spec), "--resume", str(folder)], capsys)
    one_line_error(code, err, r"cannot resume .*: Ray Tune's state .*experiment_state-.*json is missing or damaged")


def test_planted_pickle_is_never_loaded(search: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    folder, spec = search
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
            return (os.system, (f"touch {marker}",))

    (state,) = sorted((folder / "tune").glob("searcher-state-*.pkl"))[-1:]
    assert json.loads(state.read_text())["format"].startswith("kdsearch-searcher-state")  # kdsearch writes JSON
    state.write_bytes(pickle.dumps(Payload()))
    code, err = run_main(["run", str(spec), "--resume", str(folder)], capsys)
    one_line_error(code, err, r"searcher-state-.*\.pkl: not kdsearch's JSON searcher state .* kdsearch does not unpickle it")
    assert not marker.exists()


def test_resume_refuses_a_folder_others_can_write(search: tuple[Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder, spec = search
    tuner = folder / "tune" / "tuner.pkl"
    tuner.chmod(tuner.stat().st_mode | stat.S_IWOTH)
    code, err = run_main(["run", str(spec), "--resume", str(folder)], capsys)
    one_line_error(code, err, r"cannot resume .*: .*tuner.pkl is writable by every user; .* whoever can write there can run code as you")
    tuner.chmod(tuner.stat().st_mode & ~stat.S_IWOTH)
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(folder / "tune", 4242, -1)
        code, err = run_main(["run", str(spec), "--resume", str(folder)], capsys)
        one_line_error(code, err, r"cannot resume .*: .*tune is owned by uid 4242, not by you")


def test_resume_of_a_finished_search_says_there_is_nothing_to_resume(search: tuple[Path, Path],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder, spec = search
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    code, err = run_main(["run", str(spec), "--resume", str(folder)], capsys)
    one_line_error(code, err, rf"nothing to resume: {folder.name} finished at \d{{4}}-\d\d-\d\d \d\d:\d\d \(kdsearch results "
                              r".* shows it; kdsearch confirm adds seeds to its picks\)")
    code, err = run_main(["run", str(spec), "--resume"], capsys)  # the spec's latest search: the same
    one_line_error(code, err, rf"nothing to resume: {folder.name} finished")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def unfinished(folder: Path) -> None:
    """As a search whose driver died before its end: no ``finished`` in its search.json."""
    meta = json.loads((folder / "search.json").read_text())
    meta.pop("finished")
    (folder / "search.json").write_text(json.dumps(meta))


def test_resume_may_change_resources_and_nothing_else(search: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder, spec = search
    unfinished(folder)
    before = (folder / "spec.yaml").read_text()
    code, err = run_main(["run", str(spec), "--resume", str(folder), "--set", "distill.alpha=1.0"], capsys)
    one_line_error(code, err, r"--set distill.alpha: --resume continues .* only search.resources.\* may change")
    code, err = run_main(["run", str(spec), "--resume", str(folder), "--set", "search.resources.cpu=1000"], capsys)
    one_line_error(code, err, r"search.resources.cpu: 1000 CPU per trial asked, but (this machine|the cluster's largest node) has")
    assert (folder / "spec.yaml").read_text() == before  # a refused change is not written


def test_export_refuses_a_folder_that_holds_something(search: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = search
    out = tmp_path / "student"
    out.mkdir()
    (out / "model.safetensors").write_text("the old model")
    code, err = run_main(["export", str(folder), "--cell", "rotten_tomatoes/xs", "--out", str(out)], capsys)
    one_line_error(code, err, r"--out .*student: exists and is not empty; pass --force to replace it")
    assert (out / "model.safetensors").read_text() == "the old model"
    code, err = run_main(["export", str(folder), "--cell", "rotten_tomatoes/xs", "--out", str(folder.parent), "--force"], capsys)
    one_line_error(code, err, r"--out .*: holds the search itself .* \(--force never replaces it\)")
    assert code == 2 and (folder / "trials.parquet").is_file()


def test_force_never_replaces_what_kdsearch_owns(search: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--force replaces an export; never the workdir (or a folder in or around it), a search
    folder, or the storage of searches."""
    from kdsearch.results.store import ResultStore

    folder, _ = search
    wd = Path(ResultStore(folder).spec().workdir)  # the copy's: its workdir follows it
    (wd / "cache").mkdir(parents=True, exist_ok=True)
    other = tmp_path / "elsewhere" / "other-search"
    shutil.copytree(folder, other)
    cases = {
        wd: r"is the workdir",
        wd / "cache": r"is inside the workdir",
        wd.parent: r"holds (the workdir|the search)",
        folder.parent: r"holds the search itself",
        folder: r"is the search itself",
        other: r"is a kdsearch search folder",
        other / "tune": r"is inside a kdsearch search folder",
        other.parent: r"holds a kdsearch search folder",
    }
    before = {p: sorted(q.name for q in p.iterdir()) for p in cases}
    for out, pattern in cases.items():
        code, err = run_main(["export", str(folder), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force"], capsys)
        one_line_error(code, err, rf"--out .*: {pattern}.*--force never replaces")
    assert {p: sorted(q.name for q in p.iterdir()) for p in cases} == before


def test_force_never_replaces_the_workdir_of_the_folder_it_runs_in(search: tuple[Path, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A search copied into incoming/ keeps a workdir relative to itself, which points elsewhere:
    `--out .kdsearch --force` run beside a real workdir must not replace it, however spelled."""
    from kdsearch.export import check_out
    from kdsearch.results.store import ResultStore

    folder, _ = search
    here = tmp_path / "here"
    (here / ".kdsearch" / "cache" / "data").mkdir(parents=True)
    (here / ".kdsearch" / "teachers").mkdir()
    (here / ".kdsearch" / "teachers" / "pool.json").write_text("[]")
    copy = here / "incoming" / folder.name
    shutil.copytree(folder, copy)
    monkeypatch.chdir(here)
    before = sorted(str(p.relative_to(here)) for p in here.rglob("*"))
    for out in (".kdsearch", "./.kdsearch/", "incoming/../.kdsearch"):
        code, err = run_main(["export", f"incoming/{folder.name}", "--cell", "rotten_tomatoes/xs", "--out", out, "--force"], capsys)
        one_line_error(code, err, r"--out .*: is this folder's workdir .*--force never replaces it")
    (here / "wd2" / "models" / "m").mkdir(parents=True)
    (here / "wd2" / "models" / "m" / "manifest.json").write_text("{}")
    monkeypatch.setenv("KDSEARCH_WORKDIR", str(here / "wd2"))
    code, err = run_main(["export", f"incoming/{folder.name}", "--cell", "rotten_tomatoes/xs", "--out", "wd2/../wd2", "--force"], capsys)
    one_line_error(code, err, r"--out wd2/\.\./wd2: is (the workdir|\$KDSEARCH_WORKDIR) .*--force never replaces it")
    monkeypatch.delenv("KDSEARCH_WORKDIR")
    # a workdir is known by what it holds too, wherever it is
    code, err = run_main(["export", f"incoming/{folder.name}", "--cell", "rotten_tomatoes/xs", "--out", "wd2", "--force"], capsys)
    one_line_error(code, err, r"--out wd2: is a kdsearch workdir .*--force never replaces it")
    # a new folder beside the copy, in the folder it was copied into, is fine (the README's --out student/)
    store = ResultStore(copy)
    check_out(Path("incoming/student"), store, store.spec(), force=False)
    check_out(Path("student"), store, store.spec(), force=False)
    # and a report never goes into a search folder
    code, err = run_main(["compare", str(copy), "--out", str(copy), "--force"], capsys)
    one_line_error(code, err, r"--out .*: is the search itself .*")
    code, err = run_main(["compare", str(copy), "--out", str(copy / "tune")], capsys)
    one_line_error(code, err, r"--out .*: is inside the search itself .*")
    assert sorted(str(p.relative_to(here)) for p in here.rglob("*")) == before + ["wd2", "wd2/models", "wd2/models/m",
                                                                                   "wd2/models/m/manifest.json"]


def test_compare_refuses_an_existing_report_or_a_file(search: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = search
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("my notes")
    code, err = run_main(["compare", str(folder), "--out", str(report)], capsys)
    one_line_error(code, err, r"--out .*report: holds a report already; pass --force to replace it")
    assert (report / "report.md").read_text() == "my notes" and sorted(p.name for p in report.iterdir()) == ["report.md"]
    (tmp_path / "a-file").write_text("x")
    code, err = run_main(["compare", str(folder), "--out", str(tmp_path / "a-file")], capsys)
    one_line_error(code, err, r"--out .*a-file: exists and is not a folder")
    assert (tmp_path / "a-file").read_text() == "x"


def test_compare_of_no_rows_leaves_no_report_folder(search: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    folder, _ = search
    table = pq.read_table(folder / "trials.parquet")
    pq.write_table(table.slice(0, 0), folder / "trials.parquet")
    code, err = run_main(["compare", str(folder), "--out", str(tmp_path / "report")], capsys)
    one_line_error(code, err, r"no trial rows in .*: nothing to compare")
    assert not (tmp_path / "report").exists()


def test_compare_of_rows_without_the_metric_names_the_column(search: tuple[Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    folder, _ = search
    table = pq.read_table(folder / "trials.parquet")
    pq.write_table(table.drop(["val_score"]), folder / "trials.parquet")
    code, err = run_main(["compare", str(folder), "--out", str(tmp_path / "report")], capsys)
    one_line_error(code, err, r"trials\.parquet: no column 'val_score' \(the metric compared; --metric names another\)")
    assert not (tmp_path / "report").exists() and "val_score" not in pq.read_schema(folder / "trials.parquet").names


def test_a_search_json_of_another_tool(search: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = search
    (folder / "search.json").write_text(json.dumps({"runs": [1, 2], "tool": "someone else's"}))
    for args in (["results", str(folder)], ["compare", str(folder)], ["recommend", "--loo", "--store", str(folder)]):
        code, err = run_main(args, capsys)
        one_line_error(code, err, r"search.json: not a kdsearch search \(it has no search_id")


@pytest.fixture(scope="module")
def diverged(tmp_path_factory: pytest.TempPathFactory, shared_ray: SharedRay) -> Path:
    """A search whose every trial diverged (learning rate 1e9): its rows are there, no score is."""
    tmp = tmp_path_factory.mktemp("diverged")
    shared_ray.ensure()
    assert main(["run", str(write_spec(tmp)), "--set", "student.train.learning_rate=1.0e9"]) == 2
    (folder,) = (tmp / "searches").glob("bad-*")
    return folder


def test_a_search_whose_every_trial_diverged(diverged: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert (pd.read_parquet(diverged / "trials.parquet").status == "diverged").all()
    code, err = run_main(["compare", str(diverged), "--out", str(tmp_path / "report")], capsys)
    one_line_error(code, err, r"no finished trial in .* \(every one failed or diverged\): nothing to compare")
    code, err = run_main(["export", str(diverged), "--cell", "rotten_tomatoes/xs", "--out", str(tmp_path / "student")], capsys)
    one_line_error(code, err, r"cell 'rotten_tomatoes/xs' has no finished distillation config to export \(every one failed or diverged\)")
    assert not (tmp_path / "report").exists() and not (tmp_path / "student").exists()
    assert main(["results", str(diverged)]) == 0


def test_export_force_replaces_the_folder_whole(search: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = search
    out = tmp_path / "student"
    out.mkdir()
    (out / "stale.txt").write_text("from an older export")
    (out / "model.safetensors").write_text("the old model")
    assert main(["export", str(folder), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force"]) == 0  # (collapsed, too)
    assert f"written: {out}" in capsys.readouterr().out
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").read_bytes() != b"the old model"
    assert {"config.json", "kdsearch.yaml", "README.md", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".student")]  # no temporary folder left


def test_damaged_exported_spec(search: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = search
    out = tmp_path / "student"
    assert main(["export", str(folder), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force"]) == 0
    capsys.readouterr()
    (out / "kdsearch.yaml").write_text((out / "kdsearch.yaml").read_text().replace("teacher: t_ll", "teacher: [t_ll"))
    code, err = run_main(["distill", "--config", str(out / "kdsearch.yaml")], capsys)
    one_line_error(code, err, r"kdsearch.yaml: not valid YAML at line \d+")


# -- caches heal; the pool index and checkpoints are named --------------------------------------
CACHES = {  # what the warning calls it, its folder under cache/, the file damaged
    "teacher output": ("teacher_outputs", "train.safetensors"),
    "tokenized data": ("data", "train.safetensors"),
    "tokenizer": ("tokenizers", "tokenizer.json"),
}


@pytest.mark.parametrize("which", list(CACHES))
def test_a_damaged_cache_heals(search: tuple[Path, Path], which: str, capsys: pytest.CaptureFixture[str]) -> None:
    from kdsearch.spec import load_spec

    folder, spec = search
    wd = Path(load_spec(spec).workdir)
    sub, name = CACHES[which]
    damaged = sorted((wd / "cache" / sub).glob(f"*/{name}"))
    assert damaged
    for f in damaged:
        truncate(f)
    capsys.readouterr()
    assert main(["distill", str(spec), "--json"]) == 0
    out = capsys.readouterr()
    warned = [ln for ln in out.err.splitlines() if ln.startswith("kdsearch: warning:")]
    assert any(ln.startswith(f"kdsearch: warning: {which} cache") and "is damaged" in ln and ln.endswith("rebuilding it")
               for ln in warned), out.err
    assert json.loads(out.out[out.out.index("{"):])["status"] == "ok"
    assert "Traceback" not in out.err


def test_damaged_pool_index_and_checkpoint(search: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from kdsearch.spec import load_spec

    folder, spec = search
    wd = Path(load_spec(spec).workdir)
    (index,) = (wd / "teachers").glob("*/pool.json")
    saved = index.read_text()
    index.write_text(saved[:20])
    code, err = run_main(["teachers", "list", str(spec)], capsys)
    one_line_error(code, err, r"pool.json: the teacher pool's index is damaged .* delete it to retrain the pool")
    index.write_text(saved)
    checkpoint = Path(json.loads(saved)[-1]["path"]) / "model.safetensors"
    backup = checkpoint.read_bytes()
    try:
        truncate(checkpoint)
        code, err = run_main(["distill", str(spec), "--set", f"distill.teacher={json.loads(saved)[-1]['name']}"], capsys)
        one_line_error(code, err, r"cannot load model '.*epoch1'")
    finally:
        checkpoint.write_bytes(backup)
