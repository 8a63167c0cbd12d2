"""Whether a folder kdsearch is about to load code-bearing files from is as trusted as the code.

Resuming a search restores Ray Tune's own state files (``tuner.pkl``, the experiment and
search-generator states), which are pickles: whoever can write them can run code as the
user who resumes. kdsearch's own searcher state is JSON, but Tune's is not, so before a
resume every file and folder of the search must belong to the user and be writable by
nobody else.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from kdsearch.errors import KDSearchError


def _private_group(gid: int, uid: int) -> bool:
    """A group that holds only this user (Debian's user private groups, umask 002)."""
    try:
        group = grp.getgrgid(gid)
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}


def why_untrusted(path: Path) -> str | None:
    """Why another user could change ``path`` (None when only this user can)."""
    st = path.stat()  # follows links: what would be read is the target
    uid = os.geteuid()
    if st.st_uid != uid:
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = f"uid {st.st_uid}"
        return f"is owned by {owner}, not by you"
    if st.st_mode & stat.S_IWOTH:
        return "is writable by every user"
    if st.st_mode & stat.S_IWGRP and not _private_group(st.st_gid, uid):
        try:
            name = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            name = str(st.st_gid)
        return f"is writable by group {name}"
    return None


def check_trusted(folder: Path, action: str) -> None:
    """Refuse ``action`` unless ``folder`` and everything in it are this user's alone."""
    paths = [folder, *sorted(folder.rglob("*"))]
    for p in paths:
        try:
            why = why_untrusted(p)
        except OSError as e:
            why = f"cannot be checked ({e.strerror})"
        if why:
            raise KDSearchError(
                f"cannot {action}: {p} {why}; {action} loads Ray Tune's pickled state from this folder, and whoever "
                "can write there can run code as you (make it yours and `chmod -R go-w` it, if you trust its content)"
            )
