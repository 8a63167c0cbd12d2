"""The progress printer survives Tune's pickling of callbacks, whatever print is then."""

import builtins

import pytest
from ray import cloudpickle

from kdsearch.search.callbacks import ProgressPrinter


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
