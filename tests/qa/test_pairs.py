"""Sentence pairs in vitaminc's layout (evidence, claim, True/False/Neither): the cut that
keeps the claim, and a search through results and an export whose pipeline takes a pair."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kdsearch.data.prepare import prepare_data
from kdsearch.spec import DataSpec, TokenizerSpec
from tests.conftest import SharedRay
from tests.qa.handmade import pair_folder


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pair_folder(tmp_path_factory.mktemp("pairs") / "vitaminc_like")


def test_a_long_evidence_is_cut_and_its_claim_kept_whole(pair_dir: Path, workdir: Path) -> None:
    data = prepare_data(DataSpec(dataset=str(pair_dir), max_length=24, tokenizer=TokenizerSpec(vocab_size=300)), workdir,
                        log=lambda s: None)
    assert data.task == "pair_classification" and data.label_names == ["False", "Neither", "True"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    train = pd.read_parquet(pair_dir / "train.parquet")
    enc = data.splits["train"]
    cut = 0
    for i in range(len(train)):
        n = int(enc.lengths[i])
        claim = tok(train.text_pair[i], add_special_tokens=False)["input_ids"]
        second = enc.input_ids[i, :n][enc.token_type_ids[i, :n] == 1].tolist()
        assert second[:-1] == claim  # the claim whole, then [SEP]
        full = len(tok(train.text[i], train.text_pair[i])["input_ids"])
        cut += full > 24
        assert n == min(full, 24)
    assert cut > len(train) // 2  # most evidence here is longer than its room: the cut was exercised


PAIR_SPEC = """
name: pairs
data: {{dataset: {data}, max_length: 24, tokenizer: {{vocab_size: 300}}}}
teachers: {{model: xs, seeds: [0], train: {{epochs: 3, batch_size: 16, learning_rate: 3.0e-3}}}}
student: {{model: xxs, train: {{epochs: 1, batch_size: 16, learning_rate: 3.0e-3}}}}
distill: {{teacher: t_ll, loss: ce, alpha: 0.5, tau_t: 2.0, tau_s: 1.0}}
workdir: {workdir}
search:
  method: greedy
  space: {{loss: [ce, dist]}}
  seeds: [0, 1]
  storage: {storage}
  confirm_seeds: 0
"""


def test_a_pair_search_runs_through_results_and_export(pair_dir: Path, workdir: Path, tmp_path: Path,
                                                       local_ray: SharedRay) -> None:
    from transformers import pipeline

    from kdsearch.cli import main
    from kdsearch.search.runner import run_search
    from kdsearch.spec import load_spec

    spec = tmp_path / "pairs.yaml"
    spec.write_text(PAIR_SPEC.format(data=pair_dir, workdir=workdir, storage=tmp_path / "searches"))
    folder = run_search(load_spec(spec, ["student.dropout=0.0"]), log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    assert (trials.status == "ok").all() and set(trials.dataset) == {"vitaminc_like"}  # a name, not a path
    assert str(tmp_path) not in (folder / "search.json").read_text()
    out = tmp_path / "export"
    assert main(["export", str(folder), "--cell", "vitaminc_like/xxs", "--out", str(out), "--force"]) == 0
    card = (out / "README.md").read_text()
    assert '"text_pair"' in card and 'truncation="only_first"' in card
    student = pipeline("text-classification", model=str(out))
    evidence = "Alice moved to Lisbon as a child. " * 12  # far past the 24 tokens it trained on
    got = student({"text": evidence, "text_pair": "Alice grew up in Lisbon."}, truncation="only_first")
    got = got[0] if isinstance(got, list) else got
    assert got["label"] in {"True", "False", "Neither"} and 0 < got["score"] <= 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["retrained"]["val_score"] == pytest.approx(metrics["search_row"]["val_score"], abs=1e-6)
