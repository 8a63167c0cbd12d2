"""The objectives since the paper, against direct computations on small hand-made tensors:
DIST's Pearson terms (and what it is on two classes), z-scored logits, the annealed
temperature; and a population member with each is its single trial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdsearch import knobs
from kdsearch.data.prepare import PreparedData
from kdsearch.distill.losses import LOSSES, LossOptions, StudentLogits, annealed, kd_objective, pearson, standardize
from kdsearch.distill.trainer import Trainer
from kdsearch.spec import DistillSpec
from kdsearch.teachers import TeacherPool
from tests.distill.test_population import CONFIGS, population, student

S = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
T = torch.tensor([[1.5, 0.0, -0.5], [0.2, 0.1, 0.4], [-0.5, 1.0, 1.0], [0.5, -0.5, 2.0]])


def softmax(z: np.ndarray, tau: float) -> np.ndarray:
    e = np.exp(z / tau - (z / tau).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("tau_t,tau_s", [(1.0, 1.0), (4.0, 1.0), (2.0, 2.0)])
def test_dist_is_its_two_pearson_terms(tau_t: float, tau_s: float) -> None:
    ps, pt = softmax(S.numpy(), tau_s), softmax(T.numpy(), tau_t)
    inter = np.array([1 - corr(ps[i], pt[i]) for i in range(4)])
    intra = np.mean([1 - corr(ps[:, c], pt[:, c]) for c in range(3)])
    got = LOSSES["dist"](StudentLogits(S), T, tau_t, tau_s, LossOptions(dist_beta=2.0, dist_gamma=0.5))
    assert got.shape == (4,)
    assert got.numpy() == pytest.approx(2.0 * inter + 0.5 * intra, rel=1e-4, abs=1e-5)
    # the objective: mean over positions, times tau_s^2, weighted by alpha
    total = kd_objective(S, torch.tensor([0, 1, 1, 2]), T, alpha=1.0, loss="dist", tau_t=tau_t, tau_s=tau_s,
                         dist_beta=2.0, dist_gamma=0.5)
    assert float(total) == pytest.approx(tau_s**2 * float(np.mean(2.0 * inter + 0.5 * intra)), rel=1e-4)


def test_dist_on_two_classes_is_its_intra_class_term() -> None:
    s2, t2 = S[:, :2], T[:, :2]
    ps, pt = softmax(s2.numpy(), 1.0), softmax(t2.numpy(), 1.0)
    # across two classes a correlation is +1 or -1 (a step, no gradient): left out on purpose
    with np.errstate(invalid="ignore"):  # a uniform row (the last student row) has no correlation at all
        across = [corr(ps[i], pt[i]) for i in range(4)]
    assert {round(c) for c in across if np.isfinite(c)} <= {-1, 1} and not np.isfinite(across[3])
    intra = np.mean([1 - corr(ps[:, c], pt[:, c]) for c in range(2)])
    got = LOSSES["dist"](StudentLogits(s2), t2, 1.0, 1.0, LossOptions(dist_beta=5.0, dist_gamma=1.0))
    assert got.numpy() == pytest.approx(np.full(4, intra), abs=1e-5)  # beta changes nothing
    uniform = LOSSES["dist"](StudentLogits(torch.zeros(4, 2)), t2, 1.0, 1.0, LossOptions())
    assert torch.isfinite(uniform).all() and uniform.numpy() == pytest.approx(np.ones(4))  # no spread: correlates with nothing


def test_pearson_counts_only_the_positions_that_count() -> None:
    a, b = torch.tensor([[1.0, 2.0, 3.0, 99.0]]), torch.tensor([[2.0, 4.0, 7.0, -50.0]])
    weights = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert float(pearson(a, b, -1, weights)) == pytest.approx(corr(np.array([1, 2, 3.0]), np.array([2, 4, 7.0])), abs=1e-6)


def test_z_scored_logits() -> None:
    z = standardize(S).numpy()
    manual = (S.numpy() - S.numpy().mean(-1, keepdims=True)) / (S.numpy().std(-1, ddof=1, keepdims=True) + 1e-7)
    assert z == pytest.approx(manual, abs=1e-5)
    assert standardize(S * 10 + 3).numpy() == pytest.approx(z, abs=1e-5)  # scale and shift of a row are gone
    y = torch.tensor([0, 1, 1, 2])
    for loss in ("ce", "kl", "mse", "dist"):
        with_std = kd_objective(S, y, T, alpha=0.7, loss=loss, tau_t=2.0, tau_s=1.0, logit_std=True)
        by_hand = kd_objective(S, y, T, alpha=0.7, loss=loss, tau_t=2.0, tau_s=1.0) * 0  # CE on the raw logits ...
        by_hand = 0.3 * torch.nn.functional.cross_entropy(S, y) + 0.7 * LOSSES[loss](
            StudentLogits(standardize(S)), standardize(T), 2.0, 1.0, LossOptions()).mean()  # ... D on the z-scored
        assert float(with_std) == pytest.approx(float(by_hand), abs=1e-5), loss


def test_the_annealed_temperature() -> None:
    assert annealed(4.0, 0, 101) == 4.0 and annealed(4.0, 50, 101) == pytest.approx(2.5) and annealed(4.0, 100, 101) == 1.0
    assert annealed(0.5, 100, 101) == 1.0  # below 1 it rises to 1


def test_a_trainer_anneals_tau_t_and_tau_s_when_it_follows(rt_data: PreparedData) -> None:
    from kdsearch.spec import OptimSpec

    optim = OptimSpec(epochs=1, batch_size=32)
    for tau_s, follows in (("same", True), (1.0, False)):
        d = DistillSpec(alpha=0.5, tau_t=4.0, tau_s=tau_s, tau_schedule="anneal")
        d.check("distill")
        trainer = Trainer(student(rt_data, 0), rt_data, optim, 0, d, object(), torch.device("cpu"))  # type: ignore[arg-type]
        trainer.step = trainer.total_steps // 2
        tau_t, ts = trainer.temperatures()
        assert tau_t == pytest.approx(annealed(4.0, trainer.step, trainer.total_steps)) and 1.0 < tau_t < 4.0
        assert ts == (tau_t if follows else 1.0)


def test_the_knobs_in_the_table_and_older_rows() -> None:
    for name in ("dist_beta", "dist_gamma", "logit_std", "tau_schedule"):
        assert knobs.KNOBS[name].fusable and knobs.KNOBS[name].since == 4
    base = {"alpha": 0.5, "loss": "ce", "tau_t": 2.0}
    # an older search's row (no such columns) and a new one at the defaults: one behaviour, one key
    assert knobs.key(base) == knobs.key({**base, "logit_std": False, "tau_schedule": "constant", "dist_beta": 1.0})
    assert knobs.key({**base, "logit_std": True}) != knobs.key(base)
    assert knobs.key({**base, "tau_t": 1.0, "tau_schedule": "anneal"}) == knobs.key({**base, "tau_t": 1.0})  # 1 -> 1: nothing
    assert "dist_beta" not in knobs.effective({**base, "dist_beta": 2.0})  # only with loss: dist
    assert "dist_beta" in knobs.effective({**base, "loss": "dist", "dist_beta": 2.0})


NEW = [  # the new knobs, per member, beside the paper's
    ("t_ll", DistillSpec(teacher="t_ll", loss="dist", alpha=0.6, tau_t=2.0, dist_beta=0.5, dist_gamma=2.0), {}, 0),
    ("t_ll", DistillSpec(teacher="t_ll", loss="kl", alpha=0.5, tau_t=8.0, tau_s="same", tau_schedule="anneal"), {}, 0),
    ("t_hs", DistillSpec(teacher="t_hs", loss="mse", alpha=0.5, tau_t=4.0, tau_schedule="anneal"), {}, 3),
    CONFIGS[0],
]
# z-scored logits of two classes are +-1/sqrt(2): only which class leads is left, a step with no
# gradient, so on a binary task a member and its single trial part at the first tie a rounding
# breaks differently; they are compared on token classification (21 tags), where it is smooth
STANDARDIZED = [
    ("t_hs", DistillSpec(teacher="t_hs", loss="ce", alpha=0.9, tau_t=2.0, logit_std=True), {}, 1),
    ("t_ll", DistillSpec(teacher="t_ll", loss="dist", alpha=1.0, tau_t=4.0, logit_std=True, tau_s="same"), {}, 2),
]


@pytest.mark.parametrize("data_name", ["rt_data", "ner_data"])
def test_population_members_with_the_new_knobs_are_their_single_trials(data_name: str, request: pytest.FixtureRequest,
                                                                       rt_pool: TeacherPool, workdir: Path) -> None:
    data = request.getfixturevalue(data_name)
    pool = rt_pool
    if data_name == "ner_data":
        from kdsearch.spec import OptimSpec, TeacherSpec
        from kdsearch.teachers import TeacherPool

        pool = TeacherPool(workdir / "ner_pool", data, "cpu")
        pool.train(TeacherSpec(model="xs", seeds=[0], train=OptimSpec(epochs=1, batch_size=32, learning_rate=2e-3)), log=lambda s: None)
    configs = NEW if data_name == "rt_data" else [NEW[0], NEW[1], *STANDARDIZED]
    pop = population(data, pool, configs)
    reports = list(pop.run())
    assert pop.diverged() == {}
    logits = pop.predict("validation")
    from kdsearch.distill.teacher_signal import predict

    for k, m in enumerate(pop.members):
        single = Trainer(student(data, m.seed), data, m.optim, m.seed, m.distill, m.teacher, torch.device("cpu"))
        for epoch, metrics in enumerate(single.run()):
            assert reports[epoch][k]["train_loss"] == pytest.approx(metrics["train_loss"], abs=1e-4), (k, m.distill)
        assert (logits[k] - predict(single.model, data, data.splits["validation"]).logits).abs().max() < 1e-4, k
