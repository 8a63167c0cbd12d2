"""Building and loading teachers and students (Hugging Face transformers).

A preset (:mod:`kdsearch.presets`, where the names are checked without importing torch) is a
BERT-style encoder built from a config (random initialisation):

| preset | layers | hidden | heads | FFN  | non-embedding params | meant for              |
|--------|--------|--------|-------|------|----------------------|------------------------|
| xxxs   | 1      | 64     | 2     | 256  | 0.05 M               | student (CPU-sized)    |
| xxs    | 2      | 64     | 2     | 256  | 0.1 M                | student (CPU-sized)    |
| xs     | 2      | 128    | 2     | 512  | 0.4 M                | student (BERT-tiny)    |
| s      | 4      | 256    | 4     | 1024 | 3.2 M                | student (BERT-mini)    |
| m      | 4      | 512    | 8     | 2048 | 12.6 M               | student (BERT-small)   |
| l      | 6      | 512    | 8     | 2048 | 18.9 M               | teacher (CPU-sized)    |
| base   | 12     | 768    | 12    | 3072 | 85 M                 | teacher (BERT-base)    |

Anything else is a local ``save_pretrained`` folder, a model fetched by name (``minilm-l6``,
see :mod:`kdsearch.fetch`), or a Hugging Face hub name. A pretrained model can be cut into a
student: ``NAME:first2`` keeps its first 2 layers, ``NAME:alternate3`` 3 evenly spaced ones
ending with the last (DistilBERT's every-other-layer start); the student's config records
which (``kdsearch_layers``, 1-based), so intermediate distillation can map each student
layer to the teacher layer it was cut from (``inter_map: init``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, PreTrainedModel

from kdsearch.errors import ModelError
from kdsearch.fetch import check_whole, label, split_cut
from kdsearch.hf import transformers
from kdsearch.presets import PRESETS, check_model_name
from kdsearch.tasks import get_task


def _head_class(task: str) -> type:
    return getattr(transformers, get_task(task).head)


def cut_layers(how: str, k: int, n: int) -> list[int]:
    """The 1-based layers of an ``n``-layer model a ``how``/``k`` cut keeps."""
    if how == "first":
        return list(range(1, k + 1))
    return [round((i + 1) * n / k) for i in range(k)]  # evenly spaced, ending with the last


def build_for(name: str, data: Any, dropout: float | None = None) -> PreTrainedModel:
    """:func:`build_model` for a prepared dataset (its task, labels, vocabulary, length)."""
    return build_model(name, data.task, data.label_names, data.vocab_size, data.pad_token_id, data.max_length, dropout)


def build_model(
    name: str,
    task: str,
    label_names: list[str],
    vocab_size: int,
    pad_token_id: int,
    max_length: int,
    dropout: float | None = None,
) -> PreTrainedModel:
    """A model for ``task``: a preset built from config, or a checkpoint loaded by name.

    ``dropout`` sets the hidden and attention dropout (None: the preset's or checkpoint's).
    """
    drop = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    id2label = dict(enumerate(label_names))
    label2id = {v: k for k, v in id2label.items()}
    cls = _head_class(task)
    if name in PRESETS:
        p = PRESETS[name]
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=p.hidden,
            num_hidden_layers=p.layers,
            num_attention_heads=p.heads,
            intermediate_size=p.ffn,
            max_position_embeddings=max(64, max_length),
            pad_token_id=pad_token_id,
            id2label=id2label,
            label2id=label2id,
            **drop,
        )
        return cls.from_config(config, attn_implementation="sdpa")
    problem = check_model_name(name)
    if problem:
        raise ModelError(problem)
    base, how, k = split_cut(name)
    if label(base) != base:  # a fetched folder: the sizes its manifest gives (hashes were checked in planning)
        check_whole(Path(base), label(base), full=False)
    model = load_model(base, task, label_names, drop) if how is None else _cut(base, how, k, task, label_names, drop)
    if model.config.vocab_size < vocab_size:
        raise ModelError(
            f"model {name!r} has a vocabulary of {model.config.vocab_size} but the data's tokenizer has "
            f"{vocab_size}: use the model's tokenizer (data.tokenizer: {{kind: pretrained, name: {name}}})"
        )
    return model


def load_model(name: str, task: str, label_names: list[str], config_changes: dict[str, Any] | None = None) -> PreTrainedModel:
    """Load a checkpoint; a head trained on other labels is refused, a missing one is added."""
    cls = _head_class(task)
    try:
        config = transformers.AutoConfig.from_pretrained(name)
    except Exception as e:  # OSError for missing folders, hub errors when offline
        raise ModelError(
            f"model {name!r} is not a preset ({', '.join(PRESETS)}) and cannot be loaded: {str(e).splitlines()[0]}"
        ) from None
    saved = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
    has_head = any(a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in (config.architectures or []))
    if has_head and saved != list(label_names):
        raise ModelError(
            f"model {name!r} was trained on labels {saved}, but the data has labels {list(label_names)}"
        )
    id2label = dict(enumerate(label_names))
    try:
        return cls.from_pretrained(
            name,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            attn_implementation="sdpa",
            **(config_changes or {}),
        )
    except Exception as e:
        raise ModelError(f"cannot load model {name!r}: {str(e).splitlines()[0]}") from None


def _cut(base: str, how: str, k: int, task: str, label_names: list[str], changes: dict[str, Any]) -> PreTrainedModel:
    """A student of ``k`` of ``base``'s layers (its embeddings, a new head)."""
    model = load_model(base, task, label_names, changes)
    layers = _encoder_layers(model)
    n = len(layers)
    if k > n:
        raise ModelError(f"model {base!r} has {n} layers: it cannot give {k}")
    keep = cut_layers(how, k, n)
    layers_kept = torch.nn.ModuleList(layers[i - 1] for i in keep)
    _set_encoder_layers(model, layers_kept)
    model.config.num_hidden_layers = k
    model.config.kdsearch_layers = keep  # which source layer each student layer was
    return model


def _encoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ModelError(f"cannot cut {type(model).__name__}: kdsearch cuts BERT-style encoders (encoder.layer)")
    return layers


def _set_encoder_layers(model: PreTrainedModel, layers: torch.nn.ModuleList) -> None:
    model.base_model.encoder.layer = layers


def count_parameters(model: PreTrainedModel) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return {"total": total, "embedding": emb, "non_embedding": total - emb}
