"""The paired test behind every verdict kdsearch prints, and what it can and cannot say.

Two configs trained on the same seeds (same initialisation, same batch order) differ seed
by seed; a verdict ("a real gain", "a real loss") is a two-sided test that the mean of
those paired differences is not 0. The tests are one table, :data:`TESTS`, each with why
it is there; :data:`VERDICT_TEST` is the one every verdict uses.

Caveats, as Optuna's ``WilcoxonPruner`` states its own:

- **The sign-flip test is exact, and blunt at few seeds.** Under the null (the two arms are
  exchangeable on each seed, so each difference is as likely to be +d as -d) its p-value is
  exact at any number of seeds and any distribution of the differences, heavy tails
  included (a collapsed seed 30 points off beside 1-point differences). But with n seeds it
  has only 2**n sign patterns: the smallest two-sided p it can give is 2 / 2**n, so at 0.05
  it can never reject with 5 seeds or fewer. It says so ("3 seeds can never show a
  difference at 0.05 with this test; 6 can") instead of calling noise a finding.
- **The interval is the paired t interval** (n - 1 degrees of freedom): it describes the
  size of a difference at any n >= 2, where the sign-flip test's own inverted interval is
  unbounded at n <= 5. The t test is conservative under symmetric nulls (Efron 1969), but
  the verdict does not rest on it; ``kdsearch bench calibration`` measures both.
- **A test is only as fresh as its seeds.** The best of K configs compared with a baseline on
  the seeds it was picked on is biased upwards whatever the test; kdsearch judges a picked
  config on confirmation seeds it was not picked on (``search.confirm_seeds``).
- **A verdict is per comparison.** A report with many comparisons expects about one in
  twenty "real" verdicts among configs that are all equal.

This module imports only numpy and scipy: reports read it without Ray or torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

LEVEL = 0.05  # two-sided
CONFIDENCE = 0.95  # of the t interval shown beside a verdict
EXACT_UP_TO = 16  # seeds up to which the sign-flip test enumerates all 2**n patterns (65,536)
RESAMPLES = 2**16  # random sign patterns above that: the p-value's Monte Carlo error is below 0.002


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def signflip_p(d: np.ndarray) -> np.ndarray:
    """Two-sided p of the exact sign-flip permutation test of the mean paired difference,
    per row of ``d`` (rows: comparisons; columns: seeds). Exact up to :data:`EXACT_UP_TO` seeds."""
    from scipy import stats

    d = np.atleast_2d(np.asarray(d, dtype=float))
    if d.shape[-1] == 0:
        return np.full(d.shape[0], math.nan)
    if d.shape[-1] == 1:  # two patterns, +d and -d: as extreme as each other
        return np.ones(d.shape[0])
    n_resamples = np.inf if d.shape[-1] <= EXACT_UP_TO else RESAMPLES
    res = stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
                                 alternative="two-sided", axis=-1, rng=np.random.default_rng(0))
    return np.atleast_1d(np.minimum(res.pvalue, 1.0))


def t_p(d: np.ndarray) -> np.ndarray:
    """Two-sided p of the paired t test (n - 1 degrees of freedom), per row of ``d``.

    Differences that are all equal have no spread: p is 0 when they are not 0, else 1."""
    from scipy import stats

    d = np.atleast_2d(np.asarray(d, dtype=float))
    if d.shape[-1] < 2:
        return np.full(d.shape[0], math.nan)
    spread = np.ptp(d, axis=-1) > 1e-12 * np.maximum(1.0, np.abs(d).max(axis=-1))
    out = np.where(np.abs(d.mean(axis=-1)) > 0, 0.0, 1.0)
    if spread.any():
        with np.errstate(all="ignore"):
            out[spread] = stats.ttest_1samp(d[spread], 0.0, axis=-1).pvalue
    return out


def t_interval(d: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The paired t interval of the mean difference (nan below two seeds)."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()) - half, float(d.mean()) + half


@dataclass(frozen=True)
class PairedTest:
    """One test of a mean paired difference: its p-values, the smallest p it can give at n
    seeds (so a verdict can say when no outcome could reach the level), and why it is here."""

    name: str
    label: str  # as a verdict names it
    pvalues: Callable[[np.ndarray], np.ndarray]
    smallest_p: Callable[[int], float]
    why: str

    def seeds_needed(self, level: float = LEVEL) -> int:
        """The fewest seeds at which some outcome reaches ``level``."""
        return next(n for n in range(2, 64) if self.smallest_p(n) <= level)


TESTS: dict[str, PairedTest] = {
    t.name: t
    for t in (
        PairedTest("signflip", "sign-flip", signflip_p, lambda n: 2.0 / 2**n if n >= 1 else 1.0,
                   "exact at any seed count and any distribution of the differences (collapsed seeds included) when the "
                   "arms are exchangeable; cannot reject at 0.05 with 5 seeds or fewer, and says so"),
        PairedTest("t", "paired t", t_p, lambda n: 0.0 if n >= 2 else 1.0,
                   "rejects from 2 seeds; conservative under symmetric nulls (Efron 1969) but not exact; measured beside "
                   "the sign-flip test in bench calibration, and used where seeds are spent rather than findings named"),
    )
}
VERDICT_TEST = "signflip"  # every verdict: exact, so its false-positive rate holds at every seed count (bench calibration)


@dataclass(frozen=True)
class Paired:
    """A mean paired difference (a - b) over seeds, tested: what every verdict is built from."""

    by_seed: dict[int, float]
    test: str = VERDICT_TEST
    level: float = LEVEL
    p: float = field(init=False)
    low: float = field(init=False)
    high: float = field(init=False)

    def __post_init__(self) -> None:
        d = np.array(list(self.by_seed.values()), dtype=float)
        p = float(TESTS[self.test].pvalues(d)[0]) if len(d) else math.nan
        low, high = t_interval(d)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def seeds(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.by_seed.values()))) if self.by_seed else math.nan

    @property
    def needed(self) -> int:
        """The fewest seeds at which this test could show a difference at its level."""
        return TESTS[self.test].seeds_needed(self.level)

    @property
    def reachable(self) -> bool:
        """Whether any outcome over these seeds could reach the level."""
        return self.seeds > 0 and TESTS[self.test].smallest_p(self.seeds) <= self.level

    @property
    def real(self) -> bool:
        """A difference the test can back: p at or below the level."""
        return self.reachable and self.p <= self.level

    def verdict(self, sign: float = 1.0, gain: str = "gain", loss: str = "loss") -> str:
        """In words; ``sign`` -1 when lower is better (a loss metric)."""
        name = TESTS[self.test].label
        if self.seeds == 0:
            return "cannot tell: no paired seeds"
        if not self.reachable:
            return (f"cannot tell: {self.seeds} seed(s) can never show a difference at {self.level:g} with the {name} "
                    f"test; {self.needed} can")
        if self.real:
            return f"a real {gain if sign * self.mean > 0 else loss} ({name} p {self.p:.3f}, {self.seeds} seeds)"
        return f"cannot tell: inside the noise ({name} p {self.p:.2f}, {self.seeds} seeds)"

    def interval(self, scale: float = 1.0, unit: str = "", sign: float = 1.0) -> str:
        """The t interval, e.g. ``t 95% CI [+0.61, +2.10] points``; with ``sign`` -1 read as a gain."""
        if math.isnan(self.low):
            return f"no interval from {self.seeds} seed(s)"
        low, high = sorted((sign * scale * self.low, sign * scale * self.high))
        return f"t {100 * CONFIDENCE:.0f}% CI [{low:+.2f}, {high:+.2f}]{unit}"

    def as_dict(self) -> dict[str, object]:
        """The fields readers keep (``within_noise``: no verdict either way)."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "p": self.p, "test": self.test, "seeds": self.seeds,
                "needed": self.needed, "real": self.real, "within_noise": not self.real, "by_seed": dict(self.by_seed)}


