"""Reading a spec: YAML safely loaded, ``--set`` overrides, search entries merged over their
sections, converted to the schema and checked; and writing one back."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from kdsearch import knobs
from kdsearch.errors import SpecError
from kdsearch.spec.paths import PathKind, resolve_paths, walk_paths
from kdsearch.spec.schema import Spec


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to ``tp``, raising SpecError naming ``where`` on mismatch."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except SpecError as e:
                errors.append(e)
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise SpecError(f"{where}: expected {names}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise SpecError(f"{where}: must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-3 as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise SpecError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported spec type {tp!r} at {where}")


def from_dict(cls: type, raw: Any, where: str = "spec") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            prefix = "" if where == "spec" else f"{where}."
            raise SpecError(f"{prefix}{key}: unknown field (known: {', '.join(names)})")
    kwargs = {}
    for key, value in raw.items():
        path = key if where == "spec" else f"{where}.{key}"
        kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key: the mapping's own construction reports it
            if key in seen:
                raise SpecError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """YAML safely loaded, a key twice refused; errors as one line naming ``where``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None


def load_spec(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Spec:
    """Read, override (``a.b=value`` strings, values parsed as YAML) and validate a spec.

    Relative data and model paths are resolved against the spec file's folder, so a spec
    works from any current directory; ``workdir`` (or ``$KDSEARCH_WORKDIR``) against the
    current directory, where the user runs. Model names stay names (``minilm-l6:first2``):
    what they load is looked up when something trains (:mod:`kdsearch.preflight`).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} does not exist")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot be read as text ({e})") from None
    return spec_from_text(text, p, overrides)


def spec_from_text(text: str, path: Path, overrides: list[str] | None = None) -> Spec:
    """A spec from ``text`` as if read from ``path`` (relative paths resolve against its folder)."""
    return spec_from_raw(parse_raw(text, path), path, overrides)


def parse_raw(text: str, path: Path) -> dict[str, Any]:
    """A spec file's YAML as a mapping (not yet checked), or one line naming ``path``."""
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping, got {type(raw).__name__}")
    return raw


def spec_from_raw(raw: dict[str, Any], path: Path, overrides: list[str] | None = None, stored: bool = False,
                  registries: bool = True) -> Spec:
    """Override, merge, resolve paths and check a parsed spec read from ``path``.

    A ``stored`` spec is a search's own ``spec.yaml``: its workdir and storage are relative
    to the search folder it lies in, not to where the user runs. Without ``registries`` the
    names of losses, layer maps and augmentations are taken as recorded (a reader of a stored
    spec, which never trains: see :func:`kdsearch.knobs.names_as_recorded`).
    """
    for item in overrides or []:
        apply_override(raw, item)
    search = raw.get("search")
    if not stored and isinstance(search, dict) and search.get("configs") == []:
        # given empty, not left out: a grid of the defaults alone is not what was asked (stored specs write [] for none)
        raise SpecError("search.configs: an empty list; give at least one config, or leave configs out to search the space")
    _merge_entries(raw)
    base = Path(path).parent.resolve()
    resolve_paths(raw, base, base if stored else Path.cwd(), stored)
    spec = from_dict(Spec, raw)
    with nullcontext() if registries else knobs.names_as_recorded():
        spec.check()
    return spec


def _dataset_over_data(base: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    # what names the data itself is the entry's own; sizes, lengths and the tokenizer come from ``data``
    return {**{k: v for k, v in base.items() if k not in ("dataset", "files", "columns", "task", "hub_config")}, **item}


def _student_over_student(base: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    entry = {**base, **item}
    train = base.get("train") or {}
    if isinstance(train, dict) and isinstance(item.get("train"), dict):
        entry["train"] = {**train, **item["train"]}  # an entry's lr keeps the section's epochs
    return entry


# search.<list>: (the section each entry is laid over, the field a bare name sets, what a name is, how)
_ENTRY_LISTS: dict[str, tuple[str, str, str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]]] = {
    "datasets": ("data", "dataset", "dataset name", _dataset_over_data),
    "students": ("student", "model", "model name", _student_over_student),
}


def _merge_entries(raw: dict[str, Any]) -> None:
    """Each ``search.datasets`` / ``search.students`` entry (a name or a partial mapping) over
    its section (``data`` / ``student``)."""
    search = raw.get("search")
    if not isinstance(search, dict):
        return
    for key, (section, field_name, what, over) in _ENTRY_LISTS.items():
        items = search.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise SpecError(f"search.{key}: expected a list, got {items!r}")
        base = raw.get(section) or {}
        if not isinstance(base, dict):
            raise SpecError(f"{section}: expected a mapping, got {base!r}")
        merged = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                item = {field_name: item}
            if not isinstance(item, dict):
                raise SpecError(f"search.{key}[{i}]: expected a {what} or a mapping, got {item!r}")
            merged.append(over(base, item))
        search[key] = merged


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override to a raw spec mapping."""
    if "=" not in item:
        raise SpecError(f"override {item!r}: expected dotted.key=value")
    key, _, text = item.partition("=")
    node = raw
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError(f"override {item!r}: expected dotted.key=value")
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise SpecError(f"override {item!r}: {part} is not a mapping")
    try:
        node[parts[-1]] = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, SpecError):
        raise SpecError(f"override {item!r}: value is not valid YAML") from None


def dump_spec(spec: Spec, relative_to: Path | None = None) -> str:
    """The spec as YAML, every default written out (``tau_s: same`` as the user wrote it).

    With ``relative_to`` (a search folder), local paths are written relative to it, so the
    stored spec reads the same wherever the folder is copied; model names stay names.
    """
    from kdsearch.fetch import split_cut

    raw = dataclasses.asdict(spec)
    if raw["distill"].pop("tau_s_same"):
        raw["distill"]["tau_s"] = knobs.SAME
    if not raw["search"]["configs"]:
        del raw["search"]["configs"]  # none: the space is searched (an empty list given is refused)
    if relative_to is not None:
        here = Path(relative_to).resolve()

        def relative(where: str, kind: PathKind, value: str) -> str:
            name, how, k = split_cut(value) if kind == "model" else (value, None, 0)
            if "://" in name or not Path(name).is_absolute():
                return value
            rel = os.path.relpath(name, here)
            rel = rel if rel.startswith("..") else f"./{rel}"  # read back as a path, not a name
            return rel + (f":{how}{k}" if how else "")

        walk_paths(raw, relative)
    return yaml.safe_dump(raw, sort_keys=False)
