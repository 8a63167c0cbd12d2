"""Task metrics and fidelity (Stanton et al. 2021), on flat per-position tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def accuracy(pred: torch.Tensor, gold: torch.Tensor) -> float:
    return float((pred == gold).float().mean()) if gold.numel() else 0.0


def macro_f1(pred: torch.Tensor, gold: torch.Tensor, num_labels: int) -> float:
    """Mean F1 over the labels that occur in gold or predictions."""
    scores = []
    for c in range(num_labels):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def entity_spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """BIO chunks as (start, end, type), conlleval-style: a stray I- opens a chunk."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate(tags + ["O"]):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and kind == t
        if start is not None and not continues:
            spans.add((start, i, kind))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, t
    return spans


def entity_f1(pred: torch.Tensor, gold: torch.Tensor, offsets: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 over examples cut at ``offsets``."""
    p_tags, g_tags = [names[i] for i in pred.tolist()], [names[i] for i in gold.tolist()]
    tp = n_pred = n_gold = 0
    bounds = offsets.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        ps, gs = entity_spans(p_tags[a:b]), entity_spans(g_tags[a:b])
        tp += len(ps & gs)
        n_pred += len(ps)
        n_gold += len(gs)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def fidelity(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict[str, float]:
    """Top-1 agreement and mean KL(teacher || student) at temperature 1."""
    s, t = student_logits.float(), teacher_logits.float()
    agree = float((s.argmax(-1) == t.argmax(-1)).float().mean())
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
    return {"agreement": agree, "kl": float(kl)}


def calibration_error(logits: torch.Tensor, gold: torch.Tensor, bins: int = 10) -> float:
    """Expected calibration error (Guo et al. 2017): over ``bins`` equal-width bins of top-1
    confidence, the gap between confidence and accuracy, weighted by the bin's share of rows."""
    if gold.numel() == 0:
        return float("nan")
    probs = F.softmax(logits.float(), -1)
    conf, pred = probs.max(-1)
    right = (pred == gold).float()
    which = torch.clamp((conf * bins).long(), max=bins - 1)
    total = torch.zeros(bins).index_add_(0, which, torch.ones_like(conf))
    gap = torch.zeros(bins).index_add_(0, which, conf - right).abs()
    return float(gap.sum() / total.sum())