def paired(a: Mapping[int, float], b: Mapping[int, float], test: str = VERDICT_TEST, level: float = LEVEL) -> Paired:
    """``a`` - ``b`` on the seeds both have (seed -> score), tested."""
    shared = sorted(set(a) & set(b))
    return Paired({int(s): float(a[s]) - float(b[s]) for s in shared}, test, level)


# -- which of many configs is best: the leader, the ones a test cannot separate from it --------
Scores = Mapping[int, "float | None"]  # seed -> score (None: failed)
BEST_SET_TEST = "t"  # separates from 3 seeds (bench calibration); sign-flip only from 6
BEST_SET_MIN_SEEDS = 3


def seed_mean(scores: Scores) -> float:
    """The mean over seeds; -inf when a seed failed or diverged (such a config is the worst)."""
    vals = list(scores.values())
    if not vals or any(v is None or not math.isfinite(v) for v in vals):
        return -math.inf
    return float(np.mean(vals))  # type: ignore[arg-type]


def leader(scores: Mapping[str, Scores], sign: float = 1.0) -> str:
    """The config with the best mean over its own seeds (``sign`` -1: lower is better)."""
    def rank(k: str) -> float:
        m = seed_mean(scores[k])
        return -math.inf if m == -math.inf else sign * m
    return max(scores, key=rank)


