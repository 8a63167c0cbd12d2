"""Distillation losses, registered by name so a spec string picks one.

The objective is ``L = (1-alpha)*CE(y, p_s) + alpha*D(z_t, z_s)``. It is fused: the student's
log-probabilities are computed once and serve both terms whenever ``tau_s == 1``.

Since the paper (Sultan et al. 2024): ``dist`` (Huang et al. 2022), relations between the
two models' probabilities instead of the probabilities themselves; ``logit_std`` (Sun et
al. 2024), each example's logits z-scored before the temperature, the teacher's and the
student's each by their own; and ``tau_schedule: anneal`` (after Jafari et al. 2021), the
temperature falling linearly to 1 over the steps. Each takes a number per member, as alpha
does, so a population mixes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kdsearch.registry import registrar
from kdsearch.tasks import MASKED_LOGIT


def masked(z: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    """``z`` with the classes that do not exist (QA's padding positions) at ``MASKED_LOGIT``,
    after any temperature: their probability is exactly 0 at every tau."""
    return z if classes is None else z.masked_fill(~classes, MASKED_LOGIT)


@dataclass
class StudentLogits:
    """Student logits with log-probabilities computed at most once per temperature.

    ``classes`` (a bool mask shaped like the logits) marks the classes that exist; the
    others (QA's padding positions) get probability 0 at every temperature.
    """

    logits: torch.Tensor
    classes: torch.Tensor | None = None
    _cache: dict[float | int, torch.Tensor] = field(default_factory=dict)

    def log_probs(self, tau: float | torch.Tensor = 1.0) -> torch.Tensor:
        key = tau if isinstance(tau, float) else id(tau)  # a tensor of temperatures: by identity
        if key not in self._cache:
            z = self.logits if isinstance(tau, float) and tau == 1.0 else self.logits / tau
            self._cache[key] = F.log_softmax(masked(z.float(), self.classes), dim=-1)
        return self._cache[key]


Temperature = float | torch.Tensor  # a population passes one per member, shaped to broadcast


@dataclass(frozen=True)
class LossOptions:
    """What a distance may read besides the logits: which positions count (``valid``, the
    weights of a population's padded batch; None: every row), DIST's weights (a number,
    or one per member shaped to multiply ``[K, positions]``), and which classes exist
    (``classes``, a bool mask like the logits: QA's window positions; None: all)."""

    valid: torch.Tensor | None = None
    dist_beta: float | torch.Tensor = 1.0
    dist_gamma: float | torch.Tensor = 1.0
    classes: torch.Tensor | None = None

    def class_weights(self, like: torch.Tensor) -> torch.Tensor | None:
        """The mask of existing classes as 0/1 weights (None: all count)."""
        return None if self.classes is None else self.classes.to(like.dtype).expand_as(like)


Distance = Callable[[StudentLogits, torch.Tensor, Temperature, Temperature, LossOptions], torch.Tensor]
LOSSES: dict[str, Distance] = {}
TAU_SCHEDULES = ("constant", "anneal")


register_loss = registrar(LOSSES, "loss")
"""``@register_loss(name)`` adds ``D(student, teacher_logits, tau_t, tau_s, options) -> [positions]``:
the distance at each position (the last dimension is the classes); callers average it over
the positions that count, so one single trial and every member of a population share it."""


@register_loss("ce")
def soft_cross_entropy(student: StudentLogits, teacher: torch.Tensor, tau_t: Temperature, tau_s: Temperature,
                       options: LossOptions = LossOptions()) -> torch.Tensor:
    """-sum_c softmax(z_t/tau_t)_c * log softmax(z_s/tau_s)_c."""
    p_t = F.softmax(masked(teacher.float() / tau_t, options.classes), dim=-1)
    return -(p_t * student.log_probs(tau_s)).sum(-1)


@register_loss("kl")
def kl_divergence(student: StudentLogits, teacher: torch.Tensor, tau_t: Temperature, tau_s: Temperature,
                  options: LossOptions = LossOptions()) -> torch.Tensor:
    """KL(softmax(z_t/tau_t) || softmax(z_s/tau_s))."""
    log_p_t = F.log_softmax(masked(teacher.float() / tau_t, options.classes), dim=-1)
    return (log_p_t.exp() * (log_p_t - student.log_probs(tau_s))).sum(-1)


@register_loss("mse")
def logit_mse(student: StudentLogits, teacher: torch.Tensor, tau_t: Temperature, tau_s: Temperature,
              options: LossOptions = LossOptions()) -> torch.Tensor:
    """Mean over the classes that exist of (z_t/tau_t - z_s/tau_s)^2."""
    sq = (student.logits.float() / tau_s - teacher.float() / tau_t) ** 2
    w = options.class_weights(sq)
    return sq.mean(-1) if w is None else (sq * w).sum(-1) / w.sum(-1).clamp(min=1.0)


PEARSON_EPS = 1e-8  # a row (or class) with no spread correlates with nothing: 0, not NaN


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``, over the entries ``weights`` keeps."""
    if weights is None:
        weights = torch.ones_like(a)
    else:
        weights = weights.unsqueeze(-1).expand_as(a) if weights.dim() < a.dim() else weights
    n = weights.sum(dim, keepdim=True).clamp(min=1.0)
    a_c = a - (a * weights).sum(dim, keepdim=True) / n
    b_c = b - (b * weights).sum(dim, keepdim=True) / n
    cov = (weights * a_c * b_c).sum(dim)
    # one square root of the product, kept off 0: its gradient stays finite where a row has no
    # spread (a population computes every loss for every member and keeps each one's own)
    return cov / torch.sqrt((weights * a_c**2).sum(dim) * (weights * b_c**2).sum(dim) + PEARSON_EPS**2)


@register_loss("dist")
def dist(student: StudentLogits, teacher: torch.Tensor, tau_t: Temperature, tau_s: Temperature,
         options: LossOptions = LossOptions()) -> torch.Tensor:
    """DIST (Huang et al. 2022): beta * inter + gamma * intra, p = softmax(z / tau).

    inter: 1 - pearson(p_s[i, :], p_t[i, :]) at each position (across classes); intra:
    1 - pearson(p_s[:, c], p_t[:, c]) across the batch's positions, averaged over classes,
    the same at every position (so the callers' mean adds it once). With two classes the
    inter term is left out on purpose: two probabilities that sum to 1 correlate +1 or -1,
    a step with no gradient (undefined where a row is uniform), so on binary tasks DIST is
    its intra-class term, the correlation over the batch of the two models' probability of
    one class.
    """
    p_s = student.log_probs(tau_s).exp()
    p_t = F.softmax(masked(teacher.float() / tau_t, options.classes), dim=-1)
    cw = options.class_weights(p_s)
    rows = None if options.valid is None else options.valid.unsqueeze(-1).expand_as(p_s).to(p_s.dtype)
    within = rows if cw is None else (cw if rows is None else rows * cw)
    # a class that no row has (a padding position of every window) correlates with nothing
    # (0 spread): its 1 - r is 1, the same for every student, so it moves no gradient
    intra = (1.0 - pearson(p_s, p_t, dim=-2, weights=within)).mean(-1, keepdim=True)  # [..., 1]
    out = options.dist_gamma * intra.expand(p_s.shape[:-1])
    if p_s.shape[-1] > 2:
        out = out + options.dist_beta * (1.0 - pearson(p_s, p_t, dim=-1, weights=cw))
    return out


STD_EPS = 1e-7  # as Sun et al.'s code: an example whose logits are all equal stays finite


def standardize(logits: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's logits minus their mean, over their standard deviation (Sun et al. 2024);
    with ``classes``, over the classes that exist (the others stay masked)."""
    z = logits.float()
    if classes is None:
        return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + STD_EPS)
    w = classes.to(z.dtype)
    n = w.sum(-1, keepdim=True)
    mean = (z * w).sum(-1, keepdim=True) / n.clamp(min=1.0)
    var = (w * (z - mean) ** 2).sum(-1, keepdim=True) / (n - 1).clamp(min=1.0)  # unbiased, as torch.std
    return masked((z - mean) / (var.sqrt() + STD_EPS), classes)


def annealed(tau: Temperature, step: int, total: int) -> Temperature:
    """A temperature falling linearly from ``tau`` (at step 0) to 1 (at the last step)."""
    frac = step / max(1, total - 1)
    return tau + (1.0 - tau) * min(1.0, frac)


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
    logit_std: bool = False,
    dist_beta: float = 1.0,
    dist_gamma: float = 1.0,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(1-alpha)*CE(y, p_s) + alpha*D`` on flat ``[positions, classes]`` rows.

    alpha = 0 is plain fine-tuning (no teacher needed); alpha = 1 uses no human labels.
    With ``tau2_scaling`` D is multiplied by ``tau_s**2``, which keeps the gradient's size
    as the student temperature grows (Hinton et al.'s tau^2 when tau_s == tau_t).
    Augmented batches may give ``soft_labels`` (mixup's mixed targets) and a 0/1
    ``gold_weight`` per position: CE then averages over the positions whose label holds.
    With ``logit_std`` D reads both models' logits z-scored (CE with the labels reads them
    as they are). ``classes`` masks classes that do not exist (QA's padding positions).
    """
    student = StudentLogits(student_logits, classes)
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
        s_d, t_d = ((StudentLogits(standardize(student_logits, classes), classes), standardize(teacher_logits, classes))
                    if logit_std else (student, teacher_logits))
        d = LOSSES[loss](s_d, t_d, tau_t, tau_s, LossOptions(None, dist_beta, dist_gamma, classes)).mean()
        if tau2_scaling:
            d = d * tau_s**2
        total = total + alpha * d
    return total
