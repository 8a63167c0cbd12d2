"""Intermediate-representation distillation (He et al. 2021, Distiller).

Student layers are mapped to teacher layers (``skip``: evenly spaced, ``last``: the last
teacher layers, ``none``); the hidden states of each mapped pair are compared by an
objective from :data:`FEATURE_LOSSES` (``mse``, ``cosine`` or ``mi_alpha``, the
interpolated bound on mutual information of Poole et al. 2019). A learned linear
projection takes student features to the teacher's width where the widths differ.

Features (``inter_features``) are ``hidden`` states, ``attention`` maps, or ``both``.
Hidden states are mean-pooled over each example's tokens, ``[batch, layers + 1, width]``
(index 0 is the embedding output). Pooled, a teacher's hidden states cost N x layers x
width floats, so they are cached with its logits and the teacher never runs in a trial;
token-level states would be ~25x larger on these datasets. Attention maps are compared as
MiniLM/TinyBERT do, by the KL divergence between teacher and student attention
distributions of each mapped layer; they cost N x layers x heads x length^2 floats
(~0.8 GB for 3,000 examples of 64 tokens), so for them the teacher runs in the trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kdsearch.errors import SpecError
from kdsearch.registry import registrar

FeatureLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
FEATURE_LOSSES: dict[str, FeatureLoss] = {}

# scores of the MI critic are cosines / CRITIC_TEMPERATURE: bounded, so exp() stays finite
CRITIC_TEMPERATURE = 0.1


register_feature_loss = registrar(FEATURE_LOSSES, "feature loss")
"""``@register_feature_loss(name)`` adds ``I(student [B, H], teacher [B, H], mi_alpha) -> scalar`` (lower is better)."""


@register_feature_loss("mse")
def feature_mse(student: torch.Tensor, teacher: torch.Tensor, mi_alpha: float = 0.5) -> torch.Tensor:
    """Mean squared difference over examples and dimensions."""
    return F.mse_loss(student.float(), teacher.float())


@register_feature_loss("cosine")
def feature_cosine(student: torch.Tensor, teacher: torch.Tensor, mi_alpha: float = 0.5) -> torch.Tensor:
    """Mean over examples of 1 - cos(student, teacher)."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def mi_alpha_bound(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """I_alpha (Poole et al. 2019) from critic scores ``scores[i, j] = f(x_i, y_j)``.

    The pairs (i, i) are the joint samples, all pairs (i, j) the product of marginals.
    ``I = 1 + mean_i[f_ii - log d_i] - mean_ij[exp(f_ij - log d_i)]`` with
    ``d_i = alpha * m_i + (1 - alpha)`` and ``m_i = mean_j exp(f_ij)``: alpha = 1 is InfoNCE
    (low variance, bounded by log B), alpha = 0 is TUBA with baseline 1 (unbounded, high
    variance).
    """
    b = scores.shape[0]
    scores = scores.float()
    log_m = torch.logsumexp(scores, dim=1) - math.log(b)
    if alpha >= 1.0:
        log_d = log_m
    elif alpha <= 0.0:
        log_d = torch.zeros_like(log_m)
    else:
        log_d = torch.logaddexp(math.log(alpha) + log_m, torch.full_like(log_m, math.log(1.0 - alpha)))
    joint = (scores.diagonal() - log_d).mean()
    marginal = torch.exp(scores - log_d[:, None]).mean()
    return 1.0 + joint - marginal


@register_feature_loss("mi_alpha")
def feature_mi_alpha(student: torch.Tensor, teacher: torch.Tensor, mi_alpha: float = 0.5) -> torch.Tensor:
    """Minus I_alpha between student and teacher features, the batch giving the negatives."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    return -mi_alpha_bound(s @ t.T / CRITIC_TEMPERATURE, mi_alpha)


def _none(n_student: int, n_teacher: int, origin: list[int] | None = None) -> list[tuple[int, int]]:
    return []


def _skip(n_student: int, n_teacher: int, origin: list[int] | None = None) -> list[tuple[int, int]]:
    return [(i, max(1, round(i * n_teacher / n_student))) for i in range(1, n_student + 1)]


def _last(n_student: int, n_teacher: int, origin: list[int] | None = None) -> list[tuple[int, int]]:
    return [(i, max(1, n_teacher - n_student + i)) for i in range(1, n_student + 1)]


INTER_FEATURES = ("hidden", "attention", "both")


def _init(n_student: int, n_teacher: int, origin: list[int] | None = None) -> list[tuple[int, int]]:
    """Each student layer to the teacher layer it was cut from (a student cut from a pretrained model)."""
    if not origin:
        raise SpecError("distill.inter_map: init needs a student cut from a pretrained model (e.g. minilm-l6:first2)")
    if max(origin) > n_teacher:
        raise SpecError(f"distill.inter_map: init maps to layers {origin} the student was cut from, but the teacher has {n_teacher}")
    return [(i, origin[i - 1]) for i in range(1, n_student + 1)]


