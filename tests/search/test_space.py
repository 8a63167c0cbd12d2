"""The knob space: validation, canonical keys, the deduplicated grid."""

import pytest

from kdsearch.errors import SpecError
from kdsearch.knobs import effective, key
from kdsearch.search.space import Space
from kdsearch.spec import DistillSpec, OptimSpec, RangeSpec, check_space, with_knobs

PAPER = {"teacher": ["t_hs", "t_ll"], "loss": ["ce", "mse"], "alpha": [1.0, 0.5], "tau_t": [1.0, 2.0, 4.0], "tau_s": [1.0, "same"]}


def test_same_student_temperature_at_tau_t_1_is_tau_s_1() -> None:
    assert key({"tau_t": 1.0, "tau_s": "same"}) == key({"tau_t": 1, "tau_s": 1.0})
    assert key({"tau_t": 2.0, "tau_s": "same"}) != key({"tau_t": 2.0, "tau_s": 1.0})


def test_an_annealed_tau_s_same_is_not_a_fixed_tau_s() -> None:
    """Annealed, tau_s: same follows tau_t down to 1 and a fixed tau_s of the same value stays put:
    two trainings, two keys; at a constant temperature they are one."""
    anneal = {"tau_t": 4.0, "tau_schedule": "anneal"}
    assert key({**anneal, "tau_s": "same"}) != key({**anneal, "tau_s": 4.0})
    assert key({"tau_t": 4.0, "tau_s": "same"}) == key({"tau_t": 4.0, "tau_s": 4.0})


def test_alpha_0_ignores_the_kd_knobs() -> None:
    assert key({"alpha": 0.0, "loss": "mse", "tau_t": 4.0}) == key({"alpha": 0, "loss": "ce"})
    assert effective({"alpha": 0.0, "learning_rate": 1e-3}) == {"alpha": 0.0, "learning_rate": 1e-3}


def test_paper_grid_has_each_behaviour_once() -> None:
    space = Space(PAPER, DistillSpec(), OptimSpec())
    grid = list(space.grid_with_duplicates())
    # 2 * 2 * 2 * 3 * 2 = 48 combinations, of which tau_s=same at tau_t=1 repeats tau_s=1 (one config:
    # no row of its own), and MSE with tau_s=same at tau_t 2 and 4 trains as at tau_t 1 (a copy each)
    assert len(grid) == 48 - 2 * 2 * 2 - 2 * 2 * 2
    assert len({key(c) for c, _ in grid}) == len(grid) == len({space.key(c) for c, _ in grid})
    copies = [d for _, dups in grid for d in dups]
    assert len(copies) == 2 * 2 * 2 and all(d["loss"] == "mse" and d["tau_s"] == "same" and d["tau_t"] != 1.0 for d in copies)
    for config, dups in grid:  # each copy names the config that runs: MSE, tau_t = tau_s = 1, its other knobs
        for d in dups:
            assert config == {**d, "tau_t": 1.0, "tau_s": 1.0}


def test_mse_temperatures_cancel_only_where_they_are_equal_at_every_step() -> None:
    space = Space({"loss": ["ce", "mse"], "tau_t": [2.0, 4.0], "tau_s": [1.0, 4.0, "same"]}, DistillSpec(), OptimSpec())
    mse = {"loss": "mse", "tau_t": 4.0}
    assert space.key({**mse, "tau_s": "same"}) == space.key({**mse, "tau_s": 4.0}) == space.key({**mse, "tau_t": 2.0, "tau_s": "same"})
    assert space.key({**mse, "tau_s": 1.0}) != space.key({**mse, "tau_s": "same"})  # z_s - z_t / 4: another target
    assert space.key({"loss": "ce", "tau_t": 4.0, "tau_s": "same"}) != space.key({"loss": "ce", "tau_t": 2.0, "tau_s": "same"})
    assert space.raw_key({**mse, "tau_s": "same"}) != space.raw_key({**mse, "tau_t": 2.0, "tau_s": "same"})  # rows keep their names
    # without tau^2 scaling the distance shrinks with tau: no identity
    unscaled = Space({"tau_t": [2.0, 4.0]}, DistillSpec(loss="mse", tau_s="same", tau2_scaling=False), OptimSpec())
    assert unscaled.key({"tau_t": 2.0}) != unscaled.key({"tau_t": 4.0})
    # annealed: tau_s: same moves with tau_t (one training), a fixed tau_s = tau_t does not
    anneal = Space({"tau_t": [2.0, 4.0], "tau_s": [4.0, "same"]}, DistillSpec(loss="mse", tau_schedule="anneal"), OptimSpec())
    assert anneal.key({"tau_t": 2.0, "tau_s": "same"}) == anneal.key({"tau_t": 4.0, "tau_s": "same"})
    assert anneal.key({"tau_t": 4.0, "tau_s": 4.0}) != anneal.key({"tau_t": 2.0, "tau_s": "same"})


def test_defaults_are_the_spec_values_when_among_the_choices() -> None:
    space = Space(PAPER, DistillSpec(teacher="t_ll", loss="ce", alpha=0.5, tau_t=2.0, tau_s=1.0), OptimSpec())
    assert space.defaults == {"teacher": "t_ll", "loss": "ce", "alpha": 0.5, "tau_t": 2.0, "tau_s": 1.0}
    space = Space({"tau_t": [3.0, 5.0]}, DistillSpec(tau_t=1.0), OptimSpec())
    assert space.defaults == {"tau_t": 3.0}


