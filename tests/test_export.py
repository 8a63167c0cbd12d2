"""Export: a real search's best config -> retrained student -> transformers.pipeline reproduces it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kdsearch.cli import main
from kdsearch.spec import load_spec


@pytest.fixture(scope="module")
def searched(tiny_searches) -> Path:
    return tiny_searches["grid"]


def test_export_then_pipeline_reproduces_the_metric(searched: Path, tmp_path: Path, capsys) -> None:
    from transformers import pipeline

    out = tmp_path / "student"
    # this tiny grid's students collapse (one class): refused, nothing written ...
    assert main(["export", str(searched), "--cell", "rotten_tomatoes/xs", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every config collapsed" in err[0] and "--force" in err[0] and not out.exists()
    # ... unless forced, and then the card says so
    assert main(["export", str(searched), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force"]) == 0
    assert "**Collapsed.**" in (out / "README.md").read_text()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "kdsearch.yaml", "README.md"):
        assert (out / f).is_file(), f
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["fresh", "rotten"]
    metrics = json.loads((out / "metrics.json").read_text())
    # the retrained student is the search's best-seed trial again (same seed, same numbers)
    assert metrics["retrained"]["val_score"] == pytest.approx(metrics["search_row"]["val_score"], abs=1e-6)
    assert metrics["retrained"]["val_loss"] == pytest.approx(metrics["search_row"]["val_loss"], abs=1e-5)
    assert metrics["reproduces_search_row"] and metrics["trained"] == "alone"
    # the exported spec is the best config, rerunnable as is
    exported = yaml.safe_load((out / "kdsearch.yaml").read_text())
    trials = pd.read_parquet(searched / "trials.parquet")
    assert exported["distill"]["loss"] in set(trials.loss) and exported["student"]["seed"] in (0, 1)
    # a plain transformers pipeline on the validation split gives the reported accuracy
    from kdsearch.data.sources import load_raw

    val = load_raw(load_spec(out / "kdsearch.yaml").data).splits["validation"]  # the slice the search scored
    assert len(val) == 128
    clf = pipeline("text-classification", model=str(out), device=-1)
    preds = [p["label"] for p in clf(val.text.tolist(), truncation=True, batch_size=32)]
    acc = sum(p == y for p, y in zip(preds, val.label)) / len(val)
    assert abs(acc - metrics["retrained"]["val_accuracy"]) <= 0.005
    assert "kdsearch distill --config kdsearch.yaml" in (out / "README.md").read_text()


def test_exported_spec_reruns_with_distill(searched: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "student"
    assert main(["export", str(searched), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force"]) == 0
    reported = json.loads((out / "metrics.json").read_text())["retrained"]["val_score"]
    capsys.readouterr()
    assert main(["distill", "--config", str(out / "kdsearch.yaml"), "--json"]) == 0
    printed = capsys.readouterr().out
    rerun = json.loads(printed[printed.index("{") :])
    assert rerun["val_score"] == pytest.approx(reported, abs=1e-6)


def test_export_unknown_cell(searched: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(searched), "--cell", "imdb/xs", "--out", str(tmp_path / "x")]) == 2
    assert "no cell 'imdb/xs'" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_student_from_a_fused_search_exports_as_searched(local_ray, tiny_spec, tmp_path: Path) -> None:
    """Dropout on: a member's masks depend on its population, so the export retrains the whole
    population and takes the member; its validation score and loss are the row's (a student
    retrained alone misses the loss by ~2e-4 here)."""
    from kdsearch.search.runner import run_search

    spec = load_spec(tiny_spec(name="fusedexport", seeds="[0, 1]", train=256),
                     ["search.fuse=4", "search.method=grid", "search.space={loss: [ce, mse]}", "student.dropout=0.1"])
    folder = run_search(spec, log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    assert (trials.members > 1).any()
    out = tmp_path / "student"
    assert main(["export", str(folder), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trained"].startswith("in its population of ") and int(metrics["search_row"]["members"]) > 1
    assert metrics["retrained"]["val_score"] == pytest.approx(metrics["search_row"]["val_score"], abs=1e-6)
    assert metrics["retrained"]["val_loss"] == pytest.approx(metrics["search_row"]["val_loss"], abs=1e-6)
    assert metrics["reproduces_search_row"]
