"""Where a trial gets teacher outputs from: a cache on disk (the norm) or a live model.

Both give flat ``[positions, classes]`` rows for a batch, in the order ``Task.select``
gives the student's rows, so the loss never knows which one it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel

from kdsearch.data.batching import Batch, eval_order, make_batch
from kdsearch.data.prepare import EncodedSplit, PreparedData
from kdsearch.distill.intermediate import pool_hidden
from kdsearch.errors import KDSearchError
from kdsearch.tasks import get_task

FEATURES_SUFFIX = ".features.safetensors"


def positions_index(offsets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of a flat per-position tensor that belong to examples ``index``, in order."""
    starts, ends = offsets[index], offsets[index + 1]
    if bool((ends - starts == 1).all()):
        return starts
    return torch.cat([torch.arange(a, b) for a, b in zip(starts.tolist(), ends.tolist())])


class TeacherSignal(Protocol):
    def logits(self, split: str, batch: Batch) -> torch.Tensor: ...

    def split_logits(self, split: str) -> torch.Tensor | None: ...


class ModelOutputs(NamedTuple):
    logits: torch.Tensor
    """flat ``[positions, classes]``"""
    features: torch.Tensor | None = None
    """pooled hidden states ``[batch, layers + 1, width]``"""
    attentions: tuple[torch.Tensor, ...] | None = None
    """one ``[batch, heads, T, T]`` per layer"""


def run_model(
    model: PreTrainedModel,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    task: str,
    features: bool = False,
    attentions: bool = False,
) -> ModelOutputs:
    """Flat per-position logits (and pooled hidden states, attention maps) of ``model`` on ``inputs``.

    Attention maps need the model's ``eager`` attention (``sdpa`` does not return them).
    """
    out = model(**inputs, output_hidden_states=features, output_attentions=attentions)
    t = get_task(task)
    logits = t.select(t.logits(out, inputs["attention_mask"]), labels)[0]
    pooled = pool_hidden(out.hidden_states, inputs["attention_mask"]) if features else None
    return ModelOutputs(logits, pooled, tuple(out.attentions) if attentions else None)


