"""Files kdsearch ships with: search spaces and the recommender's default store.

They are package data, so a wheel install finds them as a source checkout does. In the
repository, ``search_spaces/`` is a link to ``kdsearch/spaces/``, and the default store's
files link to the committed searches in ``results/reproduction/`` and ``results/pretrained/``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SPACES = PACKAGE / "spaces"
DEFAULT_STORE = PACKAGE / "store"  # the committed searches: reproduction/, pretrained/ and breadth/


def spec_path(name: str) -> str:
    """A spec file: the path given, or a shipped space by name (``quick``, ``quick.yaml``)."""
    if Path(name).exists():
        return name
    shipped = SPACES / (name if name.endswith(".yaml") else f"{name}.yaml")
    return str(shipped) if "/" not in name and shipped.is_file() else name


def shipped_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES.glob("*.yaml"))
