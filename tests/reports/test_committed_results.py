"""The committed reproductions: each report is what its Parquet gives, to the byte."""

from pathlib import Path

import pandas as pd
import pytest

from kdsearch.paths import DEFAULT_STORE
from kdsearch.reports.compare import compare

RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.mark.parametrize("name", ["reproduction", "pretrained"])
def test_committed_report_matches_its_parquet(name: str, tmp_path: Path) -> None:
    folders = sorted((RESULTS / name).glob(f"{name}-*"))
    assert len(folders) >= 3, f"results/{name} should hold the greedy, grid and Optuna searches"
    text = compare(folders, tmp_path, log=lambda s: None)
    assert text == (RESULTS / name / "report.md").read_text()
    methods = {pd.read_parquet(f / "trials.parquet").method.iloc[0] for f in folders}
    assert methods == {"greedy", "grid", "optuna"}


@pytest.mark.parametrize("name", ["reproduction", "pretrained"])
def test_the_default_store_ships_the_committed_searches(name: str) -> None:
    """The recommender's default store (package data) holds every committed search, unchanged."""
    for folder in (RESULTS / name).glob(f"{name}-*"):
        shipped = DEFAULT_STORE / name / folder.name
        for file in ("trials.parquet", "spec.yaml", "search.json"):
            assert (shipped / file).read_bytes() == (folder / file).read_bytes(), shipped / file


def test_committed_distiller_runs_have_three_seeds_per_config() -> None:
    folders = sorted((RESULTS / "distiller").glob("distiller-*"))
    assert folders, "results/distiller has no search"
    trials = pd.concat(pd.read_parquet(f / "trials.parquet") for f in folders)
    assert (trials.status == "ok").all()
    assert (trials.groupby(["cell", "config_key"]).seed.nunique() == 3).all()
