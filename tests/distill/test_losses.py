"""Each loss against a hand computation on small tensors."""

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from kdsearch.distill.losses import LOSSES, StudentLogits, kd_objective, register_loss

ZS = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
ZT = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
Y = torch.tensor([1, 2])


def softmax(row: list[float], tau: float) -> list[float]:
    e = [math.exp(v / tau) for v in row]
    return [v / sum(e) for v in e]


def hand_ce(tau_t: float, tau_s: float) -> float:
    rows = []
    for s, t in zip(ZS.tolist(), ZT.tolist()):
        pt, ps = softmax(t, tau_t), softmax(s, tau_s)
        rows.append(-sum(a * math.log(b) for a, b in zip(pt, ps)))
    return sum(rows) / len(rows)


def hand_kl(tau_t: float, tau_s: float) -> float:
    rows = []
    for s, t in zip(ZS.tolist(), ZT.tolist()):
        pt, ps = softmax(t, tau_t), softmax(s, tau_s)
        rows.append(sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps)))
    return sum(rows) / len(rows)


def hand_mse(tau_t: float, tau_s: float) -> float:
    sq = [(t / tau_t - s / tau_s) ** 2 for sr, tr in zip(ZS.tolist(), ZT.tolist()) for s, t in zip(sr, tr)]
    return sum(sq) / len(sq)


@pytest.mark.parametrize("name, hand", [("ce", hand_ce), ("kl", hand_kl), ("mse", hand_mse)])
@pytest.mark.parametrize("tau_t, tau_s", [(1.0, 1.0), (2.0, 1.0), (4.0, 4.0), (2.0, 3.0)])
def test_distance_matches_hand_computation(name: str, hand: Callable[..., torch.Tensor], tau_t: float,
                                           tau_s: float) -> None:
    got = LOSSES[name](StudentLogits(ZS), ZT, tau_t, tau_s)
    assert got.shape == ZS.shape[:1]  # one value per position, averaged by the caller
    assert float(got.mean()) == pytest.approx(hand(tau_t, tau_s), rel=1e-5)


def test_kl_is_ce_minus_teacher_entropy() -> None:
    pt = F.softmax(ZT / 2, -1)
    entropy = float(-(pt * pt.log()).sum(-1).mean())
    assert hand_kl(2, 1) == pytest.approx(hand_ce(2, 1) - entropy, rel=1e-6)


def test_objective_mixes_terms_and_scales_by_tau_s_squared() -> None:
    ce_y = float(F.cross_entropy(ZS, Y))
    for tau2 in (True, False):
        got = kd_objective(ZS, Y, ZT, alpha=0.3, loss="kl", tau_t=2.0, tau_s=3.0, tau2_scaling=tau2)
        scale = 9.0 if tau2 else 1.0
        assert float(got) == pytest.approx(0.7 * ce_y + 0.3 * scale * hand_kl(2.0, 3.0), rel=1e-5)


@pytest.mark.parametrize("logit_std", [False, True])
def test_each_same_training_identity_holds_for_the_objective(logit_std: bool) -> None:
    """knobs.SAME_TRAINING: configs a search runs once train on the same objective, value and
    gradient, and a config the rule leaves alone does not."""
    from kdsearch.knobs import SAME_TRAINING, resolve, trains_as

    def objective(config: dict) -> tuple[float, torch.Tensor]:
        c = resolve(config)
        zs = ZS.clone().requires_grad_(True)
        got = kd_objective(zs, Y, ZT, alpha=c["alpha"], loss=c["loss"], tau_t=c["tau_t"], tau_s=c["tau_s"],
                           tau2_scaling=c.get("tau2_scaling", True), logit_std=logit_std)
        got.backward()
        return float(got), zs.grad

    assert SAME_TRAINING
    for tau in (0.5, 2.0, 4.0):
        config = {"loss": "mse", "alpha": 0.7, "tau_t": tau, "tau_s": "same"}
        assert trains_as(config) != config
        value, grad = objective(config)
        value_as, grad_as = objective(trains_as(config))
        assert value == pytest.approx(value_as, rel=1e-5) and torch.allclose(grad, grad_as, rtol=1e-5, atol=1e-7)
    other = {"loss": "mse", "alpha": 0.7, "tau_t": 4.0, "tau_s": 1.0}
    assert trains_as(other) == other and objective(other)[0] != pytest.approx(objective({**other, "tau_t": 1.0})[0], rel=1e-3)
    unscaled = {"loss": "mse", "alpha": 0.7, "tau_t": 4.0, "tau_s": "same", "tau2_scaling": False}
    assert trains_as(unscaled) == unscaled


def test_alpha_zero_is_plain_cross_entropy_and_needs_no_teacher() -> None:
    got = kd_objective(ZS, Y, None, alpha=0.0)
    assert float(got) == pytest.approx(float(F.cross_entropy(ZS, Y)), rel=1e-6)


def test_alpha_one_ignores_labels() -> None:
    a = kd_objective(ZS, Y, ZT, alpha=1.0, loss="ce", tau_t=2.0)
    b = kd_objective(ZS, torch.tensor([0, 0]), ZT, alpha=1.0, loss="ce", tau_t=2.0)
    assert float(a) == float(b) == pytest.approx(hand_ce(2.0, 1.0), rel=1e-5)


def test_fused_student_log_probs_computed_once_at_tau_one(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = F.log_softmax
    monkeypatch.setattr(F, "log_softmax", lambda *a, **k: calls.append(1) or real(*a, **k))
    kd_objective(ZS, Y, ZT, alpha=0.5, loss="ce", tau_t=2.0, tau_s=1.0)
    assert len(calls) == 1  # one pass over the student logits serves CE(y) and D


def test_gradient_reaches_student_logits() -> None:
    zs = ZS.clone().requires_grad_()
    kd_objective(zs, Y, ZT, alpha=0.5, loss="mse", tau_t=2.0).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_loss("ce")(lambda s, t, a, b: t.sum())
