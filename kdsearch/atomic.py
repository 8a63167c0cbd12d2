"""Atomic writes: readers see the old file/folder or the new one, never a partial one."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


@contextmanager
def new_dir(path: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` when the block ends without error.

    With ``replace``, a ``path`` that exists is replaced (see :func:`replace_dir`).
    Without, if another process created ``path`` meanwhile (two workers filling the same
    cache), its copy wins and this one is discarded: both hold the same content by
    construction.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if replace:
            replace_dir(tmp, path)
            return
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(new: Path, path: Path) -> None:
    """Put the folder ``new`` where ``path`` is, in one step; the old ``path`` is removed after.

    Linux swaps the two names at once (``renameat2`` with ``RENAME_EXCHANGE``), so a reader
    sees the old folder or the new one; elsewhere the old one is first moved aside.
    """
    if not path.exists():
        os.rename(new, path)
        return
    if not _exchange(new, path):
        aside = _tmp_name(path)
        os.rename(path, aside)
        os.rename(new, path)
        new = aside
    shutil.rmtree(new, ignore_errors=True)  # now the old folder


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where that is not available."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def check_writable(folder: Path, field: str) -> None:
    """Refuse, in one line naming ``field``, a folder kdsearch could not create or write into.

    Probes the folder, or the nearest folder above it that exists, with a file it removes
    at once: nothing is left behind, also when the answer is yes.
    """
    from kdsearch.errors import KDSearchError

    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(20, f"{probe_in} is not a folder")
        probe = _tmp_name(probe_in / "write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise KDSearchError(f"{field}: cannot write to {folder} ({e.strerror or e})") from None


def make_dirs(folder: Path) -> list[Path]:
    """``mkdir -p folder`` (which must be new); returns the folders it created, deepest first."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True)
    return created