def test_apply_sets_distill_and_train_knobs() -> None:
    d, t = with_knobs(DistillSpec(tau_t=3.0), OptimSpec(), {"loss": "mse", "tau_s": "same", "learning_rate": 0.01, "epochs": 2.0, "cell": "x"})
    assert d.loss == "mse" and d.tau_s == 3.0 and d.tau_s_same and d.student_temperature == 3.0
    assert t.learning_rate == 0.01 and t.epochs == 2 and isinstance(t.epochs, int)


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
        ({"tau_t": RangeSpec(1.0, 4.0)}, "greedy", "a range works with auto or optuna or random"),
        ({"teacher": RangeSpec(1.0, 4.0)}, "optuna", "takes choices, not a range"),
        ({"epochs": [1.5]}, "grid", "whole number"),
    ],
)
def test_bad_spaces_name_the_knob(space: dict, method: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        check_space(space, "search.space", method)


def test_conditional_knobs_drop_out_where_they_do_not_apply() -> None:
    # no intermediate term: its objective, weight and MI alpha change nothing
    assert key({"inter_map": "none", "inter_loss": "mi_alpha", "mi_alpha": 0.1}) == key({"inter_map": "none", "inter_weight": 2.0})
    assert key({"inter_map": "skip", "inter_weight": 0.0}) == key({"inter_map": "none"})
    # mi_alpha matters only for the mi_alpha objective
    assert key({"inter_map": "skip", "inter_loss": "mse", "mi_alpha": 0.1}) == key({"inter_map": "skip", "inter_loss": "mse", "mi_alpha": 0.9})
    assert key({"inter_map": "skip", "inter_loss": "mi_alpha", "mi_alpha": 0.1}) != key({"inter_map": "skip", "inter_loss": "mi_alpha", "mi_alpha": 0.9})
    # attention maps alone are compared by KL: the hidden-state objective and its alpha drop out
    assert key({"inter_map": "skip", "inter_features": "attention", "inter_loss": "mse"}) == key(
        {"inter_map": "skip", "inter_features": "attention", "inter_loss": "mi_alpha", "mi_alpha": 0.1}
    )
    assert key({"inter_map": "skip", "inter_features": "both", "inter_loss": "mse"}) != key(
        {"inter_map": "skip", "inter_features": "both", "inter_loss": "cosine"}
    )
    assert key({"inter_map": "none", "inter_features": "attention"}) == key({"inter_map": "none"})
    # augment_p only with an augmentation
    assert key({"augment": "none", "augment_p": 0.1}) == key({"augment": "none", "augment_p": 0.9})
    assert key({"augment": "mask", "augment_p": 0.1}) != key({"augment": "mask", "augment_p": 0.9})
    # an intermediate term uses the teacher even at alpha = 0; plain fine-tuning does not
    assert key({"alpha": 0.0, "inter_map": "skip", "teacher": "t_hs"}) != key({"alpha": 0.0, "inter_map": "skip", "teacher": "t_ll"})
    assert key({"alpha": 0.0, "teacher": "t_hs"}) == key({"alpha": 0.0, "teacher": "t_ll"})


def test_distiller_grid_counts_each_behaviour_once() -> None:
    space = Space(
        {"inter_map": ["none", "skip"], "inter_loss": ["mse", "mi_alpha"], "mi_alpha": [0.1, 0.9], "augment": ["none", "mask"], "augment_p": [0.25, 0.5]},
        DistillSpec(),
        OptimSpec(),
    )
    # inter: none (1) + skip x (mse (1) + mi_alpha x 2) = 4; augment: none (1) + mask x 2 = 3
    assert len(list(space.grid())) == 4 * 3
    with_attention = Space(
        {"inter_map": ["none", "skip"], "inter_features": ["hidden", "attention"], "inter_loss": ["mse", "mi_alpha"], "mi_alpha": [0.1, 0.9]},
        DistillSpec(),
        OptimSpec(),
    )
    # none (1) + skip x (hidden x (mse + mi_alpha x 2) + attention (1)) = 5
    assert len(list(with_attention.grid())) == 5


def test_the_baseline_is_plain_fine_tuning_whatever_the_spec_defaults() -> None:
    from kdsearch.knobs import BASELINE

    d, _ = with_knobs(DistillSpec(inter_map="skip", augment="mixup"), OptimSpec(), BASELINE)
    assert d.alpha == 0.0 and not d.intermediate and not d.augmenting


@pytest.mark.parametrize(
    "space, message",
    [
        ({"inter_map": ["skip", "diagonal"]}, "unknown inter_map 'diagonal'"),
        ({"inter_loss": ["mse", "l1"]}, "unknown inter_loss 'l1'"),
        ({"inter_features": ["hidden", "values"]}, "unknown inter_features 'values'"),
        ({"mi_alpha": [1.5]}, "mi_alpha must be in [0, 1]"),
        ({"augment": ["backtranslate"]}, "unknown augment 'backtranslate'"),
        ({"augment_p": [-0.1]}, "augment_p must be in [0, 1]"),
        ({"inter_weight": [-1.0]}, "inter_weight must be >= 0"),
    ],
)
def test_bad_distiller_knobs_name_the_problem(space: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_space(space, "search.space", "greedy")
