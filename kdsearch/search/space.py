"""The knobs a search varies, their choices, and how a choice becomes a trial config.

A knob is a field of :class:`~kdsearch.spec.DistillSpec` or of the student's
:class:`~kdsearch.spec.OptimSpec`. Configs are plain ``{knob: value}`` dicts; ``key``
gives the canonical form two configs share when they train the same student (``tau_s:
same`` with ``tau_t: 1`` is ``tau_s: 1``), so nothing is run twice.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kdsearch.errors import SpecError
from kdsearch.spec import DistillSpec, OptimSpec, RangeSpec

Value = float | str | bool
Config = dict[str, Value]

BASELINE_STAGE = "baseline"  # the stage of the no-distillation trial of every cell
BASELINE: Config = {"alpha": 0.0, "inter_map": "none", "augment": "none"}  # plain fine-tuning


@dataclass(frozen=True)
class Knob:
    """What a knob may hold and where it goes in the trial config."""

    name: str
    section: str  # "distill" or "train"
    kind: type
    help: str


KNOBS: dict[str, Knob] = {
    k.name: k
    for k in (
        Knob("teacher", "distill", str, "t_hs, t_ll or a checkpoint name"),
        Knob("loss", "distill", str, "a registered distance: ce, kl, mse"),
        Knob("alpha", "distill", float, "weight of the distillation term, in [0, 1]"),
        Knob("tau_t", "distill", float, "teacher temperature, > 0"),
        Knob("tau_s", "distill", float, "student temperature, > 0, or 'same' (= tau_t)"),
        Knob("tau2_scaling", "distill", bool, "multiply D by tau_s**2"),
        Knob("inter_map", "distill", str, "student-to-teacher layer mapping: none, skip, last"),
        Knob("inter_features", "distill", str, "what mapped layers compare: hidden, attention, both"),
        Knob("inter_loss", "distill", str, "objective on hidden states: mse, cosine, mi_alpha"),
        Knob("inter_weight", "distill", float, "weight of the intermediate term, >= 0"),
        Knob("mi_alpha", "distill", float, "alpha of the mi_alpha bound, in [0, 1] (1: InfoNCE, 0: TUBA)"),
        Knob("augment", "distill", str, "augmentation of the distillation batches: none, swap, delete, mask, mixup"),
        Knob("augment_p", "distill", float, "probability that an example is augmented, in [0, 1]"),
        Knob("learning_rate", "train", float, "student learning rate, > 0"),
        Knob("epochs", "train", int, "student epochs, >= 1"),
        Knob("batch_size", "train", int, "student batch size, >= 1"),
        Knob("weight_decay", "train", float, "AdamW weight decay, >= 0"),
    )
}


def _check_value(name: str, value: Value, where: str) -> Value:
    """Check one choice of knob ``name``; return it in its canonical type."""
    from kdsearch.distill.augment import AUGMENTATIONS
    from kdsearch.distill.intermediate import FEATURE_LOSSES, INTER_FEATURES, LAYER_MAPS
    from kdsearch.distill.losses import LOSSES

    registries = {
        "loss": LOSSES,
        "inter_map": LAYER_MAPS,
        "inter_features": INTER_FEATURES,
        "inter_loss": FEATURE_LOSSES,
        "augment": AUGMENTATIONS,
    }

    knob = KNOBS[name]
    if name == "tau_s" and value == "same":
        return value
    if knob.kind is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if knob.kind is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a name, got {value!r}")
        known = registries.get(name)
        if known is not None and value not in known:
            raise SpecError(f"{where}: unknown {name} {value!r} (known: {', '.join(known)})")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise SpecError(f"{where}: must be finite, got {value!r}")
    if name in ("alpha", "mi_alpha", "augment_p") and not 0.0 <= v <= 1.0:
        raise SpecError(f"{where}: {name} must be in [0, 1], got {value}")
    if name in ("tau_t", "tau_s", "learning_rate") and not v > 0:
        raise SpecError(f"{where}: {name} must be > 0, got {value}")
    if name in ("weight_decay", "inter_weight") and v < 0:
        raise SpecError(f"{where}: {name} must be >= 0, got {value}")
    if knob.kind is int:
        if v != int(v) or v < 1:
            raise SpecError(f"{where}: {name} must be a whole number >= 1, got {value}")
        return int(v)
    return v


def check_space(space: Mapping[str, list[Value] | RangeSpec], where: str, method: str) -> None:
    """Validate a spec's ``search.space``; raises SpecError naming the bad knob."""
    for name, choices in space.items():
        at = f"{where}.{name}"
        if name not in KNOBS:
            raise SpecError(f"{at}: unknown knob (known: {', '.join(KNOBS)})")
        if isinstance(choices, RangeSpec):
            if method not in ("optuna", "random"):
                raise SpecError(f"{at}: a range works with optuna or random; {method} needs a list of choices")
            if KNOBS[name].kind not in (float, int):
                raise SpecError(f"{at}: {name} takes choices, not a range")
            choices.check(at)
            _check_value(name, choices.low, f"{at}.low")
            _check_value(name, choices.high, f"{at}.high")
            continue
        if not choices:
            raise SpecError(f"{at}: needs at least one choice")
        canon = [_check_value(name, c, f"{at}[{i}]") for i, c in enumerate(choices)]
        if len(set(map(repr, canon))) != len(canon):
            raise SpecError(f"{at}: choices repeat: {choices}")


