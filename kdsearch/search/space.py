"""A search space: the knobs a spec varies, their choices or ranges, and their defaults.

What a knob is, holds and means lives in :mod:`kdsearch.knobs`; this module orders the
searched knobs (greedy's stage order), picks each one's default, enumerates the
deduplicated grid and hands Optuna its distributions. Configs are plain ``{knob: value}``
dicts; :meth:`Space.key` gives the canonical form two configs share when they train the
same student, so nothing is run twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from kdsearch import knobs
from kdsearch.errors import SpecError
from kdsearch.knobs import Config, Value
from kdsearch.search.ranges import RangeSpec


class Space:
    """An ordered set of knobs with their choices and defaults.

    The default of a knob is the spec's own value when it is among the choices, else the
    first choice (or the ``prefer``-red value, a recommendation): greedy holds later knobs
    at their defaults and Optuna tries them first.

    Args:
        space: the spec's ``search.space`` (checked when the spec was read).
        distill: the spec's ``distill`` section, whose values are the knobs' base values ...
        train: ... with the student's ``train`` section.
        prefer: a recommendation's values, where the space allows them.
        aliases: knob -> {value: the value it trains the same as}, for this cell: t_hs and
            t_ll picking one checkpoint are one training (see :func:`teacher_aliases`).
        classes: the cell's number of classes (labels, or tags per token): a knob that changes
            nothing below its ``min_classes`` (DIST's inter-class weight on a binary task) trains
            every value as the spec's own.
    """

    def __init__(self, space: Mapping[str, list[Value] | RangeSpec], distill: Any, train: Any,
                 prefer: Mapping[str, Value] | None = None, aliases: Mapping[str, Mapping[Value, Value]] | None = None,
                 configs: list[Mapping[str, Value]] | None = None, classes: int | None = None) -> None:
        if configs:  # an explicit list (search.configs): its knobs are the space, its values the choices
            space = {name: list(dict.fromkeys(c[name] for c in configs if name in c))
                     for name in dict.fromkeys(n for c in configs for n in c)}
        self.explicit = [dict(c) for c in configs or []]
        self.ranges: dict[str, RangeSpec] = {}
        self.choices: dict[str, list[Value]] = {}
        for name, c in space.items():
            if isinstance(c, RangeSpec):
                self.ranges[name] = c
            else:
                self.choices[name] = [knobs.KNOBS[name].check(v, name) for v in c]
        self.names = list(space)
        self.aliases = {k: dict(v) for k, v in (aliases or {}).items()}
        # every knob's spec value: a config is keyed on all of them, not only its own
        self.base: Config = {**distill.config(), **{k.name: getattr(train, k.name) for k in knobs.section("train")}}
        for name, values in self.choices.items():
            if classes is not None and classes < knobs.KNOBS[name].min_classes:
                self.aliases[name] = {v: self.base[name] for v in values if v != self.base[name]}
        self.defaults: Config = {}
        for name in self.names:
            spec_value = self.base[name]
            if name in self.choices:
                choices = self.choices[name]
                self.defaults[name] = spec_value if spec_value in choices else choices[0]
            else:
                self.defaults[name] = spec_value
        for name, value in (prefer or {}).items():
            if name in self.choices and value in self.choices[name]:
                self.defaults[name] = value
            elif name in self.ranges and self.ranges[name].low <= value <= self.ranges[name].high:  # type: ignore[operator]
                self.defaults[name] = value

    def key(self, config: Mapping[str, Value]) -> str:
        """The config's :func:`kdsearch.knobs.key`, knobs it leaves out at their spec values, and
        aliased values (this cell's) as the value they train the same as, then the objective's
        identities (:func:`kdsearch.knobs.trains_as`: MSE's temperature cancelling)."""
        full = {**self.base, **config}
        for name, same in self.aliases.items():
            if full.get(name) in same:
                full[name] = same[full[name]]
        return knobs.key(knobs.trains_as(full))

    def raw_key(self, config: Mapping[str, Value]) -> str:
        """The config's own key, aliases not applied: two configs that train alike differ here."""
        return knobs.key({**self.base, **config})

    def grid(self) -> Iterator[Config]:
        """Every combination, each behaviour once (see :func:`kdsearch.knobs.key`)."""
        for config, _ in self.grid_with_duplicates():
            yield config

    def grid_with_duplicates(self) -> Iterator[tuple[Config, list[Config]]]:
        """Each behaviour once, with the other configs of the grid that train the same because of an
        alias or an identity of the objective (not those a knob's ``applies`` makes equal: their
        rows would be one config twice)."""
        if self.ranges:
            raise SpecError(f"search.space: grid needs choices, not ranges ({', '.join(self.ranges)})")
        first: dict[str, Config] = {}
        same: dict[str, list[Config]] = {}
        raw_seen: dict[str, set[str]] = {}  # the raw keys already standing for each behaviour
        combos = (dict(zip(self.names, combo)) for combo in itertools.product(*(self.choices[n] for n in self.names)))
        for config in (dict(c) for c in self.explicit) if self.explicit else combos:
            k = self.key(config)
            if k not in first:  # the config that runs holds the value an alias names (the spec's own)
                first[k] = {n: self.aliases.get(n, {}).get(v, v) for n, v in config.items()}
                same[k] = []
                raw_seen[k] = {self.raw_key(first[k])}
            raw = self.raw_key(config)
            if raw not in raw_seen[k]:
                raw_seen[k].add(raw)
                same[k].append(config)
        for k, config in first.items():
            yield config, same[k]


    def optuna_distributions(self) -> dict[str, Any]:
        import optuna

        out: dict[str, Any] = {}
        for name in self.names:
            if name in self.ranges:
                r = self.ranges[name]
                if knobs.KNOBS[name].kind is int:
                    out[name] = optuna.distributions.IntDistribution(int(r.low), int(r.high), log=r.log, step=int(r.step or 1))
                else:
                    out[name] = optuna.distributions.FloatDistribution(r.low, r.high, log=r.log, step=r.step)
            else:
                out[name] = optuna.distributions.CategoricalDistribution(self.choices[name])
        return out


def teacher_aliases(picked: Mapping[str, Mapping[str, Any]], default: Value) -> dict[str, dict[Value, Value]]:
    """``{"teacher": {...}}`` when selections of a dataset pick the same checkpoint (on BBC News and
    WNUT-16 t_hs and t_ll are one): each trains as the spec's own choice where it is among them."""
    by_name: dict[str, list[str]] = {}
    for selection, record in picked.items():
        if ":" not in selection:  # an ensemble is its own signal
            by_name.setdefault(str(record["name"]), []).append(selection)
    out: dict[Value, Value] = {}
    for group in by_name.values():
        if len(group) > 1:
            canonical = default if default in group else sorted(group)[0]
            out.update({s: canonical for s in group if s != canonical})
    return {"teacher": out} if out else {}


class GridOrder:
    """The full grid's configs, in the order its live search runs them, as a config-level searcher
    (a raced grid and the replays ask configs of it; the grid of an unraced search is fixed points)."""

    def __init__(self, ctx: Any) -> None:
        self.configs = list(ctx.space.grid())
        self.given = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        from ray.tune.search import Searcher

        if self.given >= len(self.configs):
            return Searcher.FINISHED
        self.given += 1
        return self.configs[self.given - 1]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        pass  # the grid asks every config whatever they score

    def get_state(self) -> dict[str, Any]:
        return {"given": self.given}

    def set_state(self, state: dict[str, Any]) -> None:
        self.given = int(state["given"])
