"""The paired test behind every verdict: its false-positive rate holds on null data, it says
when seeds cannot carry a verdict, and it finds a clear effect."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kdsearch.bench.calibration import best_of_k, null_collapse, null_gaussian
from kdsearch.results import stats


@pytest.mark.parametrize("null", [null_gaussian, null_collapse])
@pytest.mark.parametrize("n", [3, 6])
def test_the_verdict_keeps_its_false_positive_rate_on_null_data(null: Callable[..., np.ndarray], n: int) -> None:
    d = null(np.random.default_rng(n), 2000, n)
    verdict = stats.TESTS[stats.VERDICT_TEST].pvalues(d) <= stats.LEVEL
    assert verdict.mean() <= 0.07
    # the same rows one by one, as a summary sees them
    assert [stats.Paired(dict(enumerate(row))).real for row in d[:200]] == list(verdict[:200])


def test_three_seeds_never_say_real_and_say_how_many_would() -> None:
    d = np.random.default_rng(0).normal(10.0, 0.1, (500, 3))  # as clear as three seeds get
    assert not (stats.signflip_p(d) <= stats.LEVEL).any()
    p = stats.Paired({0: 0.10, 1: 0.11, 2: 0.12})
    assert not p.real and p.p == 0.25 and p.needed == 6
    assert p.verdict() == "cannot tell: 3 seed(s) can never show a difference at 0.05 with the sign-flip test; 6 can"
    assert p.interval(100, " points").startswith("t 95% CI [+8.")


def test_a_clear_ten_point_effect_over_eight_seeds_is_found() -> None:
    rng = np.random.default_rng(1)
    gains = {s: 0.10 + rng.normal(0, 0.02) for s in range(8)}
    p = stats.Paired(gains)
    assert p.real and p.p == pytest.approx(2 / 256) and p.verdict() == "a real gain (sign-flip p 0.008, 8 seeds)"
    assert stats.Paired({s: -v for s, v in gains.items()}).verdict(sign=1.0).startswith("a real loss")
    assert stats.Paired({s: -v for s, v in gains.items()}).verdict(sign=-1.0).startswith("a real gain")  # lower is better
    assert 0.08 < p.low < p.mean < p.high < 0.12


def test_exact_p_values_of_the_sign_flip_test() -> None:
    # 5 positive differences of distinct sizes: only all-plus and all-minus are as extreme, p = 2/32
    assert stats.signflip_p(np.array([1.0, 2, 3, 4, 5]))[0] == pytest.approx(2 / 32)
    # one negative seed among six: patterns at least as extreme, counted by hand (both tails)
    d = np.array([1.0, 2, 3, 4, 5, -0.5])
    signs = np.array(np.meshgrid(*[[-1, 1]] * 6)).reshape(6, -1).T
    expected = np.mean(np.abs((signs * np.abs(d)).mean(axis=1)) >= abs(d.mean()) - 1e-12)
    assert stats.signflip_p(d)[0] == pytest.approx(expected)
    assert stats.signflip_p(np.zeros(6))[0] == 1.0 and stats.t_p(np.zeros((1, 6)))[0] == 1.0


def test_the_best_of_many_is_judged_on_fresh_seeds() -> None:
    rng = np.random.default_rng(2)
    t = stats.TESTS["t"]
    same = (t.pvalues(best_of_k(rng, 2000, 24, 3, None)) <= stats.LEVEL).mean()
    fresh = (t.pvalues(best_of_k(rng, 2000, 24, 3, 3)) <= stats.LEVEL).mean()
    assert same > 0.09 and fresh <= 0.07  # picked on its seeds, even an honest test is fooled
