"""`kdsearch run` and `kdsearch results` on bad input: one line, exit 2, nothing started."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdsearch.cli import main

BASE = """
name: bad
data: {dataset: rotten_tomatoes, max_length: 32, max_train_examples: 64, max_eval_examples: 32}
teachers: {model: xs, seeds: [0], train: {epochs: 1}}
student: {model: xs, train: {epochs: 1}}
search:
  method: greedy
  space: {loss: [ce, mse]}
  storage: STORAGE
"""

CASES = {
    "unknown method": ("method: greedy", "method: bayes", r"search.method: must be one of auto, greedy, revisit, halving, grid, optuna, random"),
    "empty choices": ("space: {loss: [ce, mse]}", "space: {loss: []}", r"search.space.loss: needs at least one choice"),
    "unknown knob": ("space: {loss: [ce, mse]}", "space: {dropout: [0.1]}", r"search.space.dropout: unknown knob"),
    "negative temperature": ("space: {loss: [ce, mse]}", "space: {tau_t: [-2.0, 1.0]}", r"search.space.tau_t\[0\]: tau_t must be > 0"),
    "alpha outside [0, 1]": ("space: {loss: [ce, mse]}", "space: {alpha: [0.5, 1.5]}", r"alpha must be in \[0, 1\], got 1.5"),
    "unknown dataset": ("method: greedy", "method: greedy\n  datasets: [./no/such/data]", r"dataset folder .* does not exist"),
    "unknown student size": ("method: greedy", "method: greedy\n  students: [xs, huge]", r"search.students\[1\].model: unknown model .huge."),
    "budget 0": ("method: greedy", "method: optuna\n  budget: 0", r"search.budget: must be >= 1"),
    "gpu without a GPU": ("method: greedy", "method: greedy\n  resources: {gpu: 0.5}", r"search.resources.gpu: 0.5 GPU per trial asked, but (this machine|the cluster) has no GPU"),
    "no seeds": ("method: greedy", "method: greedy\n  seeds: []", r"search.seeds: needs at least one seed"),
    "repeated seeds": ("method: greedy", "method: greedy\n  seeds: [0, 0]", r"search.seeds: seeds repeat"),
    "metric not on validation": ("method: greedy", "method: greedy\n  metric: test_score", r"search.metric: must be a validation metric"),
    "mode": ("method: greedy", "method: greedy\n  mode: up", r"search.mode: must be one of max, min"),
    "asha with greedy": ("method: greedy", "method: greedy\n  asha: {grace_period: 1}", r"search.asha: early stopping works with optuna or random"),
    "range with greedy": ("space: {loss: [ce, mse]}", "space: {tau_t: {low: 1, high: 4}}", r"a range works with auto or optuna or random"),
    "unknown loss choice": ("space: {loss: [ce, mse]}", "space: {loss: [ce, hinge]}", r"unknown loss 'hinge'"),
    "negative max failures": ("method: greedy", "method: greedy\n  max_failures: -1", r"search.max_failures: must be >= 0"),
    "zero cpu": ("method: greedy", "method: greedy\n  resources: {cpu: 0}", r"search.resources.cpu: must be at least 0.01"),
    "tau_s word": ("space: {loss: [ce, mse]}", "space: {tau_s: [1.0, hot]}", r"search.space.tau_s\[1\]: expected a number"),
    "unknown search field": ("method: greedy", "method: greedy\n  trials: 5", r"search.trials: unknown field"),
    "datasets not a list": ("method: greedy", "method: greedy\n  datasets: rotten_tomatoes", r"search.datasets: expected a list"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_search_spec(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    old, new, pattern = CASES[case]
    storage = tmp_path / "searches"
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE.replace("STORAGE", str(storage)).replace(old, new))
    monkeypatch.setenv("KDSEARCH_WORKDIR", str(tmp_path / "wd"))
    ray_before = ray.is_initialized()  # another module's Ray may be up: this one must start none
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdsearch: error: "), err
    assert re.search(pattern, err[0]), err[0]
    assert not storage.exists() and ray.is_initialized() == ray_before  # nothing started


def test_relative_storage_resolves_against_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdsearch.spec import load_spec

    spec = tmp_path / "specs" / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text(BASE.replace("STORAGE", "out/searches"))
    monkeypatch.chdir(tmp_path)
    assert load_spec(spec).search.storage == str(tmp_path / "out" / "searches")


def test_resume_without_a_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE.replace("STORAGE", str(tmp_path / "none")))
    assert main(["run", str(spec), "--resume"]) == 2
    assert "nothing to resume: no search named 'bad'" in capsys.readouterr().err


def test_results_of_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", str(tmp_path / "nope")]) == 2
    assert "the folder does not exist" in capsys.readouterr().err


def test_stop_signals_unwind_before_the_trials_and_ask_tune_to_stop_during_them() -> None:
    import os
    import signal
    import time

    from kdsearch.search.runner import _StopSignals

    before = signal.getsignal(signal.SIGTERM)
    stop = _StopSignals()
    with pytest.raises(KeyboardInterrupt), stop:  # planning, teachers: nothing to save, unwind
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stop.signal == signal.SIGTERM and stop.name == "SIGTERM" and signal.getsignal(signal.SIGTERM) is before
    asked: list[int] = []
    tune_usr1 = signal.signal(signal.SIGUSR1, lambda sig, frame: asked.append(sig))  # as Tune's run registers it
    try:
        stop = _StopSignals()
        with stop, stop.tune_stops_gracefully():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert asked == [signal.SIGINT] and stop.signal == signal.SIGINT  # Tune stops its trials and saves
            with pytest.raises(KeyboardInterrupt):  # a second one does not wait
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
    finally:
        signal.signal(signal.SIGUSR1, tune_usr1)
