"""The committed reproduction: its report is what its Parquet gives, to the byte."""

from pathlib import Path

import pandas as pd

from kdsearch.reports.compare import compare

RESULTS = Path(__file__).resolve().parents[2] / "results"


def test_committed_report_matches_its_parquet(tmp_path: Path) -> None:
    folders = sorted((RESULTS / "reproduction").glob("reproduction-*"))
    assert len(folders) >= 3, "results/reproduction should hold the greedy, grid and Optuna searches"
    text = compare(folders, tmp_path, log=lambda s: None)
    assert text == (RESULTS / "reproduction" / "report.md").read_text()
    methods = {pd.read_parquet(f / "trials.parquet").method.iloc[0] for f in folders}
    assert methods == {"greedy", "grid", "optuna"}


def test_committed_distiller_runs_have_three_seeds_per_config() -> None:
    folders = sorted((RESULTS / "distiller").glob("distiller-*"))
    assert folders, "results/distiller has no search"
    trials = pd.concat(pd.read_parquet(f / "trials.parquet") for f in folders)
    assert (trials.status == "ok").all()
    assert (trials.groupby(["cell", "config_key"]).seed.nunique() == 3).all()
