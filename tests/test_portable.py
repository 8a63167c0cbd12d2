"""Stored searches are records readable on any machine, and the suite cannot see its author's.

The committed searches are copied to a new place and read from an empty folder, with no
model fetched, no workdir and no teacher pool; an older store that names the absolute paths
of another machine reads the same; no committed text file holds a path of this machine.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kdsearch.cli import main
from kdsearch.knobs import RESULTS_FORMAT
from kdsearch.paths import DEFAULT_STORE
from kdsearch.results.store import SPEC_SEAL, ResultStore
from tests.conftest import SANDBOX

ROOT = Path(__file__).resolve().parents[1]
GENERIC_ROOTS = {"/", "/tmp", "/var", "/home", "/Users", "/usr", "/opt", "/private", "/mnt", "/srv"}


def test_the_suite_runs_in_a_sandbox_of_its_own() -> None:
    for var in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "TMPDIR"):
        assert Path(os.environ[var]).is_relative_to(SANDBOX), var
    assert Path.cwd().is_relative_to(SANDBOX) and not Path.cwd().is_relative_to(ROOT)
    assert "KDSEARCH_WORKDIR" not in os.environ


def machine_paths() -> list[str]:
    """Absolute paths that only this machine has: the checkout, the folders above it, the home."""
    paths = {str(ROOT), pwd.getpwuid(os.getuid()).pw_dir, str(SANDBOX)}
    paths |= {str(p) for p in ROOT.parents if str(p) not in GENERIC_ROOTS}
    return sorted(p.rstrip("/") + "/" for p in paths if p not in GENERIC_ROOTS)


def test_no_committed_text_file_holds_a_path_of_this_machine() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    needles = machine_paths()
    assert needles and str(ROOT) + "/" in needles
    found = []
    for name in filter(None, files):
        path = ROOT / name
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary: Parquet, PNG
        text = data.decode("utf-8", errors="replace")
        found += [f"{name}: {n}" for n in needles if n in text]
    assert not found, found


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped store, copied (links followed) to a folder that is neither the checkout nor near it."""
    dest = tmp_path_factory.mktemp("elsewhere") / "deep" / "store"
    shutil.copytree(DEFAULT_STORE, dest, symlinks=False)
    return dest


def test_the_shipped_store_reads_from_an_empty_folder(elsewhere: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["recommend", "--loo", "--store", str(elsewhere / "pretrained")]) == 0
    assert capsys.readouterr().out == (ROOT / "results/pretrained/recommend_loo.txt").read_text()
    assert main(["recommend", "--loo", "--store", str(elsewhere / "breadth")]) == 0
    assert capsys.readouterr().out == (ROOT / "results/breadth/recommend_loo.txt").read_text()
    assert main(["recommend", "--data", "bbc_news", "--store", str(elsewhere)]) == 0
    assert "recommended config" in capsys.readouterr().out
    searches = sorted((elsewhere / "pretrained").glob("pretrained-*"))
    assert main(["compare", *map(str, searches), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").read_text() == (ROOT / "results/pretrained/report.md").read_text()
    assert main(["results", str(searches[0])]) == 0
    assert "best rotten_tomatoes/minilm-l6:first2" in capsys.readouterr().out
    spec = ResultStore(searches[0]).spec()  # names, not folders; paths follow the copy
    assert spec.student.model == "minilm-l6:first2" and spec.search.storage == str(searches[0].parent)
    assert not (tmp_path / ".kdsearch").exists()  # reading made no workdir


def test_export_of_a_shipped_pretrained_cell(elsewhere: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (tiny, fake) minilm-l6 fetched here: the teacher pool is trained as the search's was,
    the student retrained; the card says that it does not reproduce the search's row."""
    from tests.test_preflight import fetched

    wd = fetched(tmp_path)
    monkeypatch.setenv("KDSEARCH_WORKDIR", str(wd))
    monkeypatch.chdir(tmp_path)
    grid = next(f for f in sorted((elsewhere / "pretrained").glob("pretrained-*")) if ResultStore(f).meta()["method"] == "grid")
    out = tmp_path / "student"
    assert main(["export", str(grid), "--cell", "rotten_tomatoes/xs", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "does not reproduce the searched one beyond 1e-05: val_score " in printed and f"written: {out}" in printed
    # the search read elsewhere: its pool is not in the workdir, and export says so before it trains one
    assert f"warning: no teacher pool for rotten_tomatoes in {wd}" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reproduces_search_row"] is False and metrics["trained"] == "alone"
    assert "Does not reproduce its search row" in (out / "README.md").read_text()
    exported = yaml.safe_load((out / "kdsearch.yaml").read_text())
    assert exported["teachers"]["model"] == "minilm-l6" and exported["data"]["tokenizer"]["name"] == "minilm-l6"
    assert list((wd / "teachers").glob("*/minilm-l6-*-seed0-epoch4"))  # the pool, as the search trained it


def older_store(tmp_path: Path) -> Path:
    """A results-format 2 search as another machine wrote it: its absolute paths, fetched models by folder."""
    src = ROOT / "results/pretrained/pretrained-20261126-004650"
    folder = tmp_path / "moved" / src.name
    shutil.copytree(src, folder)
    raw = yaml.safe_load(ResultStore(folder).spec_text())
    there = "/home/someone/kd"

    def old(v: str) -> str:
        return f"{there}/.kdsearch/models/{v}" if v.startswith("minilm-l6") else v

    raw["workdir"], raw["search"]["storage"] = f"{there}/.kdsearch", f"{there}/results/pretrained"
    for section in (raw["data"], *raw["search"]["datasets"]):
        section["tokenizer"]["name"] = old(section["tokenizer"]["name"])
    for section in (raw["teachers"], raw["student"], *raw["search"]["students"]):
        section["model"] = old(section["model"])
    ResultStore(folder).write_spec(yaml.safe_dump(raw, sort_keys=False))
    meta = json.loads((folder / "search.json").read_text())
    meta.pop("datasets")
    meta.pop("finished")
    (folder / "search.json").write_text(json.dumps({**meta, "results_format": 2}))
    return folder


def test_an_older_store_reads_as_a_portable_one_and_upgrades(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder = older_store(tmp_path)
    assert "/home/someone/kd/.kdsearch/models/minilm-l6:first2" in (folder / "spec.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    spec = ResultStore(folder).spec()
    assert (spec.student.model, spec.data.tokenizer.name, [s.model for s in spec.search.students][:2]) == (
        "minilm-l6:first2", "minilm-l6", ["minilm-l6:first1", "minilm-l6:first2"])
    # the workdir kept its place beside the results, as it was there
    assert spec.workdir == str((folder / "../../../.kdsearch").resolve()) and spec.search.storage == str(folder.parent)
    assert main(["results", str(folder)]) == 0 and main(["recommend", "--loo", "--store", str(folder)]) == 0
    capsys.readouterr()
    assert main(["upgrade", str(folder)]) == 0
    assert f"results format 2 -> {RESULTS_FORMAT}" in capsys.readouterr().out
    text = (folder / "spec.yaml").read_text()
    assert "/home/someone" not in text and "workdir: ../../../.kdsearch" in text and text.count(SPEC_SEAL) == 1
    meta = json.loads((folder / "search.json").read_text())
    assert meta["results_format"] == RESULTS_FORMAT and meta["datasets"]["wnut16"]["labels"] == 21
    assert ResultStore(folder).spec() == spec  # the same spec, now from the files themselves
    assert main(["upgrade", str(folder)]) == 0 and "unchanged" in capsys.readouterr().out