def default_of(name: str, distill: DistillSpec, train: OptimSpec) -> Value:
    return getattr(distill if KNOBS[name].section == "distill" else train, name)


class Space:
    """An ordered set of knobs with their choices and defaults.

    The default of a knob is the spec's own value when it is among the choices, else the
    first choice (or the ``prefer``-red value, a recommendation): greedy holds later knobs
    at their defaults and Optuna tries them first.
    """

    def __init__(
        self,
        space: Mapping[str, list[Value] | RangeSpec],
        distill: DistillSpec,
        train: OptimSpec,
        prefer: Mapping[str, Value] | None = None,
    ) -> None:
        self.ranges: dict[str, RangeSpec] = {}
        self.choices: dict[str, list[Value]] = {}
        for name, c in space.items():
            if isinstance(c, RangeSpec):
                self.ranges[name] = c
            else:
                self.choices[name] = [_check_value(name, v, name) for v in c]
        self.names = list(space)
        # every knob's spec value: a config is keyed on all of them, not only its own
        self.base: Config = {n: default_of(n, distill, train) for n in KNOBS}
        self.defaults: Config = {}
        for name in self.names:
            spec_value = default_of(name, distill, train)
            if name in self.choices:
                choices = self.choices[name]
                self.defaults[name] = spec_value if spec_value in choices else choices[0]
            else:
                self.defaults[name] = spec_value
        # a recommendation moves the starting point (greedy's held values, Optuna's first
        # trial) to its values, where the space allows them
        for name, value in (prefer or {}).items():
            if name in self.choices and value in self.choices[name]:
                self.defaults[name] = value
            elif name in self.ranges and self.ranges[name].low <= value <= self.ranges[name].high:  # type: ignore[operator]
                self.defaults[name] = value

    def key(self, config: Mapping[str, Value]) -> str:
        """The config's :func:`key`, knobs it leaves out at their spec values."""
        return key({**self.base, **config})

    def grid(self) -> Iterator[Config]:
        """Every combination, each behaviour once (see :func:`key`)."""
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
                if KNOBS[name].kind is int:
                    out[name] = optuna.distributions.IntDistribution(int(r.low), int(r.high), log=r.log, step=int(r.step or 1))
                else:
                    out[name] = optuna.distributions.FloatDistribution(r.low, r.high, log=r.log, step=r.step)
            else:
                out[name] = optuna.distributions.CategoricalDistribution(self.choices[name])
        return out


def effective(config: Mapping[str, Value]) -> dict[str, Value]:
    """The config as the trainer sees it: ``tau_s: same`` resolved, values canonical."""
    out: dict[str, Value] = {}
    for name, v in config.items():
        if name not in KNOBS:
            continue
        out[name] = _check_value(name, v, name)
    if out.get("tau_s") == "same":
        out["tau_s"] = float(out.get("tau_t", 1.0))
    # knobs that change nothing where they do not apply (conditional knobs) drop out
    output_kd = out.get("alpha") != 0.0
    inter = out.get("inter_map", "none") != "none" and out.get("inter_weight", 1.0) != 0.0
    if not output_kd:
        for name in ("loss", "tau_t", "tau_s", "tau2_scaling"):
            out.pop(name, None)
    if not output_kd and not inter:
        out.pop("teacher", None)
    if not inter:
        for name in ("inter_map", "inter_features", "inter_loss", "inter_weight", "mi_alpha"):
            out.pop(name, None)
    elif out.get("inter_features", "hidden") == "attention":
        out.pop("inter_loss", None)
        out.pop("mi_alpha", None)
    elif out.get("inter_loss", "mse") != "mi_alpha":
        out.pop("mi_alpha", None)
    if out.get("augment", "none") == "none" or out.get("augment_p", 0.5) == 0.0:
        out.pop("augment", None)
        out.pop("augment_p", None)
    return out


def key(config: Mapping[str, Value]) -> str:
    """Canonical string of the behaviour a config trains: equal keys, equal students."""
    return json.dumps(effective(config), sort_keys=True)


def apply(config: Mapping[str, Value], distill: DistillSpec, train: OptimSpec) -> tuple[DistillSpec, OptimSpec]:
    """The spec's distill and train sections with the config's knobs set."""
    d_changes = {n: v for n, v in config.items() if n in KNOBS and KNOBS[n].section == "distill"}
    t_changes = {n: v for n, v in config.items() if n in KNOBS and KNOBS[n].section == "train"}
    for n in ("epochs", "batch_size"):
        if n in t_changes:
            t_changes[n] = int(t_changes[n])
    return dataclasses.replace(distill, **d_changes), dataclasses.replace(train, **t_changes)
