"""Searcher state as JSON, so ``Tuner.restore`` resumes a search mid-stage without unpickling.

Ray Tune saves a searcher with ``save(path)`` into ``tune/searcher-state-<time>.pkl`` (the name
is Tune's). kdsearch's searchers write plain JSON there: a resumed search reads back data,
never code. (Tune's own restore files are pickles; see ``kdsearch.search.trust``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from kdsearch.errors import KDSearchError

STATE_FORMAT = "kdsearch-searcher-state/1"


class JsonStateSearcher(Searcher):
    """A Searcher whose ``get_state`` is JSON-able data, saved and restored as JSON."""

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        # Tune hands a temporary name and renames it itself; a temporary file of ours beside it
        # would race Tune's sync of this folder to storage
        state = {"format": STATE_FORMAT, "state": self.get_state()}
        Path(checkpoint_path).write_text(json.dumps(state, allow_nan=True))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(read_state(Path(checkpoint_path)))


def read_state(path: Path) -> dict[str, Any]:
    """The state saved in ``path``; a one-line error when it is not kdsearch's JSON."""
    try:
        saved = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KDSearchError(
            f"{path}: not kdsearch's JSON searcher state (a pickle from an older kdsearch, or a damaged file); "
            "kdsearch does not unpickle it: start the search again"
        ) from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise KDSearchError(f"{path}: not a kdsearch searcher state ({STATE_FORMAT}); start the search again")
    return saved["state"]

