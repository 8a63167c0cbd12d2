"""Searcher state as a pickle, so ``Tuner.restore`` resumes a search mid-stage."""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher


class PicklingSearcher(Searcher):
    """A Searcher whose whole state is its attributes, saved and restored by pickle."""

    def get_state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
