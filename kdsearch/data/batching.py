"""Length-bucketed batches with dynamic padding.

Training batches: shuffle, cut into pools of ``bucket_batches`` batches, sort each pool by
length, split it into batches, shuffle the batch order. Each batch is padded only to its own
longest example, so short snippets do not pay for long ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdsearch.data.prepare import EncodedSplit


@dataclass
class Batch:
    index: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    token_type_ids: torch.Tensor | None = None

    def model_inputs(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(self.index, move(self.input_ids), move(self.attention_mask), move(self.labels), move(self.token_type_ids))


def train_order(lengths: torch.Tensor, batch_size: int, generator: torch.Generator, bucket_batches: int = 50) -> list[torch.Tensor]:
    """Shuffled, length-bucketed batches of example indices."""
    n = lengths.shape[0]
    perm = torch.randperm(n, generator=generator)
    pool = batch_size * bucket_batches
    batches: list[torch.Tensor] = []
    for start in range(0, n, pool):
        chunk = perm[start : start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in order.tolist()]


def eval_order(lengths: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Batches sorted by length: the least padding; callers restore order by ``Batch.index``."""
    return list(torch.argsort(lengths, stable=True).split(batch_size))


def make_batch(split: EncodedSplit, index: torch.Tensor) -> Batch:
    lengths = split.lengths[index]
    width = split.input_ids.shape[1] if split.fixed_width else int(lengths.max())
    ids = split.input_ids[index, :width]
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
    labels = split.labels[index] if split.labels.dim() == 1 else split.labels[index, :width]
    types = None if split.token_type_ids is None else split.token_type_ids[index, :width]
    return Batch(index, ids, mask, labels, types)
