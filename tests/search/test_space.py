"""The knob space: validation, canonical keys, the deduplicated grid."""

import pytest

from kdsearch.errors import SpecError
from kdsearch.search.space import Space, apply, check_space, effective, key
from kdsearch.spec import DistillSpec, OptimSpec, RangeSpec

PAPER = {"teacher": ["t_hs", "t_ll"], "loss": ["ce", "mse"], "alpha": [1.0, 0.5], "tau_t": [1.0, 2.0, 4.0], "tau_s": [1.0, "same"]}


def test_same_student_temperature_at_tau_t_1_is_tau_s_1() -> None:
    assert key({"tau_t": 1.0, "tau_s": "same"}) == key({"tau_t": 1, "tau_s": 1.0})
    assert key({"tau_t": 2.0, "tau_s": "same"}) != key({"tau_t": 2.0, "tau_s": 1.0})


def test_alpha_0_ignores_the_kd_knobs() -> None:
    assert key({"alpha": 0.0, "loss": "mse", "tau_t": 4.0}) == key({"alpha": 0, "loss": "ce"})
    assert effective({"alpha": 0.0, "learning_rate": 1e-3}) == {"alpha": 0.0, "learning_rate": 1e-3}


def test_paper_grid_has_each_behaviour_once() -> None:
    space = Space(PAPER, DistillSpec(), OptimSpec())
    grid = list(space.grid())
    # 2 * 2 * 2 * 3 * 2 = 48 combinations, of which tau_s=same at tau_t=1 repeats tau_s=1
    assert len(grid) == 48 - 2 * 2 * 2
    assert len({key(c) for c in grid}) == len(grid)


def test_defaults_are_the_spec_values_when_among_the_choices() -> None:
    space = Space(PAPER, DistillSpec(teacher="t_ll", loss="ce", alpha=0.5, tau_t=2.0, tau_s=1.0), OptimSpec())
    assert space.defaults == {"teacher": "t_ll", "loss": "ce", "alpha": 0.5, "tau_t": 2.0, "tau_s": 1.0}
    space = Space({"tau_t": [3.0, 5.0]}, DistillSpec(tau_t=1.0), OptimSpec())
    assert space.defaults == {"tau_t": 3.0}


def test_apply_sets_distill_and_train_knobs() -> None:
    d, t = apply({"loss": "mse", "tau_s": "same", "learning_rate": 0.01, "epochs": 2.0, "cell": "x"}, DistillSpec(), OptimSpec())
    assert d.loss == "mse" and d.tau_s == "same" and t.learning_rate == 0.01 and t.epochs == 2 and isinstance(t.epochs, int)


@pytest.mark.parametrize(
    "space,method,message",
    [
        ({"dropout": [0.1]}, "greedy", "search.space.dropout: unknown knob"),
        ({"loss": []}, "greedy", "needs at least one choice"),
        ({"tau_t": [-1.0]}, "greedy", "tau_t must be > 0"),
        ({"alpha": [1.5]}, "greedy", r"alpha must be in \[0, 1\]"),
        ({"loss": ["hinge"]}, "greedy", "unknown loss 'hinge'"),
        ({"tau_s": ["hot"]}, "greedy", "expected a number"),
        ({"loss": ["ce", "ce"]}, "greedy", "choices repeat"),
        ({"tau_t": RangeSpec(1.0, 4.0)}, "greedy", "a range works with optuna or random"),
        ({"teacher": RangeSpec(1.0, 4.0)}, "optuna", "takes choices, not a range"),
        ({"epochs": [1.5]}, "grid", "whole number"),
    ],
)
def test_bad_spaces_name_the_knob(space: dict, method: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        check_space(space, "search.space", method)
