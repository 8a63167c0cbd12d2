"""Distillation losses, registered by name so a spec string picks one.

The objective is ``L = (1-alpha)*CE(y, p_s) + alpha*D(z_t, z_s)``. It is fused: the student's
log-probabilities are computed once and serve both terms whenever ``tau_s == 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kdsearch.registry import registrar


@dataclass
class StudentLogits:
    """Student logits with log-probabilities computed at most once per temperature."""

    logits: torch.Tensor
    _cache: dict[float | int, torch.Tensor] = field(default_factory=dict)

    def log_probs(self, tau: float | torch.Tensor = 1.0) -> torch.Tensor:
        key = tau if isinstance(tau, float) else id(tau)  # a tensor of temperatures: by identity
        if key not in self._cache:
            z = self.logits if isinstance(tau, float) and tau == 1.0 else self.logits / tau
            self._cache[key] = F.log_softmax(z.float(), dim=-1)
        return self._cache[key]


Temperature = float | torch.Tensor  # a population passes one per member, shaped to broadcast
Distance = Callable[[StudentLogits, torch.Tensor, Temperature, Temperature], torch.Tensor]
LOSSES: dict[str, Distance] = {}


register_loss = registrar(LOSSES, "loss")
"""``@register_loss(name)`` adds ``D(student, teacher_logits, tau_t, tau_s) -> [positions]``:
the distance at each position (the last dimension is the classes); callers average it over
the positions that count, so one single trial and every member of a population share it."""


@register_loss("ce")
def soft_cross_entropy(student: StudentLogits, teacher: torch.Tensor, tau_t: Temperature, tau_s: Temperature) -> torch.Tensor:
    """-sum_c softmax(z_t/tau_t)_c * log softmax(z_s/tau_s)_c."""
    p_t = F.softmax(teacher.float() / tau_t, dim=-1)
    return -(p_t * student.log_probs(tau_s)).sum(-1)


@register_loss("kl")
def kl_divergence(student: StudentLogits, teacher: torch.Tensor, tau_t: Temperature, tau_s: Temperature) -> torch.Tensor:
    """KL(softmax(z_t/tau_t) || softmax(z_s/tau_s))."""
    log_p_t = F.log_softmax(teacher.float() / tau_t, dim=-1)
    return (log_p_t.exp() * (log_p_t - student.log_probs(tau_s))).sum(-1)


@register_loss("mse")
def logit_mse(student: StudentLogits, teacher: torch.Tensor, tau_t: Temperature, tau_s: Temperature) -> torch.Tensor:
    """Mean over classes of (z_t/tau_t - z_s/tau_s)^2."""
    return ((student.logits.float() / tau_s - teacher.float() / tau_t) ** 2).mean(-1)


def kd_objective(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    alpha: float,
    loss: str = "ce",
    tau_t: float = 1.0,
    tau_s: float = 1.0,
    tau2_scaling: bool = True,
    soft_labels: torch.Tensor | None = None,
    gold_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(1-alpha)*CE(y, p_s) + alpha*D`` on flat ``[positions, classes]`` rows.

    alpha = 0 is plain fine-tuning (no teacher needed); alpha = 1 uses no human labels.
    With ``tau2_scaling`` D is multiplied by ``tau_s**2``, which keeps the gradient's size
    as the student temperature grows (Hinton et al.'s tau^2 when tau_s == tau_t).
    Augmented batches may give ``soft_labels`` (mixup's mixed targets) and a 0/1
    ``gold_weight`` per position: CE then averages over the positions whose label holds.
    """
    student = StudentLogits(student_logits)
    total = student_logits.new_zeros((), dtype=torch.float32)
    if alpha < 1.0:
        if soft_labels is None and gold_weight is None:
            ce = F.nll_loss(student.log_probs(1.0), labels)
        else:
            logp = student.log_probs(1.0)
            rows = -(soft_labels * logp).sum(-1) if soft_labels is not None else -logp.gather(1, labels[:, None]).squeeze(1)
            w = torch.ones_like(rows) if gold_weight is None else gold_weight.to(rows.dtype)
            ce = (rows * w).sum() / w.sum().clamp(min=1.0)
        total = total + (1.0 - alpha) * ce
    if alpha > 0.0:
        if teacher_logits is None:
            raise ValueError("alpha > 0 needs teacher logits")
        d = LOSSES[loss](student, teacher_logits, tau_t, tau_s).mean()
        if tau2_scaling:
            d = d * tau_s**2
        total = total + alpha * d
    return total
