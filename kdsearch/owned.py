"""Folders kdsearch owns, which an ``--out`` never replaces, however it is spelled.

An export or a report writes a folder the user names; with ``--force`` it replaces one that
exists. Some folders must never be replaced, even with ``--force``: a workdir (teacher
pools, caches, fetched models), a search folder, a folder of searches, and any folder that
holds one of those. They are found two ways: by where kdsearch would put them (the spec's
workdir, ``$KDSEARCH_WORKDIR``, the current folder's ``.kdsearch``, a search and its
storage), and by what they hold (a workdir's ``teachers/``, ``cache/`` or fetched
``models/``, a search's ``search.json``), so a copied search whose spec points elsewhere
still cannot make ``--out .kdsearch --force`` wipe the real one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from kdsearch.errors import KDSearchError

DEFAULT_WORKDIR = ".kdsearch"  # a spec's default workdir, relative to where kdsearch runs
LOOK_DEPTH = 3  # how deep a folder is searched for something kdsearch owns


def is_workdir(folder: Path) -> bool:
    """A kdsearch workdir: teacher pools, caches or fetched models."""
    if not folder.is_dir():
        return False
    if (folder / "teachers").is_dir() or any((folder / "cache" / sub).is_dir() for sub in ("data", "tokenizers", "teacher_outputs")):
        return True
    return any((m / "manifest.json").is_file() for m in (folder / "models").glob("*"))


def is_search(folder: Path) -> bool:
    """A kdsearch search folder (its ``search.json``; another tool's is not named here)."""
    return (folder / "search.json").is_file() and (folder / "spec.yaml").is_file()


def _holds(folder: Path, depth: int = LOOK_DEPTH) -> str | None:
    """What kdsearch owns at or below ``folder`` (a few levels), in words, or None."""
    if not folder.is_dir() or folder.is_symlink() and depth < LOOK_DEPTH:
        return None
    if is_search(folder):
        return f"a kdsearch search folder ({folder})"
    if is_workdir(folder):
        return f"a kdsearch workdir ({folder})"
    if depth == 0:
        return None
    try:
        children = [c for c in folder.iterdir() if c.is_dir() and not c.is_symlink()]
    except OSError:
        return None
    for child in children:
        found = _holds(child, depth - 1)
        if found:
            return found
    return None


def known(workdir: str | Path | None = None, searches: Iterable[str | Path] = (), storages: Iterable[str | Path] = ()) -> dict[str, Path]:
    """Where kdsearch puts what it owns, for this command: what -> folder (resolved)."""
    out: dict[str, Path] = {}
    if workdir:
        out["the workdir"] = Path(workdir).expanduser().resolve()
    if os.environ.get("KDSEARCH_WORKDIR"):
        out["$KDSEARCH_WORKDIR"] = Path(os.environ["KDSEARCH_WORKDIR"]).expanduser().resolve()
    out["this folder's workdir"] = (Path.cwd() / DEFAULT_WORKDIR).resolve()
    for i, s in enumerate(searches):
        out[f"the search {Path(s).name}" if i else "the search itself"] = Path(s).expanduser().resolve()
    for s in storages:
        if "://" not in str(s):
            out["the search's storage"] = Path(s).expanduser().resolve()
    return out


def check_not_owned(out: Path, known_folders: dict[str, Path], storages: Iterable[str | Path] = (), holding: bool = True) -> None:
    """Refuse an ``--out`` that is, is inside, or (with ``holding``: a folder replaced whole)
    holds something kdsearch owns, in one line.

    Inside a workdir or a search is refused; inside a storage folder is fine (a new folder
    beside searches), the storage itself is not.
    """
    target = out.expanduser().resolve()
    storage = {Path(s).expanduser().resolve() for s in storages if "://" not in str(s)}
    for what, folder in known_folders.items():
        inside = target == folder or (target.is_relative_to(folder) and folder not in storage)
        if inside or holding and folder.is_relative_to(target) and (folder.exists() or folder in storage):
            how = "is" if target == folder else "is inside" if inside else "holds"
            raise KDSearchError(f"--out {out}: {how} {what} ({folder}), which kdsearch owns; write somewhere else "
                                "(--force never replaces it)")
    for parent in [target, *target.parents]:
        if is_workdir(parent) or is_search(parent):
            raise KDSearchError(f"--out {out}: {'is' if parent == target else 'is inside'} "
                                f"{'a kdsearch workdir' if is_workdir(parent) else 'a kdsearch search folder'} ({parent}), which "
                                "kdsearch owns; write somewhere else (--force never replaces it)")
    found = _holds(target) if holding else None
    if found:
        raise KDSearchError(f"--out {out}: {'is' if found.endswith(f'({target})') else 'holds'} {found}, which kdsearch owns; write somewhere else "
                            "(--force never replaces it)")
