"""Augmentation of the distillation batches, by name (He et al. 2021; Stanton et al. 2021).

Each example of a training batch is augmented with probability ``p``:

- ``swap``, ``delete``, ``mask``: 15% of its real tokens (never specials or padding) are
  swapped with another token of the example, deleted, or replaced by ``[MASK]``;
- ``mixup``: its input embeddings are mixed with those of another example of the batch,
  ``lam * e_i + (1 - lam) * e_j`` with ``lam ~ Beta(0.4, 0.4)``, in each model's own
  embedding space.

The teacher then runs on the augmented batch in the same step, so its outputs cannot come
from the cache. Gold labels are used only where they stay valid: a text's class survives a
token edit, a token's tag survives masking; mixup mixes class labels the same way as the
inputs. Rows whose gold label does not survive (token edits or mixup in NER) learn from the
teacher alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kdsearch.data.batching import Batch
from kdsearch.data.prepare import IGNORE_INDEX
from kdsearch.registry import registrar

TOKEN_RATE = 0.15
MIXUP_BETA = 0.4


@dataclass
class Augmented:
    """A batch after augmentation, with what the loss needs to use labels correctly."""

    batch: Batch
    rows: torch.Tensor  # bool [B]: augmented rows
    label_ok: torch.Tensor  # bool [B]: rows whose gold labels still hold
    partner: torch.Tensor | None = None  # mixup: the other example of each row
    lam: torch.Tensor | None = None  # mixup: weight of the row's own example, 1 where not mixed

    def model_inputs(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Inputs for ``model``; mixup mixes in ``model``'s own word embeddings."""
        inputs = self.batch.model_inputs()
        if self.partner is None or self.lam is None:
            return inputs
        ids = inputs.pop("input_ids")
        embed = model.get_input_embeddings()
        lam = self.lam.to(ids.device)[:, None, None]
        inputs["inputs_embeds"] = lam * embed(ids) + (1.0 - lam) * embed(ids[self.partner.to(ids.device)])
        return inputs

    def soft_labels(self, num_labels: int) -> torch.Tensor | None:
        """Mixed one-hot class targets for mixup on classification, else None."""
        if self.partner is None or self.lam is None or self.batch.labels.dim() != 1:
            return None
        y = torch.nn.functional.one_hot(self.batch.labels, num_labels).float()
        lam = self.lam[:, None].to(y.device)
        return lam * y + (1.0 - lam) * y[self.partner.to(y.device)]


Augmentation = Callable[[Batch, torch.Tensor, "AugmentContext"], Augmented]
AUGMENTATIONS: dict[str, Augmentation | None] = {"none": None}


@dataclass
class AugmentContext:
    special_ids: torch.Tensor
    mask_token_id: int | None
    pad_token_id: int
    generator: torch.Generator
    token_task: bool


register_augmentation = registrar(AUGMENTATIONS, "augmentation")


def augment(name: str, batch: Batch, p: float, ctx: AugmentContext) -> Augmented:
    """Augment each row of ``batch`` with probability ``p`` (the ``generator`` decides)."""
    fn = AUGMENTATIONS[name]
    n = batch.input_ids.shape[0]
    rows = torch.rand(n, generator=ctx.generator) < p
    if fn is None or not bool(rows.any()):
        return Augmented(batch, torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool))
    return fn(batch, rows, ctx)


def _editable(batch: Batch, ctx: AugmentContext) -> torch.Tensor:
    """Real, non-special token positions: bool [B, T]."""
    return batch.attention_mask.bool() & ~torch.isin(batch.input_ids, ctx.special_ids)


