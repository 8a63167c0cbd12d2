"""Where a trial gets teacher logits from: a cache on disk (the norm) or a live model.

Both give flat ``[positions, classes]`` rows for a batch, in the order ``Task.select``
gives the student's rows, so the loss never knows which one it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel

from kdsearch.data.batching import Batch, eval_order, make_batch
from kdsearch.data.prepare import EncodedSplit, PreparedData
from kdsearch.tasks import get_task


def positions_index(offsets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of a flat per-position tensor that belong to examples ``index``, in order."""
    starts, ends = offsets[index], offsets[index + 1]
    if bool((ends - starts == 1).all()):
        return starts
    return torch.cat([torch.arange(a, b) for a, b in zip(starts.tolist(), ends.tolist())])


class TeacherSignal(Protocol):
    def logits(self, split: str, batch: Batch) -> torch.Tensor: ...

    def split_logits(self, split: str) -> torch.Tensor | None: ...


class CachedTeacher:
    """Teacher logits read from the output cache: the teacher never runs in the trial."""

    def __init__(self, logits: dict[str, torch.Tensor], offsets: dict[str, torch.Tensor], name: str = "") -> None:
        self._logits = logits
        self._offsets = offsets
        self.name = name

    @classmethod
    def load(cls, folder: Path, name: str = "") -> CachedTeacher:
        logits, offsets = {}, {}
        for f in sorted(folder.glob("*.safetensors")):
            t = load_file(f)
            logits[f.stem], offsets[f.stem] = t["logits"], t["offsets"]
        return cls(logits, offsets, name)

    def logits(self, split: str, batch: Batch) -> torch.Tensor:
        return self._logits[split][positions_index(self._offsets[split], batch.index)]

    def split_logits(self, split: str) -> torch.Tensor | None:
        return self._logits.get(split)


class OnlineTeacher:
    """A live teacher, run under ``inference_mode`` for every batch; counts its calls."""

    def __init__(self, model: PreTrainedModel, task: str, name: str = "") -> None:
        self.model = model.eval()
        self.task = get_task(task)
        self.calls = 0
        self.name = name

    def logits(self, split: str, batch: Batch) -> torch.Tensor:
        self.calls += 1
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model(**batch.to(device).model_inputs()).logits
        return self.task.select(out, batch.labels.to(device))[0].clone()

    def split_logits(self, split: str) -> torch.Tensor | None:
        return None


def predict(
    model: PreTrainedModel,
    data: PreparedData,
    split: EncodedSplit,
    batch_size: int = 128,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Flat per-position logits for a whole split, in example order (float32, on CPU)."""
    task = get_task(data.task)
    device = device or next(model.parameters()).device
    offsets = split.offsets
    out: torch.Tensor | None = None
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device):
        for index in eval_order(split.lengths, batch_size):
            batch = make_batch(split, index).to(device)
            logits, _ = task.select(model(**batch.model_inputs()).logits, batch.labels)
            if out is None:
                out = torch.empty(int(offsets[-1]), logits.shape[-1])
            out[positions_index(offsets, index)] = logits.float().cpu()
    model.train(was_training)
    assert out is not None
    return out


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on CPU (fp32 is faster there)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