def _worse_p(a: Scores, b: Scores, test: str, level: float, min_seeds: int, sign: float) -> float:
    """The p-value that ``b`` differs from ``a`` on their shared seeds, when ``b`` is the worse
    of the two there (1.0 when it is not, or when they share fewer than ``min_seeds``; 0.0 when
    ``b`` failed or diverged on a seed: such a config is the worst)."""
    if seed_mean(b) == -math.inf:
        return 0.0
    shared = sorted(set(a) & set(b))
    if len(shared) < min_seeds:
        return 1.0
    d = Paired({s: float(a[s]) - float(b[s]) for s in shared}, test, level)  # type: ignore[arg-type]
    return d.p if sign * d.mean > 0 else 1.0


def separated(a: Scores, b: Scores, test: str = BEST_SET_TEST, level: float = LEVEL, min_seeds: int = BEST_SET_MIN_SEEDS,
              sign: float = 1.0) -> bool:
    """Whether ``b`` is worse than ``a`` on their shared seeds by ``test`` (p <= level), one comparison alone."""
    return _worse_p(a, b, test, level, min_seeds, sign) <= level


def best_set(scores: Mapping[str, Scores], test: str = BEST_SET_TEST, level: float = LEVEL,
             min_seeds: int = BEST_SET_MIN_SEEDS, sign: float = 1.0) -> list[str]:
    """The leader first, then every config ``test`` cannot separate from it (the best set).

    The leader is compared with every other config at once, so the p-values are adjusted by
    Holm's step-down (family-wise error at ``level``): unadjusted, 47 comparisons at 0.05 each
    would drop some config as good as the leader far more often than 1 time in 20. With it, the
    best set held the 10-seed truth's best in 96-100% of raced halving replays (``kdsearch
    bench replay``)."""
    if not scores:
        return []
    top = leader(scores, sign)
    others = [k for k in scores if k != top]
    p = {k: _worse_p(scores[top], scores[k], test, level, min_seeds, sign) for k in others}
    out = set(others)
    for i, k in enumerate(sorted(others, key=lambda k: p[k])):
        # a failed config (p 0) is out whatever the others say; the rest step down until one holds
        if p[k] > 0 and p[k] > level / (len(others) - i):
            break
        out.discard(k)
    return [top] + [k for k in others if k in out]


def probability_best(scores: Mapping[str, Scores], sign: float = 1.0, draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """How often each config leads when each config's seeds are drawn again (a bootstrap over
    its seeds): what the seeds say of which is best, not a verdict."""
    rng = np.random.default_rng(seed)
    keys = [k for k in scores if seed_mean(scores[k]) != -math.inf]
    if not keys:
        return {}
    means = np.stack([rng.choice(np.array([float(v) for v in scores[k].values()]), size=(draws, len(scores[k]))).mean(axis=1)
                      for k in keys], axis=1)
    wins = np.bincount((sign * means).argmax(axis=1), minlength=len(keys))
    return {k: float(w) / draws for k, w in zip(keys, wins)}
