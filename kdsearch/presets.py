"""The model presets and the names a model may go by, read without torch: a stored search's
spec is checked (its model names) wherever it is read, and a reader of results must not pay
for importing torch and transformers to do it. Building the models: :mod:`kdsearch.models`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdsearch.fetch import FETCHABLE, split_cut

__all__ = ["PRESETS", "Preset", "check_model_name", "is_local"]


@dataclass(frozen=True)
class Preset:
    layers: int
    hidden: int
    heads: int
    ffn: int


PRESETS: dict[str, Preset] = {
    "xxxs": Preset(1, 64, 2, 256),
    "xxs": Preset(2, 64, 2, 256),
    "xs": Preset(2, 128, 2, 512),
    "s": Preset(4, 256, 4, 1024),
    "m": Preset(4, 512, 8, 2048),
    "l": Preset(6, 512, 8, 2048),
    "base": Preset(12, 768, 12, 3072),
}


def is_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists()


def check_model_name(name: str) -> str | None:
    """Why ``name`` names no model (None if it may): a preset, a folder, a fetched name or
    ``org/name``, maybe with a cut. Only the name is read here; whether the folder, the
    fetched copy or the hub entry is there is checked before training (:mod:`kdsearch.preflight`),
    so a stored search reads anywhere."""
    base, how, k = split_cut(name)
    if how is not None and k < 1:
        return f"model {name!r}: :{how}{k} keeps {k} layers; a cut keeps K >= 1 of the model's layers (:{how}1 or more)"
    if how is not None and base in PRESETS:
        return f"model {name!r}: a cut (:firstK, :alternateK) takes a pretrained model, not the preset {base}"
    if base in PRESETS or base in FETCHABLE or is_local(base) or "/" in base:
        return None
    return f"unknown model {name!r}: not a preset ({', '.join(PRESETS)}), a folder, a fetched model ({', '.join(FETCHABLE)}), or a hub name like org/model"
