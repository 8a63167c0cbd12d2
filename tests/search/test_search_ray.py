"""Whole searches on a real local Ray: greedy, grid, Optuna; faults; resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from kdsearch.search.runner import run_search
from kdsearch.spec import load_spec
from tests.conftest import SharedRay

ROOT = Path(__file__).resolve().parents[2]
TRIAL_COLUMNS = {
    "search_id", "trial_id", "population", "members", "val_collapsed", "tau_s_same", "cpus", "cell", "dataset", "student", "method", "stage", "teacher", "loss", "alpha", "tau_t",
    "tau_s", "seed", "status", "error", "val_score", "val_accuracy", "val_loss", "val_agreement", "val_kl",
    "best_val_score", "test_score", "test_accuracy", "wall_s", "node", "teacher_name", "config_key",
}


def means(trials: pd.DataFrame) -> pd.Series:
    return trials[trials.status == "ok"].groupby("config_key")["val_score"].mean()


def test_greedy_search_end_to_end(tiny_searches: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from kdsearch.cli import main

    folder = tiny_searches["greedy"]
    # readable by pyarrow and by pandas, same rows
    table = pq.read_table(folder / "trials.parquet")
    every = pd.read_parquet(folder / "trials.parquet")
    assert table.num_rows == len(every)
    trials, confirm = every[every.role == "select"], every[every.role == "confirm"]
    assert TRIAL_COLUMNS <= set(trials.columns)
    assert trials["val_score"].dtype == "float64" and trials["seed"].dtype == "int64"
    assert (trials.status == "ok").all() and trials.method.eq("greedy").all()
    assert trials.device.eq("cpu").all()  # no GPU asked: the CPU path, always tested
    # one row per (config, seed): 2 baselines, stage 0 (t_hs, t_ll), 1 (mse), 2 (same)
    assert not trials.duplicated(["config_key", "seed"]).any()
    assert trials.groupby("stage").size().to_dict() == {"baseline": 2, "0": 4, "1": 2, "2": 2}
    assert all(sorted(g) == [0, 1] for _, g in trials.groupby("config_key").seed)
    m = means(trials)
    s0 = trials[trials.stage == "0"]
    assert set(s0.teacher) == {"t_hs", "t_ll"} and set(s0.loss) == {"ce"} and set(s0.tau_s) == {1.0}
    assert trials.tau_s.dtype == "float64" and not trials.tau_s_same[trials.stage != "2"].any()
    assert trials[trials.stage == "2"].tau_s_same.all()  # tau_s: same at tau_t 2 is 2.0, flagged
    # the stage-1 teacher is stage 0's winner by mean over seeds (ties to the default t_ll)
    by_teacher = {t: m[g.config_key.iloc[0]] for t, g in s0.groupby("teacher")}
    winner = "t_hs" if by_teacher["t_hs"] > by_teacher["t_ll"] else "t_ll"
    s1 = trials[trials.stage == "1"]
    assert set(s1.teacher) == {winner} and set(s1.loss) == {"mse"}
    # fidelity is measured for every trial, baselines included
    assert trials.val_agreement.between(0, 1).all() and (trials.val_kl >= 0).all()
    epochs = pd.read_parquet(folder / "epochs.parquet")
    trained = every[every.duplicate_of.isna()] if "duplicate_of" in every else every  # a copy trained nothing
    assert len(epochs) == len(trained) and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert confirm.empty  # search.confirm_seeds: 0 (tests/search/test_confirm.py confirms)
    best = yaml.safe_load((folder / "best.yaml").read_text())["rotten_tomatoes/xs"]
    kd = trials[trials.stage != "baseline"]
    if best.get("status") == "every config collapsed":  # students of 1 epoch on 384 examples may learn nothing
        assert kd.val_collapsed.all() and best["majority_class_score"] == pytest.approx(kd.val_majority.iloc[0], abs=1e-4)
    else:
        assert best["val_score"] == pytest.approx(means(kd).max(), abs=1e-4)
        assert best["baseline_no_kd"] == pytest.approx(means(trials[trials.stage == "baseline"]).iloc[0], abs=1e-4)
        assert best["gain_verdict"] == "no verdict: not confirmed on fresh seeds"
    # finished trials keep no weights: disk stays bounded
    assert not list((folder / "tune").glob("*/checkpoint_*/trainer.pt"))
    # and `kdsearch results` shows them
    capsys.readouterr()
    assert main(["results", str(folder), "--trials"]) == 0
    out = capsys.readouterr().out
    trials = pd.read_parquet(folder / "trials.parquet")
    assert out.count("rotten_tomatoes/xs") >= len(trials) + trials.config_key.nunique()  # each trial, each config
    assert ("best rotten_tomatoes/xs:" in out or "rotten_tomatoes/xs: every config collapsed" in out) and "configs (mean val_score over seeds)" in out
    # the tables' columns are the knobs that vary; the others (never searched here) are named once
    assert "(every config has ensemble_k = 3, " in out and "(every trial has ensemble_k = 3, " in out
    header = next(line for line in out.splitlines() if line.startswith("cell ") and " mean " in line).split()
    assert {"teacher", "loss", "tau_s"} <= set(header) and not {"ensemble_k", "mi_alpha", "augment"} & set(header)


def test_fused_greedy_picks_the_same_winners(tiny_searches: dict[str, Path], local_ray: SharedRay,
                                             tiny_spec: Callable[..., Path]) -> None:
    """Populations change how trials run, not what the search finds (dropout off: members equal singles)."""
    alone = pd.read_parquet(tiny_searches["greedy"] / "trials.parquet")  # the same search, one trial each
    spec = load_spec(tiny_spec(name="fused"), ["search.fuse=8", "student.dropout=0.0"])
    folder = run_search(spec, log=lambda *a, **k: None)
    fused, fused_epochs = pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "epochs.parquet")
    assert TRIAL_COLUMNS | {"population", "members"} <= set(fused.columns)
    trained_alone, trained = alone[alone.duplicate_of.isna()], fused[fused.duplicate_of.isna()]
    assert (trained_alone.members == 1).all() and (trained_alone.population == trained_alone.trial_id).all()
    # this tiny pool's t_hs and t_ll are one checkpoint, so stage 0 trains one teacher (the other
    # config is a marked copy): the baselines and it x 2 seeds were ready together, one population
    # of 4; stages 1 and 2 add one config each: populations of its 2 seeds
    assert sorted(trained.groupby("population").size()) == [2, 2, 4] and fused.members.max() == 4
    assert (trained.groupby("population").members.first() == trained.groupby("population").size()).all()
    assert fused.trial_id.is_unique and len(fused_epochs) == len(trained)  # one epoch each
    assert not fused_epochs.duplicated(["trial_id", "epoch"]).any()
    by = lambda t: t.set_index(["config_key", "seed"]).sort_index()  # noqa: E731
    a, f = by(alone), by(fused)
    assert list(a.index) == list(f.index)  # the same (config, seed) points, so the same winners
    assert (a.val_score - f.val_score).abs().max() < 1e-6 and (a.val_loss - f.val_loss).abs().max() < 1e-4
    assert set(fused.stage) == set(alone.stage) and (fused.status == "ok").all()


def test_asha_freezes_members_inside_a_population(local_ray: SharedRay, tiny_spec: Callable[..., Path]) -> None:
    spec = load_spec(tiny_spec(name="halving", method="optuna", seeds="[0]", budget=4, epochs=2),
                     ["search.fuse=8", "search.asha={grace_period: 1, reduction_factor: 2}"])
    folder = run_search(spec, log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    # baseline + 4 Optuna configs asked together: one population; at the epoch-1 rung the best
    # ceil(5 / 2) = 3 go on, the other 2 stop there, in the same process
    assert len(trials) == 5 and trials.population.nunique() == 1 and (trials.status == "ok").all()
    assert sorted(trials.epochs_run) == [1, 1, 2, 2, 2]
    rung = pd.read_parquet(folder / "epochs.parquet").query("epoch == 1").set_index("trial_id").val_score
    stopped, kept = trials[trials.epochs_run == 1].trial_id, trials[trials.epochs_run == 2].trial_id
    assert rung[stopped].max() <= rung[kept].min()


def test_full_grid(tiny_searches: dict[str, Path]) -> None:
    trials = pd.read_parquet(tiny_searches["grid"] / "trials.parquet")
    # 2 teachers x 2 losses x 2 student temperatures (tau_t = 2: same != 1) + the baseline, 2 seeds
    assert len(trials) == 2 * 9 and trials.config_key.nunique() == 9
    assert (trials.status == "ok").all() and trials.method.eq("grid").all()


def test_optuna_study_is_readable(local_ray: SharedRay, tiny_spec: Callable[..., Path]) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    folder = run_search(load_spec(tiny_spec(method="optuna", seeds="[0]", budget=3)), log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == 1 + 3 and trials[trials.stage != "baseline"].config_key.nunique() == 3
    search_id = json.loads((folder / "search.json").read_text())["search_id"]
    study = optuna.load_study(
        study_name=f"{search_id}/rotten_tomatoes/xs", storage=JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 3
    # the study's values are the Parquet rows' metric (one seed: the mean is the value)
    scores = set(trials.val_score.round(6))
    assert all(round(t.value, 6) in scores for t in done)


def kdsearch(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "kdsearch", *args], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


DIVERGING = ["search.space={learning_rate: [0.001, 1.0e9], alpha: [0.5, 1.0]}", "search.baseline=false", "search.budget=3"]


@pytest.mark.parametrize("method", ["greedy", "grid", "optuna", "random"])
def test_a_diverging_trial_never_stops_a_search(local_ray: SharedRay, tiny_spec: Callable[..., Path],
                                                method: str) -> None:
    spec = load_spec(tiny_spec(name=f"div{method}", seeds="[0]", train=128), [*DIVERGING, f"search.method={method}"])
    folder = run_search(spec, log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    diverged = trials[trials.status == "diverged"]
    assert len(diverged) >= 1 and (diverged.learning_rate == 1.0e9).all()
    assert diverged.error.str.contains("loss is nan").all() and (diverged.diverged_at_step >= 0).all()
    assert diverged.val_score.isna().all() and (trials[trials.status == "ok"].learning_rate == 0.001).all()
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert not epochs.trial_id.isin(diverged.trial_id).any()  # no epoch finished
    best = yaml.safe_load((folder / "best.yaml").read_text())["rotten_tomatoes/xs"]
    assert best.get("config", {}).get("learning_rate") == 0.001 or best.get("status") == "every config collapsed"
    if method == "greedy":  # counted as the worst: stage 0 fixed lr 0.001, and stage 1 ran with it
        assert set(trials[trials.stage == "1"].learning_rate) == {0.001}
    if method == "optuna":
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
        study = optuna.load_study(study_name=f"{folder.name}/rotten_tomatoes/xs", storage=storage)
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        assert failed and all(t.params["learning_rate"] == 1.0e9 for t in failed)


def test_a_raising_trial_is_retried_then_recorded_as_failed(tiny_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = tiny_spec(name="faulty", seeds="[0]")
    p = kdsearch("run", str(spec), env={"KDSEARCH_FAULT": "raise:loss=mse"})
    out, _ = p.communicate(timeout=400)
    assert p.returncode == 0, out
    (folder,) = (tmp_path / "searches").glob("faulty-*")
    trials = pd.read_parquet(folder / "trials.parquet")
    failed = trials[trials.status == "failed"]
    assert len(failed) == 1 and failed.loss.iloc[0] == "mse"
    # the first attempt and its one retry (max_failures: 1) both raised
    assert "injected fault" in failed.error.iloc[0] and failed.failures.iloc[0] == 2
    ok = trials[trials.status == "ok"]
    assert len(ok) == len(trials) - 1 and ok.val_score.notna().all()
    # the failed config counted as worst: the last stage went on with ce
    assert set(trials[trials.stage == "2"].loss) == {"ce"}
    assert "FAILED" in out and "injected fault" in out


@pytest.mark.slow
def test_resume_after_kill_9_mid_population(tiny_spec: Callable[..., Path], tmp_path: Path) -> None:
    """kill -9 of `kdsearch run` while a population trains: its members resume from their last
    epoch (no duplicate rows), and the resume may change the resources a trial asks for."""
    spec = tiny_spec(name="killpop", train=512, epochs=2, seeds="[0, 1]")
    args = ["--set", "search.fuse=16", "--set", "search.space={loss: [ce, mse]}"]
    # Tune's own state (which checkpoint each trial holds) reaches the search folder by a copy
    # that runs in the background after each checkpoint: a kill between an epoch's rows and that
    # copy resumes the trial from scratch (its rows are replaced, none lost). So the kill waits
    # for a copy of that state newer than the first epoch's rows.
    p = kdsearch("run", str(spec), *args, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        found = list((tmp_path / "searches").glob("killpop-*/epochs.parquet"))
        if found and len(pd.read_parquet(found[0])) >= 6:  # the population's first epoch: 6 member rows
            saved = [f.stat().st_mtime_ns for f in found[0].parent.glob("tune/experiment_state-*.json")]
            if saved and max(saved) > found[0].stat().st_mtime_ns:
                break
        time.sleep(0.1)
    assert p.poll() is None, "the search ended before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    (folder,) = (tmp_path / "searches").glob("killpop-*")
    before = pd.read_parquet(folder / "epochs.parquet")
    assert not (folder / "trials.parquet").exists() and set(before.epoch) == {1}
    # the search waited for CPUs it asked for: a resume may change what a trial asks for
    r = kdsearch("run", str(spec), "--resume", "--set", "search.resources.cpu=2")
    out, _ = r.communicate(timeout=400)
    assert r.returncode == 0, out
    assert load_spec(folder / "spec.yaml").search.resources.cpu == 2.0  # kept for a later resume
    trials, epochs = pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "epochs.parquet")
    # baseline + ce + mse, 2 seeds: 6 members of one population, then stage 1's mse was already run
    assert len(trials) == 6 and trials.population.nunique() == 1 and (trials.status == "ok").all()
    assert len(epochs) == 2 * 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    resumed = epochs[epochs.epoch > before.epoch.max()]
    assert len(resumed) and resumed.resumed.all()  # went on from the checkpoint, not from scratch
    assert (before.cpus == 1.0).all() and (resumed.cpus == 2.0).all()


@pytest.mark.slow
def test_two_runs_of_one_spec_started_together_both_finish(tiny_spec: Callable[..., Path], tmp_path: Path,
                                                           workdir: Path) -> None:
    spec = tiny_spec(name="twins", seeds="[0]", train=256)
    fresh = ["--set", f"workdir={tmp_path / 'wd'}", "--set", "search.space={loss: [ce, mse]}"]  # a pool no one trained yet
    runs = [kdsearch("run", str(spec), *fresh) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    folders = sorted((tmp_path / "searches").glob("twins-*"))
    assert len(folders) == 2 and all(len(pd.read_parquet(f / "trials.parquet")) == 3 for f in folders)
    # the pool was trained once, the other run waited for it and reused its checkpoints
    (pool,) = (tmp_path / "wd" / "teachers").glob("*/pool.json")
    assert len(json.loads(pool.read_text())) == 2  # 2 epochs of one seed
    assert sum("checkpoints already in the pool, skipped" in o for o in outs) == 1


@pytest.mark.slow
def test_ctrl_c_stops_a_search_that_resumes_from_the_line_it_prints(tiny_spec: Callable[..., Path],
                                                                    tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) mid-search: exit 130,
    one line naming the exact command that continues it, no "finished", no best.yaml."""
    spec = tiny_spec(name="ctrlc", train=768, epochs=2, seeds="[0]")
    p = subprocess.Popen([sys.executable, "-m", "kdsearch", "run", str(spec), "--set", "search.space={loss: [ce, mse]}"],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        found = list((tmp_path / "searches").glob("ctrlc-*/epochs.parquet"))
        if found and len(pd.read_parquet(found[0])) >= 1:
            break
        time.sleep(0.2)
    assert p.poll() is None, "the search ended before it could be interrupted"
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=200)
    (folder,) = (tmp_path / "searches").glob("ctrlc-*")
    assert p.returncode == 130, (out, err)
    last = err.strip().splitlines()[-1]
    # a trial may finish between the signal and Tune's stop on a slow machine: the line counts what was kept
    kept = len(pd.read_parquet(folder / "trials.parquet")) if (folder / "trials.parquet").is_file() else 0
    done = f"{kept} trial(s) recorded" if kept else "no trial finished"
    assert last == (f"kdsearch: search {folder.name} interrupted (SIGINT) before it finished, {done}; "
                    f"continue it with: kdsearch run --resume {folder}"), err
    assert "Traceback" not in err and "Tuner.restore" not in err and "search finished" not in out
    assert not (folder / "best.yaml").exists() and "finished" not in json.loads((folder / "search.json").read_text())
    assert last.endswith(f"kdsearch run --resume {folder}")  # what it prints is what runs next
    r = subprocess.run([sys.executable, "-m", "kdsearch", "run", "--resume", str(folder)],
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== search finished" in r.stdout and (folder / "best.yaml").is_file()
    assert len(pd.read_parquet(folder / "trials.parquet")) == 3  # baseline, ce, mse: each once


@pytest.mark.parametrize("method", ["grid", "greedy"])
def test_t_hs_and_t_ll_on_one_checkpoint_train_once_and_record_both(local_ray: SharedRay, tiny_spec: Callable[..., Path],
                                                                    tmp_path: Path, method: str) -> None:
    """A teacher trained one epoch: t_hs and t_ll pick the same checkpoint, so configs that differ
    only there are one training; both configs get rows, the copy marked duplicate_of."""
    spec = load_spec(tiny_spec(name=f"dup{method}", seeds="[0, 1]", train=256),
                     [f"search.method={method}", f"workdir={tmp_path / 'wd'}", "teachers.train.epochs=1",
                      "search.space={teacher: [t_hs, t_ll], loss: [ce, mse]}", "search.costs=false"])
    folder = run_search(spec, log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    trained = set(pd.read_parquet(folder / "epochs.parquet").trial_id)
    kd = trials[trials.stage != "baseline"]
    copies = kd[kd.duplicate_of.notna()]
    assert len(copies) and not set(copies.trial_id) & trained and set(copies.duplicate_of) <= trained  # never trained
    for _, c in copies.iterrows():
        source = trials[trials.trial_id == c.duplicate_of].iloc[0]
        assert c.val_score == source.val_score and c.loss == source.loss and c.seed == source.seed
        assert {c.teacher, source.teacher} == {"t_hs", "t_ll"}  # the other teacher, the same checkpoint
    # every config the method asked for has its rows: the grid all four, greedy the teacher stage's two
    configs = {(r.teacher, r.loss) for r in kd.itertuples()}
    assert configs == ({("t_hs", "ce"), ("t_ll", "ce"), ("t_hs", "mse"), ("t_ll", "mse")} if method == "grid"
                       else configs | {("t_hs", "ce"), ("t_ll", "ce")})
    assert len(trained) == len(kd) - len(copies) + 2  # + the baseline's two seeds


def test_mse_at_two_temperatures_with_tau_s_same_trains_once(local_ray: SharedRay, tiny_spec: Callable[..., Path],
                                                          tmp_path: Path) -> None:
    """MSE on logits with tau^2 scaling and tau_s = tau_t is one objective at every tau_t
    (knobs.SAME_TRAINING): the grid trains it once and records a row for each tau_t asked."""
    spec = load_spec(tiny_spec(name="msetau", seeds="[0]", train=256),
                     ["search.method=grid", "search.space={tau_t: [2.0, 4.0], tau_s: [1.0, same]}", "distill.loss=mse",
                      "search.baseline=false", "search.costs=false"])
    logged: list[str] = []
    folder = run_search(spec, log=lambda *a, **k: logged.append(" ".join(map(str, a))))
    trials = pd.read_parquet(folder / "trials.parquet")
    trained = set(pd.read_parquet(folder / "epochs.parquet").trial_id)
    assert len(trials) == 4 and len(trained) == 3  # tau_s 1 at tau_t 2 and 4, and one training for tau_s same
    (copy,) = trials[trials.duplicate_of.notna()].itertuples()
    source = trials[trials.trial_id == copy.duplicate_of].iloc[0]
    assert copy.tau_s_same and source.tau_s_same and {copy.tau_t, source.tau_t} == {2.0, 4.0}
    assert copy.val_score == source.val_score and copy.config_key != source.config_key and copy.trial_id not in trained
    assert any("MSE with tau_s = tau_t" in line for line in logged)


def test_an_explicit_list_of_configs_and_the_new_objectives(local_ray: SharedRay, tiny_spec: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    """search.configs: exactly these arms; DIST, z-scored logits and annealing recorded, exported,
    and rerun by the exported spec."""
    from kdsearch.cli import main

    arms = "[{loss: dist, alpha: 0.7, dist_gamma: 2.0}, {logit_std: true, tau_t: 2.0, tau_schedule: anneal}, {alpha: 0.5}]"
    spec = load_spec(tiny_spec(name="arms", seeds="[0]", train=256),
                     ["search.method=grid", "search.space={}", f"search.configs={arms}", "search.baseline=false",
                      "search.costs=false"])
    folder = run_search(spec, log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet").sort_values("trial_id")
    assert len(trials) == 3 and (trials.status == "ok").all()
    dist = trials[trials.loss == "dist"].iloc[0]
    assert dist.dist_gamma == 2.0 and dist.alpha == 0.7 and not dist.logit_std and dist.tau_schedule == "constant"
    std = trials[trials.logit_std].iloc[0]
    assert std.tau_schedule == "anneal" and std.tau_t == 2.0 and '"logit_std": true' in std.config_key
    out = tmp_path / "student"
    assert main(["export", str(folder), "--cell", "rotten_tomatoes/xs", "--out", str(out), "--force"]) == 0
    exported = yaml.safe_load((out / "kdsearch.yaml").read_text())["distill"]
    best = json.loads((out / "metrics.json").read_text())["search_row"]
    assert {k: exported[k] for k in ("loss", "logit_std", "tau_schedule", "dist_gamma")} == {
        k: best[k] for k in ("loss", "logit_std", "tau_schedule", "dist_gamma")}


def test_the_demo_ends_with_what_each_student_keeps_and_costs(local_ray: SharedRay, tiny_searches: dict[str, Path],
                                                              tiny_spec: Callable[..., Path],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`kdsearch demo` answers what people distil for: the student's score beside the teacher's, and its
    latency (here the architectures' costs are already cached by tiny_searches: nothing is measured twice)."""
    from kdsearch.cli import main

    spec = tiny_spec(name="demo", costs="true")
    assert main(["demo", str(spec), "--set", "search.space={loss: [ce, mse]}", "--set", "search.seeds=[0]"]) == 0
    out = capsys.readouterr().out
    (folder,) = (spec.parent / "searches").glob("demo-*")
    assert "what each student keeps and costs" in out and "Latency: one example at a time" in out
    assert f"next: kdsearch results {folder}" in out and (folder / "costs.parquet").is_file()
