"""Tune's log lines kdsearch silences: only the harmless ones."""

import logging

import pytest
from ray.tune.execution import experiment_state

from kdsearch.search.runner import quiet_tune_logs


def _fail_save(exc: Exception) -> None:
    # the very call Tune makes when a background copy of its state failed
    try:
        raise exc
    except Exception:
        experiment_state.logger.error("Saving experiment state to storage at '/s/tune' failed with exception: ",
                                      exc_info=True)


def test_a_snapshot_that_lost_the_race_with_the_next_is_silent_any_other_failure_shows(
        caplog: pytest.LogCaptureFixture) -> None:
    quiet_tune_logs()
    quiet_tune_logs()  # once per process, however often a driver runs a search
    assert [type(f).__name__ for f in experiment_state.logger.filters].count("_StagingRace") == 1
    with caplog.at_level(logging.ERROR, logger=experiment_state.logger.name):
        # seen in CI on Ctrl-C: the searcher's temporary file renamed while the copy listed it
        _fail_save(FileNotFoundError("[Errno 2] Failed to open local file '/r/driver_artifacts/"
                                     ".674f9e24-tmp-searcher-state-2026-12-04_08-16-46.pkl'"))
        assert caplog.records == []
        _fail_save(FileNotFoundError("[Errno 2] Failed to open local file '/r/driver_artifacts/experiment_state.json'"))
        _fail_save(PermissionError("[Errno 13] Permission denied: '/s/tune/.x-tmp-searcher-state.pkl'"))
    assert len(caplog.records) == 2 and all(r.exc_info for r in caplog.records)