LAYER_MAPS: dict[str, Callable[..., list[tuple[int, int]]]] = {
    "none": _none,
    "skip": _skip,
    "last": _last,
    "init": _init,
}


def layer_map(kind: str, n_student: int, n_teacher: int, student_config: object = None) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs, 1-based: hidden-state indices past the embeddings.

    ``init`` reads which layers a cut student came from off its config (``kdsearch_layers``).
    """
    return LAYER_MAPS[kind](n_student, n_teacher, getattr(student_config, "kdsearch_layers", None))


def pool_hidden(hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over each example's real tokens of every layer: ``[batch, layers + 1, width]``."""
    mask = attention_mask.unsqueeze(-1).to(hidden_states[0].dtype)
    denom = mask.sum(1).clamp(min=1.0)
    return torch.stack([(h * mask).sum(1) / denom for h in hidden_states], dim=1)


def expose_attention(model: torch.nn.Module) -> int:
    """Make ``model`` return the attention distributions it uses; returns the dropouts turned off.

    Switches to ``eager`` attention (``sdpa`` returns no probabilities) and turns attention
    dropout off: transformers returns the probabilities after dropout, whose zeros and
    1/(1-p) scaling are not a distribution, so a KL against them is not a KL.
    Hidden-state dropout stays.
    """
    model.set_attn_implementation("eager")  # type: ignore[operator]
    off = 0
    for module in model.modules():
        if "Attention" not in type(module).__name__:
            continue
        for name in ("dropout", "attn_dropout"):
            child = getattr(module, name, None)
            if isinstance(child, torch.nn.Dropout) and child.p > 0:
                child.p = 0.0
                off += 1
    if hasattr(model.config, "attention_probs_dropout_prob"):
        model.config.attention_probs_dropout_prob = 0.0  # so a saved student says what it was trained with
    return off


def group_heads(attention: torch.Tensor, heads: int) -> torch.Tensor:
    """Average ``attention [batch, H, T, T]`` over groups of consecutive heads down to ``heads``."""
    b, h, t, _ = attention.shape
    if h == heads:
        return attention
    return attention.reshape(b, heads, h // heads, t, t).mean(2)


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) between attention distributions, mean over heads and real query tokens.

    ``student [B, Hs, T, T]``, ``teacher [B, Ht, T, T]`` are softmax outputs (rows sum to
    1 over keys). Where the teacher's heads divide into the student's, each student head
    is matched with the mean of a group of consecutive teacher heads; otherwise both sides
    are averaged over all their heads (a mean of distributions is still one).
    """
    hs, ht = student.shape[1], teacher.shape[1]
    if ht % hs == 0:
        teacher = group_heads(teacher, hs)
    else:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    s, t = student.float(), teacher.float()
    # padded keys carry probability 0 on both sides: xlogy gives 0 there and the clamp keeps log finite
    kl = (torch.special.xlogy(t, t) - t * torch.log(s.clamp(min=1e-12))).sum(-1)  # [B, H, T]
    query = attention_mask[:, None, :].to(kl.dtype).expand_as(kl)
    return (kl * query).sum() / query.sum().clamp(min=1.0)


class FeatureProjector(torch.nn.Module):
    """One linear map per mapped layer from the student's width to the teacher's.

    Identity where the widths agree (or with ``project=False``, when only attention maps
    are compared). Trained with the student and dropped after training.
    """

    def __init__(self, pairs: list[tuple[int, int]], student_width: int, teacher_width: int, project: bool = True) -> None:
        super().__init__()
        self.pairs = pairs
        same = student_width == teacher_width or not project
        self.maps = torch.nn.ModuleList(
            torch.nn.Identity() if same else torch.nn.Linear(student_width, teacher_width) for _ in pairs
        )

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, loss: str, mi_alpha: float) -> torch.Tensor:
        """Mean over mapped pairs of the objective; ``student``/``teacher`` as from :func:`pool_hidden`."""
        fn = FEATURE_LOSSES[loss]
        terms = [fn(proj(student[:, i]), teacher[:, j].to(student.dtype), mi_alpha) for proj, (i, j) in zip(self.maps, self.pairs)]
        return torch.stack(terms).mean()

    def attention(
        self, student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean over mapped pairs of :func:`attention_kl`; ``student``/``teacher`` are the models' per-layer attentions."""
        # attentions[k] is layer k + 1's: the pairs count hidden states, where 0 is the embeddings
        terms = [attention_kl(student[i - 1], teacher[j - 1], attention_mask) for i, j in self.pairs]
        return torch.stack(terms).mean()
