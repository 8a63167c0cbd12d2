"""Where a spec names paths (data, models, workdir, storage), and making them absolute."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal


from kdsearch.errors import SpecError
from kdsearch.spec.schema import SearchSpec, Spec


def _looks_local(s: str) -> bool:
    return s.startswith((".", "/", "~")) or os.sep in s and Path(s).exists()


PathKind = Literal["workdir", "storage", "dataset", "file", "model", "register"]


def walk_paths(raw: dict[str, Any], fn: Callable[[str, PathKind, str], str]) -> None:
    """Apply ``fn(field, kind, value)`` to every field of a raw spec that names a path or a model, in place.

    One list of such fields, read by path resolution (:func:`resolve_paths`), by stored specs
    (:func:`dump_spec` writes them relative to the search folder) and by the reader of older
    stored searches. Values that are not strings are left for the checks to report.
    """

    def visit(node: Any, key: str, kind: PathKind, where: str) -> None:
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = fn(f"{where}.{key}" if where else key, kind, node[key])

    def data(d: Any, where: str) -> None:
        visit(d, "dataset", "dataset", where)
        if isinstance(d, dict):
            files = d.get("files")
            if isinstance(files, dict):
                for k in files:
                    visit(files, k, "file", f"{where}.files")
            visit(d.get("tokenizer"), "name", "model", f"{where}.tokenizer")

    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    visit(raw, "workdir", "workdir", "")
    visit(search, "storage", "storage", "search")
    data(raw.get("data"), "data")
    for i, d in enumerate(search.get("datasets") or []):
        data(d, f"search.datasets[{i}]")
    for section in ("teachers", "student"):
        visit(raw.get(section), "model", "model", section)
    for i, st in enumerate(search.get("students") or []):
        visit(st, "model", "model", f"search.students[{i}]")
    teachers = raw.get("teachers")
    if isinstance(teachers, dict) and isinstance(teachers.get("register"), list):
        teachers["register"] = [fn(f"teachers.register[{i}]", "register", r) if isinstance(r, str) else r
                                for i, r in enumerate(teachers["register"])]


def resolve_paths(raw: dict[str, Any], base: Path, cwd: Path, stored: bool = False) -> None:
    """Make local paths absolute: data and models against ``base``, workdir and storage against
    ``cwd``; fetched and hub model names and built-in datasets stay names. ``$KDSEARCH_WORKDIR``
    (and, for a new search, ``$KDSEARCH_STORAGE``) replace the spec's own."""
    from kdsearch.fetch import split_cut

    raw.setdefault("workdir", Spec.workdir)
    if not stored:
        if raw.get("search") is None:
            raw["search"] = {}
        search = raw["search"]
        if isinstance(search, dict):
            search.setdefault("storage", SearchSpec.storage)
            if os.environ.get("KDSEARCH_STORAGE"):
                search["storage"] = os.environ["KDSEARCH_STORAGE"]
    if os.environ.get("KDSEARCH_WORKDIR"):
        raw["workdir"] = os.environ["KDSEARCH_WORKDIR"]

    def absolute(where: str, kind: PathKind, value: str) -> str:
        def fix(s: str, against: Path) -> str:
            q = Path(s).expanduser()
            try:
                return str(q if q.is_absolute() else (against / q).resolve())
            except (RuntimeError, OSError) as e:  # Python 3.11 raises RuntimeError on a symlink loop
                raise SpecError(f"{where}: {s!r} cannot be resolved ({'a symbolic link loop' if 'loop' in str(e).lower() else e})") from None

        if kind == "workdir":
            return fix(value, cwd)
        if kind == "storage":  # where every node writes: always absolute
            return value if "://" in value else fix(value, cwd)
        if kind == "model":
            name, how, k = split_cut(value)
            return fix(name, base) + (f":{how}{k}" if how else "") if _looks_local(name) else value
        if kind == "dataset":
            return fix(value, base) if _looks_local(value) else value
        return fix(value, base)  # files, registered teachers

    walk_paths(raw, absolute)
