"""Optuna as a config-level Ray Tune ``Searcher``: ask for configs, tell the mean over seeds.

The study lives in ``optuna.journal`` in the search's folder (``optuna-dashboard
optuna.journal`` shows it), so the searcher's own state is only which Tune trial holds
which Optuna trial: JSON. Several configs may be asked before any is told; TPE's constant
liar then treats the running ones as bad, so a batch spreads out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdsearch.search._state import JsonStateSearcher
from kdsearch.search.methods import BuildContext
from kdsearch.search.space import Space

SamplerFactory = Callable[[int], Any]
"""``seed -> optuna sampler``; a resumed study gets a fresh seed (see ``StudySearcher``)."""


def tpe_sampler(seed: int) -> Any:
    """TPE with the constant liar: configs asked together do not all land in one spot."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def random_sampler(seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


class StudySearcher(JsonStateSearcher):
    """One cell's Optuna study, maximising ``metric``.

    Args:
        space: the knobs; choices become categorical distributions, ranges numeric ones.
        sampler: builds the study's sampler from a seed.
        seed: the sampler's seed for a new study.
        study_name: the study's name in ``journal``.
        journal: the journal file (created when missing, appended to when resumed); None keeps
            the study in memory (a replay, see :mod:`kdsearch.search.replay`).
        first: configs tried first (a recommendation, the spec's defaults), once per study.
    """

    def __init__(
        self,
        space: Space,
        sampler: SamplerFactory,
        seed: int,
        study_name: str,
        journal: str | Path | None,
        metric: str = "score",
        first: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(metric=metric, mode="max")
        self.distributions = space.optuna_distributions()
        self.sampler = sampler
        self.seed = seed
        self.study_name = study_name
        self.journal = str(journal) if journal is not None else None
        self.first = list(first or [])
        self.live: dict[str, int] = {}  # Tune (inner) trial id -> Optuna trial number
        self._study: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the search algorithm into its tuner.pkl: the study reopens from its journal
        state = self.__dict__.copy()
        state["_study"] = None
        return state

    @property
    def study(self) -> Any:
        if self._study is None:
            import optuna
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            # a replay keeps its study in memory (a new one, every time); a search in its journal
            storage = optuna.storages.InMemoryStorage() if self.journal is None else JournalStorage(JournalFileBackend(self.journal))
            names = {s.study_name for s in storage.get_all_studies()}
            if self.study_name in names:
                # a resumed search: the sampler's random state is not saved (it would be a
                # pickle), so it restarts from a seed that depends on how far the study got
                done = len(storage.get_all_trials(storage.get_study_id_from_name(self.study_name)))
                self._study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=self.sampler(self.seed + done))
            else:
                self._study = optuna.create_study(
                    study_name=self.study_name, storage=storage, sampler=self.sampler(self.seed), direction="maximize"
                )
                for config in self.first:
                    self._study.enqueue_trial(config)
        return self._study

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        trial = self.study.ask(self.distributions)
        self.live[trial_id] = trial.number
        return dict(trial.params)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        number = self.live.pop(trial_id, None)
        if number is None:
            return
        value = None if error or not result else result.get(self.metric)
        if value is None:
            self.study.tell(number, state=TrialState.FAIL)
        else:
            self.study.tell(number, float(value))

    def get_state(self) -> dict[str, Any]:
        return {"live": self.live}

    def set_state(self, state: dict[str, Any]) -> None:
        self.live = {tid: int(n) for tid, n in state["live"].items()}



def build_tpe(ctx: BuildContext) -> StudySearcher:
    """TPE, starting from the space's defaults (the spec's values or a recommendation)."""
    first = None if ctx.space.ranges else [dict(ctx.space.defaults)]
    return StudySearcher(ctx.space, tpe_sampler, ctx.search_seed, ctx.study_name, _journal(ctx), first=first)


def build_random(ctx: BuildContext) -> StudySearcher:
    return StudySearcher(ctx.space, random_sampler, ctx.search_seed, ctx.study_name, _journal(ctx))


def _journal(ctx: BuildContext) -> Path | None:
    return None if ctx.folder is None else ctx.folder / "optuna.journal"