class CachedTeacher:
    """Teacher outputs read from the cache: the teacher never runs in the trial.

    ``features`` (pooled hidden states) are there when intermediate distillation needs
    them; ``model`` is there when the teacher must run in the trial: on augmented inputs,
    or for attention maps, which are too large to cache.
    """

    def __init__(
        self,
        logits: dict[str, torch.Tensor],
        offsets: dict[str, torch.Tensor],
        name: str = "",
        features: dict[str, torch.Tensor] | None = None,
        model: PreTrainedModel | None = None,
    ) -> None:
        self._logits = logits
        self._offsets = offsets
        self.name = name
        self._features = features or {}
        self._model = model.eval() if model is not None else None
        self._model_blob: tuple[type, type, dict, dict] | None = None

    def __getstate__(self) -> dict:
        # a live transformers model does not pickle (it holds a ContextVar): ship classes,
        # config and weights, and rebuild on first use in the trial
        state = self.__dict__.copy()
        model = state.pop("_model", None)
        state["_model"] = None
        if model is not None:
            state["_model_blob"] = (type(model), type(model.config), model.config.to_dict(), model.state_dict())
        return state

    @property
    def model(self) -> PreTrainedModel | None:
        if self._model is None and self._model_blob is not None:
            model_cls, config_cls, config, weights = self._model_blob
            model = model_cls(config_cls.from_dict(config))
            model.load_state_dict(weights)
            self._model = model.eval()
        return self._model

    @classmethod
    def load(cls, folder: Path, name: str = "", features: bool = False, model: PreTrainedModel | None = None) -> CachedTeacher:
        logits, offsets, feats = {}, {}, {}
        for f in sorted(folder.glob("*.safetensors")):
            if f.name.endswith(FEATURES_SUFFIX):
                if features:
                    feats[f.name[: -len(FEATURES_SUFFIX)]] = load_file(f)["features"]
                continue
            t = load_file(f)
            logits[f.stem], offsets[f.stem] = t["logits"], t["offsets"]
        return cls(logits, offsets, name, feats, model)

    @classmethod
    def mean(cls, members: list[CachedTeacher], name: str) -> CachedTeacher:
        """An ensemble: the mean of the members' logits (and pooled features, when all have them)."""
        first = members[0]
        logits = {s: torch.stack([m._logits[s] for m in members]).mean(0) for s in first._logits}
        feats: dict[str, torch.Tensor] = {}
        if all(m._features for m in members):
            shapes = {m._features[s].shape for m in members for s in first._features}
            if len({shape[1:] for shape in shapes}) > 1:
                raise KDSearchError(f"teacher {name}: its members' hidden states differ in shape, so they do not average")
            feats = {s: torch.stack([m._features[s] for m in members]).mean(0) for s in first._features}
        return cls(logits, dict(first._offsets), name, feats)

    def logits(self, split: str, batch: Batch) -> torch.Tensor:
        return self._logits[split][positions_index(self._offsets[split], batch.index)]

    def split_logits(self, split: str) -> torch.Tensor | None:
        return self._logits.get(split)

    def features(self, split: str, batch: Batch) -> torch.Tensor:
        """Pooled hidden states ``[batch, layers + 1, width]`` of the batch's examples."""
        if split not in self._features:
            raise ValueError(f"teacher {self.name!r} has no cached features for {split!r}")
        return self._features[split][batch.index]

    def feature_shape(self) -> tuple[int, int] | None:
        """(layers, width) of the cached features, or of the model; None if neither is here."""
        for f in self._features.values():
            return f.shape[1] - 1, f.shape[2]
        if self.model is not None:
            return self.model.config.num_hidden_layers, self.model.config.hidden_size
        return None

    def run(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, task: str, features: bool = False, attentions: bool = False
    ) -> ModelOutputs:
        """The live teacher on a (possibly augmented) batch, under ``inference_mode``."""
        if self.model is None:
            raise ValueError(
                f"teacher {self.name!r} was shipped without its model; augmentation and attention maps need it"
            )
        with torch.inference_mode():
            out = run_model(self.model, inputs, labels, task, features, attentions)
        # inference tensors cannot enter autograd: clone them into normal ones
        return ModelOutputs(
            out.logits.clone(),
            None if out.features is None else out.features.clone(),
            None if out.attentions is None else tuple(a.clone() for a in out.attentions),
        )


class OnlineTeacher:
    """A live teacher, run under ``inference_mode`` for every batch; counts its calls."""

    def __init__(self, model: PreTrainedModel, task: str, name: str = "") -> None:
        self.model = model.eval()
        self.task = task
        self.calls = 0
        self.name = name

    def logits(self, split: str, batch: Batch) -> torch.Tensor:
        self.calls += 1
        device = next(self.model.parameters()).device
        batch = batch.to(device)
        with torch.inference_mode():
            logits = run_model(self.model, batch.model_inputs(), batch.labels, self.task).logits
        return logits.clone()

    def split_logits(self, split: str) -> torch.Tensor | None:
        return None


def predict(
    model: PreTrainedModel,
    data: PreparedData,
    split: EncodedSplit,
    batch_size: int = 128,
    device: torch.device | None = None,
    features: bool = False,
) -> ModelOutputs:
    """Flat per-position logits for a whole split, in example order (float32, on CPU).

    With ``features``, also the pooled hidden states ``[examples, layers + 1, width]``.
    """
    device = device or next(model.parameters()).device
    offsets = split.offsets
    out: torch.Tensor | None = None
    pooled_all: torch.Tensor | None = None
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device):
        for index in eval_order(split.lengths, batch_size):
            batch = make_batch(split, index).to(device)
            logits, pooled, _ = run_model(model, batch.model_inputs(), batch.labels, data.task, features)
            if out is None:
                out = torch.empty(int(offsets[-1]), logits.shape[-1])
            out[positions_index(offsets, index)] = logits.float().cpu()
            if pooled is not None:
                if pooled_all is None:
                    pooled_all = torch.empty(len(split), *pooled.shape[1:])
                pooled_all[index] = pooled.float().cpu()
    model.train(was_training)
    assert out is not None
    return ModelOutputs(out, pooled_all)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on CPU (fp32 is faster there)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
