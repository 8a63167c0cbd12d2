"""Confirmation seeds on a real Ray: a search's picks trained again on seeds it was not picked
on, the verdicts read from them alone, and `kdsearch confirm` continued after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kdsearch.search.confirm import CONFIRM_SEEDS_FROM, confirm_seeds
from kdsearch.search.runner import run_search
from kdsearch.spec import load_spec
from tests.conftest import SharedRay

ROOT = Path(__file__).resolve().parents[2]

# BBC News learns in seconds where Rotten Tomatoes' tiny slices collapse: picks need a best
LEARNS = """
name: {name}
data: {{dataset: bbc_news, max_length: 64, max_train_examples: 512, max_eval_examples: 128, tokenizer: {{vocab_size: 1000}}}}
teachers: {{model: xs, seeds: [0], train: {{epochs: 3, batch_size: 32, learning_rate: 5.0e-3}}}}
student: {{model: xs, dropout: 0.0, train: {{epochs: 2, batch_size: 16, learning_rate: 3.0e-3}}}}
distill: {{teacher: t_hs, loss: ce, alpha: 0.5, tau_t: 2.0, tau_s: same}}
workdir: {workdir}
search:
  method: greedy
  space: {{loss: [ce, mse]}}
  seeds: [0]
  storage: {storage}
  costs: false
  confirm_seeds: 1
  race: {{max_seeds: 3, min_seeds: 2}}
"""


def test_confirmation_seeds_never_meet_selection_seeds() -> None:
    assert confirm_seeds([0, 1, 2], 3) == [CONFIRM_SEEDS_FROM, CONFIRM_SEEDS_FROM + 1, CONFIRM_SEEDS_FROM + 2]
    assert confirm_seeds([CONFIRM_SEEDS_FROM, CONFIRM_SEEDS_FROM + 2], 2) == [CONFIRM_SEEDS_FROM + 1, CONFIRM_SEEDS_FROM + 3]


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory, workdir: Path, shared_ray: SharedRay) -> Path:
    tmp = tmp_path_factory.mktemp("confirm")
    spec = tmp / "learns.yaml"
    spec.write_text(LEARNS.format(name="learns", workdir=workdir, storage=tmp / "searches"))
    shared_ray.ensure()
    return run_search(load_spec(spec), log=lambda *a, **k: None)


def test_a_search_confirms_its_picks_on_fresh_seeds(confirmed: Path) -> None:
    every = pd.read_parquet(confirmed / "trials.parquet")
    select, confirm = every[every.role == "select"], every[every.role == "confirm"]
    assert set(confirm.seed) == {CONFIRM_SEEDS_FROM} and not set(confirm.seed) & set(select.seed)
    # the stage was raced: seed 0 for both losses, then seeds 1 and 2 (race rounds 1, 2) for those
    # a paired test could not yet separate from the leader; never a (config, seed) twice
    assert not select.duplicated(["config_key", "seed"]).any()
    kd = select[select.stage != "baseline"]
    assert set(kd[kd.race_round == 0].seed) == {0} and set(kd.seed) <= {0, 1, 2}
    assert (kd.groupby("seed").race_round.first() == kd.groupby("seed").seed.first()).all()
    assert kd.groupby("config_key").seed.nunique().max() == 3  # the leader raced to max_seeds (separation needs 2 shared)
    assert (confirm.status == "ok").all() and not confirm.duplicated(["config_key", "seed"]).any()
    best = yaml.safe_load((confirmed / "best.yaml").read_text())["bbc_news/xs"]
    assert "config" in best, "BBC News' picks must not collapse here"
    kd = select[select.stage != "baseline"].groupby("config_key").val_score.mean()
    # the best (by its selection seeds), no KD, and the paper's recommendation (t_ll, tau_s 1: the
    # spec's t_hs and tau_s same are not it, so it was built from the best and trained here only)
    stages = confirm.groupby("stage").config_key.first()
    assert set(stages.index) == {"confirm:best", "baseline", "confirm:reference"}
    assert stages["confirm:best"] == kd.idxmax()
    ref = confirm[confirm.stage == "confirm:reference"].iloc[0]
    assert ref.teacher == "t_ll" and ref.tau_s == 1.0 and not ref.tau_s_same and ref.loss == "ce" and ref.alpha == 0.5
    assert confirm[confirm.stage == "confirm:best"].tau_s_same.all()  # trained as searched: tau_s follows tau_t
    assert ref.config_key not in set(select.config_key)
    # the verdicts come from the confirmation rows alone, on the test split
    conf = best["confirmed"]
    by = confirm.groupby("stage").test_score.mean()
    assert conf["metric"] == "test_score" and conf["seeds"] == 1 and conf["best"] == pytest.approx(by["confirm:best"], abs=1e-4)
    assert conf["no KD"]["score"] == pytest.approx(by["baseline"], abs=1e-4)
    assert conf["reference"]["score"] == pytest.approx(by["confirm:reference"], abs=1e-4)
    assert best["gain_verdict"] == conf["no KD"]["verdict"] == (
        "cannot tell: 1 seed(s) can never show a difference at 0.05 with the sign-flip test; 6 can")
    # the selection rows the search picked from are unchanged by them
    assert best["val_score"] == pytest.approx(kd.max(), abs=1e-4)


def kdsearch(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdsearch", *args], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.slow
def test_kdsearch_confirm_adds_seeds_and_resumes_after_ctrl_c(confirmed: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / confirmed.name
    shutil.copytree(confirmed, folder)
    before = pd.read_parquet(folder / "trials.parquet")
    ended = json.loads((folder / "search.json").read_text())["finished"]
    p = kdsearch("confirm", str(folder), "--seeds", "2")
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if len(pd.read_parquet(folder / "trials.parquet")) > len(before):
            break
        time.sleep(0.2)
    assert p.poll() is None, "confirmation ended before it could be interrupted"
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=200)
    assert p.returncode == 130, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"kdsearch: confirmation of {folder.name} interrupted (SIGINT)") and last.endswith(
        f"continue it with: kdsearch confirm {folder} --seeds 2"), err
    assert "Traceback" not in err
    # run again: only what is missing trains, and no (config, seed) twice
    r = subprocess.run([sys.executable, "-m", "kdsearch", "confirm", str(folder), "--seeds", "2"],
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    every = pd.read_parquet(folder / "trials.parquet")
    confirm = every[(every.role == "confirm") & (every.status == "ok")]
    assert not confirm.duplicated(["config_key", "seed"]).any()
    assert (confirm.groupby("config_key").seed.nunique() == 2).all() and confirm.config_key.nunique() == 3
    assert set(confirm.seed) == set(confirm_seeds([0], 2)) and not set(confirm.seed) & {0}
    assert (every[every.role == "select"].reset_index(drop=True).equals(before[before.role == "select"].reset_index(drop=True)))
    assert "confirmed on 2 fresh seed(s), test_score (test split)" in r.stdout
    # and once more: nothing left to do
    again = subprocess.run([sys.executable, "-m", "kdsearch", "confirm", str(folder), "--seeds", "2"],
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "every confirmed config has its 2 fresh seed(s) already" in again.stdout
    assert len(pd.read_parquet(folder / "trials.parquet")) == len(every)
    assert json.loads((folder / "search.json").read_text())["finished"] == ended  # when the search itself ended
