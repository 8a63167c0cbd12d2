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
from kdsearch.spec import RangeSpec


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
    """

    def __init__(self, space: Mapping[str, list[Value] | RangeSpec], distill: Any, train: Any,
                 prefer: Mapping[str, Value] | None = None) -> None:
        self.ranges: dict[str, RangeSpec] = {}
        self.choices: dict[str, list[Value]] = {}
        for name, c in space.items():
            if isinstance(c, RangeSpec):
                self.ranges[name] = c
            else:
                self.choices[name] = [knobs.KNOBS[name].check(v, name) for v in c]
        self.names = list(space)
        # every knob's spec value: a config is keyed on all of them, not only its own
        self.base: Config = {**distill.config(), **{k.name: getattr(train, k.name) for k in knobs.section("train")}}
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
        """The config's :func:`kdsearch.knobs.key`, knobs it leaves out at their spec values."""
        return knobs.key({**self.base, **config})

    def grid(self) -> Iterator[Config]:
        """Every combination, each behaviour once (see :func:`kdsearch.knobs.key`)."""
        if self.ranges:
            raise SpecError(f"search.space: grid needs choices, not ranges ({', '.join(self.ranges)})")
        seen: set[str] = set()
        for combo in itertools.product(*(self.choices[n] for n in self.names)):
            config = dict(zip(self.names, combo))
            k = self.key(config)
            if k not in seen:
                seen.add(k)
                yield config

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