def _pick(editable: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
    """TOKEN_RATE of each row's editable positions, at least one where any exists."""
    draw = torch.rand(editable.shape, generator=ctx.generator)
    picked = editable & (draw < TOKEN_RATE)
    # a row with nothing drawn gets its lowest-draw editable position
    lowest = torch.where(editable, draw, torch.full_like(draw, 2.0)).argmin(1)
    none = ~picked.any(1) & editable.any(1)
    picked[none, lowest[none]] = True
    return picked


@register_augmentation("mask")
def mask_tokens(batch: Batch, rows: torch.Tensor, ctx: AugmentContext) -> Augmented:
    if ctx.mask_token_id is None:
        raise ValueError("augment 'mask' needs a tokenizer with a mask token")
    picked = _pick(_editable(batch, ctx) & rows[:, None], ctx)
    ids = batch.input_ids.masked_fill(picked, ctx.mask_token_id)
    out = Batch(batch.index, ids, batch.attention_mask, batch.labels, batch.token_type_ids)
    return Augmented(out, rows, torch.ones_like(rows))


@register_augmentation("swap")
def swap_tokens(batch: Batch, rows: torch.Tensor, ctx: AugmentContext) -> Augmented:
    editable = _editable(batch, ctx) & rows[:, None]
    picked = _pick(editable, ctx)
    ids, labels = batch.input_ids.clone(), batch.labels.clone()
    token_labels = labels.dim() == 2
    for r in rows.nonzero().flatten().tolist():
        pos = editable[r].nonzero().flatten()
        if len(pos) < 2:
            continue
        for i in picked[r].nonzero().flatten().tolist():
            j = int(pos[torch.randint(len(pos), (1,), generator=ctx.generator)])
            ids[r, [i, j]] = ids[r, [j, i]]
            if token_labels:
                labels[r, [i, j]] = labels[r, [j, i]]
    out = Batch(batch.index, ids, batch.attention_mask, labels, batch.token_type_ids)
    return Augmented(out, rows, ~rows if ctx.token_task else torch.ones_like(rows))


@register_augmentation("delete")
def delete_tokens(batch: Batch, rows: torch.Tensor, ctx: AugmentContext) -> Augmented:
    keep = ~_pick(_editable(batch, ctx) & rows[:, None], ctx) & batch.attention_mask.bool()
    lengths = keep.sum(1)
    width = int(lengths.max())
    ids = torch.full((len(lengths), width), ctx.pad_token_id, dtype=batch.input_ids.dtype)
    token_labels = batch.labels.dim() == 2
    labels = torch.full((len(lengths), width), IGNORE_INDEX, dtype=batch.labels.dtype) if token_labels else batch.labels
    types = None if batch.token_type_ids is None else torch.zeros((len(lengths), width), dtype=batch.token_type_ids.dtype)
    for r in range(len(lengths)):
        n = int(lengths[r])
        ids[r, :n] = batch.input_ids[r][keep[r]]
        if token_labels:
            labels[r, :n] = batch.labels[r][keep[r]]
        if types is not None:
            types[r, :n] = batch.token_type_ids[r][keep[r]]
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    out = Batch(batch.index, ids, mask, labels, types)
    return Augmented(out, rows, ~rows if ctx.token_task else torch.ones_like(rows))


@register_augmentation("mixup")
def mixup(batch: Batch, rows: torch.Tensor, ctx: AugmentContext) -> Augmented:
    n = batch.input_ids.shape[0]
    partner = torch.randperm(n, generator=ctx.generator)
    lam = torch.where(rows, beta_sample(torch.rand(n, generator=ctx.generator), MIXUP_BETA), torch.ones(n))
    mask = torch.maximum(batch.attention_mask, batch.attention_mask[partner])
    out = Batch(batch.index, batch.input_ids, mask, batch.labels, batch.token_type_ids)
    label_ok = ~rows if ctx.token_task else torch.ones_like(rows)
    return Augmented(out, rows, label_ok, partner, lam)


@functools.cache
def _beta_cdf(a: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A grid on (0, 1) and the Beta(a, a) CDF on it: built once, not in every mixup step."""
    grid = torch.linspace(1e-4, 1 - 1e-4, 4001)
    beta = torch.distributions.Beta(torch.tensor(a), torch.tensor(a))
    cdf = torch.cumsum(beta.log_prob(grid).exp(), 0)
    return grid, cdf / cdf[-1]


def beta_sample(u: torch.Tensor, a: float) -> torch.Tensor:
    """Beta(a, a) quantiles of uniforms ``u`` (torch's Beta sampler takes no generator)."""
    grid, cdf = _beta_cdf(a)
    return grid[torch.searchsorted(cdf, u).clamp(max=len(grid) - 1)]
