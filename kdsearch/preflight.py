"""Every model a spec will build or load, checked once before anything trains.

A spec names models as the user wrote them (``minilm-l6:first2``, ``./my-teacher``,
``org/model``), so a stored search reads on any machine. Only what trains looks them up:
:func:`resolve_models` checks each name once (a fetched copy against its manifest, a local
folder's config and weights, a hub name in the local cache or, with a network, on the hub;
a cut's K against the model's layers) and returns the spec with the folders training loads.
Each problem is one line naming the field, before a teacher trains or a folder is made.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kdsearch.errors import ModelError, SpecError
from kdsearch.fetch import FETCHABLE, locate, split_cut

HUB_PROBE_S = 3.0  # how long a look-up may wait for the hub before calling the machine offline


def _fields(spec: Any) -> Iterator[tuple[str, str, bool]]:
    """(field, model name, whether it is a tokenizer) for every model the spec names."""
    datas = [("data", spec.data)] + [(f"search.datasets[{i}]", d) for i, d in enumerate(spec.search.datasets)]
    for where, d in datas:
        if d.tokenizer.kind == "pretrained" and d.tokenizer.name:
            yield f"{where}.tokenizer.name", d.tokenizer.name, True
    yield "teachers.model", spec.teachers.model, False
    yield "student.model", spec.student.model, False
    for i, st in enumerate(spec.search.students):
        yield f"search.students[{i}].model", st.model, False


def resolve_models(spec: Any) -> Any:
    """``spec`` with every fetched model name replaced by its folder, after checking every model.

    Raises SpecError naming the field of the first model that cannot be loaded.
    """
    from kdsearch.presets import PRESETS

    seen: set[tuple[str, bool]] = set()
    checked: dict[str, str] = {}  # name -> what it loads from (the same for a model and its tokenizer)
    for where, name, tokenizer in _fields(spec):
        if (name, tokenizer) in seen or split_cut(name)[0] in PRESETS:
            continue
        seen.add((name, tokenizer))
        try:
            checked[name] = _check(name, spec.workdir, tokenizer)
        except ModelError as e:
            raise SpecError(f"{where}: {e}") from None
    if not checked:
        return spec

    def folder(name: str) -> str:
        return checked.get(name, name)

    def data(d: Any) -> Any:
        if d.tokenizer.kind != "pretrained" or not d.tokenizer.name:
            return d
        return dataclasses.replace(d, tokenizer=dataclasses.replace(d.tokenizer, name=folder(d.tokenizer.name)))

    search = dataclasses.replace(
        spec.search,
        datasets=[data(d) for d in spec.search.datasets],
        students=[dataclasses.replace(st, model=folder(st.model)) for st in spec.search.students],
    )
    return dataclasses.replace(
        spec,
        data=data(spec.data),
        teachers=dataclasses.replace(spec.teachers, model=folder(spec.teachers.model)),
        student=dataclasses.replace(spec.student, model=folder(spec.student.model)),
        search=search,
    )


def _check(name: str, workdir: str, tokenizer: bool) -> str:
    """The folder (or hub name) ``name`` loads from, with its cut; ModelError when it cannot load."""
    base, how, k = split_cut(name)
    if base in FETCHABLE:
        where = locate(name, workdir)  # not fetched, or not whole: one line naming the fetch command
        config = _config_file(Path(split_cut(where)[0]))
    elif base.startswith((".", "/", "~")) or Path(base).exists():
        folder = Path(base).expanduser()
        if not folder.is_dir():
            raise ModelError(f"model folder {base!r} does not exist")
        if tokenizer:
            if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
                raise ModelError(f"{base!r} holds no tokenizer (tokenizer.json, vocab.txt or tokenizer_config.json)")
            return name
        config = _config_file(folder)
        _check_weights(folder)
        where = name
    else:
        config = _hub_config(base)
        where = name
    if how is not None:
        layers = config.get("num_hidden_layers")
        if isinstance(layers, int) and k > layers:
            raise ModelError(f"{name} keeps {k} layers, but {base} has {layers}: K must be in 1..{layers}")
    return where


def _config_file(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise ModelError(f"model folder {str(folder)!r} has no config.json (is it a save_pretrained folder?)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{folder / 'config.json'} is not readable JSON ({str(e)[:80]})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{folder / 'config.json'} is not a JSON object")
    return config


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be whole (None when its header and size agree): a cut
    file is caught here, in microseconds, instead of by the loader's traceback."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} has {size} bytes, too few for a header"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{path.name} is cut off inside its header ({size} bytes)"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        return f"{path.name} has no readable header ({str(e)[:60]})"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"{path.name} is truncated: {size} bytes, its header needs {need}"
    return None


def _check_weights(folder: Path) -> None:
    tensors = sorted(folder.glob("*.safetensors"))
    if not tensors and not sorted(folder.glob("*.bin")):
        raise ModelError(f"model folder {str(folder)!r} has no weights (*.safetensors or *.bin)")
    for f in tensors:
        why = safetensors_problem(f)
        if why:
            raise ModelError(f"model folder {str(folder)!r}: {why}")


def hub_reachable(timeout: float = HUB_PROBE_S) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_config(name: str) -> dict[str, Any]:
    """A hub model's config: from the local cache, else from the hub when it can be reached.

    Offline, one line at once: the hub client would retry for half a minute first.
    """
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return _config_file(Path(cached).parent)
    if not hub_reachable():
        raise ModelError(
            f"{name} is not in the local Hugging Face cache, and huggingface.co cannot be reached: this machine is "
            "offline (fetch the model elsewhere and name its folder, or use a fetched model: kdsearch models list)"
        )
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(name).to_dict()
    except Exception as e:  # noqa: BLE001 - a missing repo, a gated one, a network error: one line
        raise ModelError(f"cannot load {name} from the Hugging Face hub: {str(e).splitlines()[0][:200]}") from None
