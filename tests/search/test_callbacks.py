"""The progress printer: its lines, and it survives Tune's pickling of callbacks, whatever print is then."""

import builtins
from pathlib import Path

import pytest
from ray import cloudpickle
from ray.tune.experiment import Trial

from kdsearch.search.callbacks import ProgressPrinter, recorded_best


def test_progress_printer_pickles_after_print_is_swapped(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    original = builtins.print
    printer = ProgressPrinter("val_score", "max", original)  # as run_search's default log=print gives it
    # Ray's tqdm_ray replaces builtins.print in the driver; the original then pickles by
    # name to a different object, and Tune's Tuner refused to start
    monkeypatch.setattr(builtins, "print", lambda *a, **k: original(*a, **k))
    clone = cloudpickle.loads(cloudpickle.dumps(printer))
    clone._print("hello")
    assert "hello" in capsys.readouterr().out
    # anything else the caller gives is kept
    lines: list[str] = []
    kept = ProgressPrinter("val_score", "max", lambda s, **k: lines.append(s))
    kept._print("kept")
    assert lines == ["kept"]
    assert cloudpickle.loads(cloudpickle.dumps(ProgressPrinter("val_score", "max", lambda s, **k: None))).print_fn is not None


def _finished(cell: str, seed: int, result: dict) -> Trial:
    trial = Trial("kdsearch", config={"members": [{"cell": cell, "seed": seed, "alpha": 0.5}]}, stub=True)
    trial.run_metadata.last_result = result
    trial.set_status(Trial.TERMINATED)
    return trial


def test_a_progress_line_names_its_own_cell_best_only() -> None:
    """Each line: the counts, the trial, its score, and where its cell stands; never every
    cell's best (14 of them in the breadth study made lines of a thousand characters)."""
    lines: list[str] = []
    printer = ProgressPrinter("val_score", "max", lambda s, **k: lines.append(s))
    done: list[Trial] = []
    for cell, seed, result in [("rt/xs", 0, {"val_score": 0.61}), ("bbc/xs", 0, {"val_score": 0.90}),
                               ("rt/xs", 1, {"val_score": 0.58}), ("rt/xs", 2, {"val_score": 0.64}),
                               ("qa/xs", 0, {"status": "diverged", "error": "loss is nan"})]:
        done.append(_finished(cell, seed, result))
        printer.on_trial_complete(0, done, done[-1])
    assert lines[0] == "[1 done, 0 running, 0 pending, 0 failed] rt/xs seed 0: alpha=0.5 -> val_score 0.6100 | the cell's best so far"
    assert lines[1].endswith("bbc/xs seed 0: alpha=0.5 -> val_score 0.9000 | the cell's best so far")
    assert lines[2].endswith("rt/xs seed 1: alpha=0.5 -> val_score 0.5800 | cell best 0.6100")  # not bbc's 0.9
    assert lines[3].endswith("-> val_score 0.6400 | the cell's best so far") and lines[3].startswith("[4 done,")
    assert lines[4].endswith("qa/xs seed 0: alpha=0.5 -> diverged (loss is nan) | no score in this cell yet")
    assert not any("bbc" in line for line in lines[2:])


def test_a_resumed_search_goes_on_from_the_best_it_recorded(tmp_path: Path) -> None:
    from kdsearch.results.store import TRIALS, ResultStore

    rows = [{"trial_id": f"t{i}", "cell": c, "role": "select", "status": st, "val_score": v}
            for i, (c, st, v) in enumerate([("rt/xs", "ok", 0.70), ("rt/xs", "ok", 0.55), ("rt/xs", "diverged", 0.99),
                                            ("bbc/xs", "ok", 0.80)])]
    ResultStore(tmp_path).append(TRIALS, rows)
    assert recorded_best(tmp_path, "val_score", "max") == {"rt/xs": 0.70, "bbc/xs": 0.80}
    assert recorded_best(tmp_path, "val_score", "min") == {"rt/xs": 0.55, "bbc/xs": 0.80}
    assert recorded_best(tmp_path / "none", "val_score", "max") == {}
    lines: list[str] = []
    printer = ProgressPrinter("val_score", "max", lambda s, **k: lines.append(s), recorded_best(tmp_path, "val_score", "max"))
    done = [_finished("rt/xs", 3, {"val_score": 0.65})]
    printer.on_trial_complete(0, done, done[0])
    assert lines[0].endswith("-> val_score 0.6500 | cell best 0.7000")  # not "the cell's best": 0.70 came before
