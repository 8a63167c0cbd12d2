"""Caches that heal: a manifest of sizes and checksums, written last, checked when read.

A cache folder (a trained tokenizer, tokenized splits, a teacher's logits and features) is
complete only when its ``manifest.json`` says so, and only while every file still matches
it. A folder that does not (truncated by a full disk, a killed copy, a stray edit, or made
by an older kdsearch without a manifest) is removed and rebuilt, with one warning line.
Fetched models are sealed the same way (:mod:`kdsearch.fetch`), but never rebuilt here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from kdsearch import atomic

MANIFEST = "manifest.json"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def seal(folder: Path) -> None:
    """Write the manifest of every file under ``folder`` (subfolders too, by relative path)."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {n: {"size": (folder / n).stat().st_size, "sha256": _digest(folder / n)} for n in names}
    atomic.write_text(folder / MANIFEST, json.dumps({"files": entries}, indent=1))


# folders already checked whole in this process, by each file's (name, size, mtime): a search
# checks a fetched model in planning and again in every trial, and hashing 90 MB each time would
# cost more than a small trial trains
_VERIFIED: set[tuple[str, tuple[tuple[str, int, int], ...]]] = set()


def listed(folder: Path) -> set[str]:
    """The files ``folder``'s manifest lists (empty without one)."""
    try:
        return set(json.loads((folder / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def problem(folder: Path, required: Iterable[str] = (), full: bool = True) -> str | None:
    """Why ``folder`` is not complete (None when it is); ``required`` files must be listed.

    Without ``full`` only sizes are compared; with it, checksums too (once per process while
    no file's size or time changes)."""
    try:
        entries = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return "incomplete (it has no manifest: cut off while written, or made by an older kdsearch)"
    except (OSError, ValueError, KeyError, TypeError):
        return "damaged (its manifest is not readable)"
    for name in required:
        if name not in entries:
            return f"incomplete ({name} is not in its manifest)"
    stamp = []
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            return f"incomplete ({name} is missing)"
        st = path.stat()
        if st.st_size != entry["size"]:
            return f"damaged ({name} has {st.st_size} bytes, not {entry['size']})"
        stamp.append((name, st.st_size, st.st_mtime_ns))
    seen = (str(folder.resolve()), tuple(stamp))
    if not full or seen in _VERIFIED:
        return None
    for name, entry in entries.items():
        if _digest(folder / name) != entry["sha256"]:
            return f"damaged ({name} does not match its checksum)"
    _VERIFIED.add(seen)
    return None


def usable(folder: Path, what: str, required: Iterable[str] = ()) -> bool:
    """True when ``folder`` is a complete cache; a broken one is removed, with a warning."""
    if not folder.exists():
        return False
    why = problem(folder, required)
    if why is None:
        return True
    warn(f"{what} cache {folder} is {why}; rebuilding it")
    shutil.rmtree(folder, ignore_errors=True)
    return False


def warn(text: str) -> None:
    print(f"kdsearch: warning: {text}", file=sys.stderr, flush=True)
