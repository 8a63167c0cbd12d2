"""The knobs of a distillation trial: one table, read by everything that needs to know one.

A knob is one field of the ``distill`` section or of the student's ``train`` section that a
search may vary. Its entry says what it holds and which values are valid, its default, when
it changes what a trial trains (``applies``: conditional knobs drop out of a config's key
where they change nothing, so equal behaviours are run once), its column type in
``trials.parquet``, and whether members of one fused population may hold different values
of it (``fusable``: same shapes and optimiser structure).

Readers: ``kdsearch.spec`` builds ``DistillSpec`` and the knob fields of ``OptimSpec`` from
the table and checks them with it; ``kdsearch.search.space`` checks choices and keys configs;
the result recorder types its columns; reports and the model card list knobs in table order.
Adding a knob touches this table, the code that uses its value, and a test.

This module imports nothing of kdsearch but its errors: it is the bottom of the import graph.
Registries (losses, layer maps, augmentations) are named as ``module:attribute`` and looked
up only when a value is checked, since they live beside torch code; within
:func:`names_as_recorded` (a reader of a stored spec) not at all.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from kdsearch.errors import SpecError

Value = float | int | str | bool
Config = dict[str, Value]
Column = Literal["string", "float64", "int64", "bool"]

SAME = "same"  # tau_s: the student's temperature equals the teacher's
ENSEMBLE = "ensemble"  # teacher: the mean logits of the pool's ensemble_k lowest-loss checkpoints


# A stored spec was checked against the registries when its search started. A reader of
# results takes its names as recorded: looking them up imports the torch modules that register
# them (about half of every `kdsearch results` call), and a name since retired still reads.
_LOOK_UP_NAMES: ContextVar[bool] = ContextVar("kdsearch_look_up_names", default=True)


@contextmanager
def names_as_recorded() -> Iterator[None]:
    """Within: a registry knob's value is checked for its type, not looked up in its registry."""
    token = _LOOK_UP_NAMES.set(False)
    try:
        yield
    finally:
        _LOOK_UP_NAMES.reset(token)


@dataclass(frozen=True)
class Range:
    """Valid numbers: ``low`` (excluded when ``low_open``) up to ``high`` (both optional)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def problem(self, v: float) -> str | None:
        if self.low is not None and self.high is not None:
            return None if self.low <= v <= self.high else f"must be in [{self.low:g}, {self.high:g}]"
        if self.low is not None:
            ok = v > self.low if self.low_open else v >= self.low
            return None if ok else f"must be {'>' if self.low_open else '>='} {self.low:g}"
        return None


@dataclass(frozen=True)
class Knob:
    """One knob. ``applies(config)`` reads a full config (missing knobs at their defaults)."""

    name: str
    section: Literal["distill", "train"]
    kind: type
    default: Value
    help: str
    range: Range | None = None
    registry: str | None = None  # "module:ATTRIBUTE", a mapping or tuple of valid names
    words: tuple[str, ...] = ()  # strings a numeric knob also takes (tau_s: same)
    applies: Callable[[Mapping[str, Value]], bool] = lambda c: True
    column: Column = "float64"
    fusable: bool = True
    since: int = 1  # the results format that first recorded it (older searches lack its column)
    min_classes: int = 0  # below this many classes it changes nothing (DIST's inter-class term on a binary task)

    def names(self) -> tuple[str, ...]:
        """The valid names of a registry knob (imported on first use)."""
        if self.registry is None:
            return ()
        module, _, attr = self.registry.partition(":")
        return tuple(getattr(importlib.import_module(module), attr))

    def check(self, value: Any, where: str) -> Value:
        """``value`` in the knob's canonical type; SpecError naming ``where`` when invalid."""
        if isinstance(value, str) and value in self.words:
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise SpecError(f"{where}: expected true or false, got {value!r}")
            return value
        if self.kind is str:
            if not isinstance(value, str) or not value:
                raise SpecError(f"{where}: expected a name, got {value!r}")
            known = self.names() if _LOOK_UP_NAMES.get() else ()
            if known and value not in known:
                raise SpecError(f"{where}: unknown {self.name} {value!r} (known: {', '.join(known)})")
            return value
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-3 as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            words = f" or {' or '.join(repr(w) for w in self.words)}" if self.words else ""
            raise SpecError(f"{where}: expected a number{words}, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise SpecError(f"{where}: must be finite, got {value!r}")
        if self.kind is int and v != int(v):
            raise SpecError(f"{where}: {self.name} must be a whole number, got {value}")
        problem = self.range.problem(v) if self.range else None
        if problem:
            raise SpecError(f"{where}: {self.name} {problem}, got {value}")
        return int(v) if self.kind is int else v


def _get(c: Mapping[str, Value], name: str) -> Value:
    return c.get(name, KNOBS[name].default)


# -- when a knob changes what trains ---------------------------------------------------------
def output_kd(c: Mapping[str, Value]) -> bool:
    """The output-level term: the teacher's logits are distilled (alpha > 0)."""
    return float(_get(c, "alpha")) != 0.0


def intermediate(c: Mapping[str, Value]) -> bool:
    """An intermediate-representation term is in the objective."""
    return _get(c, "inter_map") != "none" and float(_get(c, "inter_weight")) != 0.0


def hidden_term(c: Mapping[str, Value]) -> bool:
    """Pooled hidden states are compared (the teacher's are cached)."""
    return intermediate(c) and _get(c, "inter_features") != "attention"


def attention_term(c: Mapping[str, Value]) -> bool:
    """Attention maps are compared (the teacher then runs in the trial)."""
    return intermediate(c) and _get(c, "inter_features") != "hidden"


def augmenting(c: Mapping[str, Value]) -> bool:
    return _get(c, "augment") != "none" and float(_get(c, "augment_p")) > 0.0


def uses_teacher(c: Mapping[str, Value]) -> bool:
    return output_kd(c) or intermediate(c)


def live_teacher(c: Mapping[str, Value]) -> bool:
    """The teacher must run inside the trial (augmented inputs, attention maps)."""
    return augmenting(c) or attention_term(c)


_KNOBS = (
    Knob("teacher", "distill", str, "t_ll", "t_hs, t_ll, ensemble, or a checkpoint name", applies=uses_teacher,
         column="string"),
    Knob("ensemble_k", "distill", int, 3, "teacher: ensemble averages the logits of the pool's k lowest-loss checkpoints",
         Range(1.0), applies=lambda c: uses_teacher(c) and _get(c, "teacher") == ENSEMBLE, column="int64", since=2),
    Knob("loss", "distill", str, "ce", "a registered distance: ce, kl, mse, dist", registry="kdsearch.distill.losses:LOSSES",
         applies=output_kd, column="string"),
    Knob("alpha", "distill", float, 0.5, "weight of the distillation term, in [0, 1]", Range(0.0, 1.0)),
    Knob("tau_t", "distill", float, 1.0, "teacher temperature, > 0", Range(0.0, low_open=True), applies=output_kd),
    Knob("tau_s", "distill", float, 1.0, "student temperature, > 0, or 'same' (= tau_t)", Range(0.0, low_open=True),
         words=(SAME,), applies=output_kd),
    Knob("tau2_scaling", "distill", bool, True, "multiply D by tau_s**2", applies=output_kd, column="bool"),
    Knob("dist_beta", "distill", float, 1.0, "DIST: weight of the inter-class relation (per example, across classes), >= 0",
         Range(0.0), applies=lambda c: output_kd(c) and _get(c, "loss") == "dist", since=4, min_classes=3),
    Knob("dist_gamma", "distill", float, 1.0, "DIST: weight of the intra-class relation (per class, across the batch), >= 0",
         Range(0.0), applies=lambda c: output_kd(c) and _get(c, "loss") == "dist", since=4),
    Knob("logit_std", "distill", bool, False, "z-score each example's logits, teacher and student each, before the temperature",
         applies=output_kd, column="bool", since=4),
    Knob("tau_schedule", "distill", str, "constant", "constant, or anneal: tau_t (and tau_s when same) moves linearly to 1 over training (falls from above 1, "
         "rises from below)",
         registry="kdsearch.distill.losses:TAU_SCHEDULES", applies=lambda c: output_kd(c) and float(_get(c, "tau_t")) != 1.0,
         column="string", since=4),
    Knob("inter_map", "distill", str, "none", "student-to-teacher layer mapping: none, skip, last, init (a cut student's own layers)",
         registry="kdsearch.distill.intermediate:LAYER_MAPS", applies=intermediate,
         column="string", fusable=False),
    Knob("inter_features", "distill", str, "hidden", "what mapped layers compare: hidden, attention, both",
         registry="kdsearch.distill.intermediate:INTER_FEATURES", applies=intermediate,
         column="string", fusable=False),
    Knob("inter_loss", "distill", str, "mse", "objective on hidden states: mse, cosine, mi_alpha",
         registry="kdsearch.distill.intermediate:FEATURE_LOSSES", applies=hidden_term,
         column="string", fusable=False),
    Knob("inter_weight", "distill", float, 1.0, "weight of the intermediate term, >= 0", Range(0.0),
         applies=intermediate, fusable=False),
    Knob("mi_alpha", "distill", float, 0.5, "alpha of the mi_alpha bound, in [0, 1] (1: InfoNCE, 0: TUBA)",
         Range(0.0, 1.0), applies=lambda c: hidden_term(c) and _get(c, "inter_loss") == "mi_alpha", fusable=False),
    Knob("augment", "distill", str, "none", "augmentation of the distillation batches: none, swap, delete, mask, mixup",
         registry="kdsearch.distill.augment:AUGMENTATIONS", applies=augmenting, column="string",
         fusable=False),
    Knob("augment_p", "distill", float, 0.5, "probability that an example is augmented, in [0, 1]", Range(0.0, 1.0),
         applies=augmenting, fusable=False),
    Knob("learning_rate", "train", float, 1e-3, "student learning rate, > 0", Range(0.0, low_open=True)),
    Knob("epochs", "train", int, 3, "student epochs, >= 1", Range(1.0), column="int64", fusable=False),
    Knob("batch_size", "train", int, 32, "student batch size, >= 1", Range(1.0), column="int64", fusable=False),
    Knob("weight_decay", "train", float, 0.01, "AdamW weight decay, >= 0", Range(0.0)),
)
KNOBS: dict[str, Knob] = {k.name: k for k in _KNOBS}

RESULTS_FORMAT = 4
"""What a search writes, recorded in its ``search.json`` (missing: 1). 1: ``tau_s`` as text
("1.0", "same"); 2: ``tau_s`` a number with ``tau_s_same``, a sealed ``spec.yaml``, every knob
of the table whose ``since`` is at most the format; 3: ``spec.yaml`` names fetched models by
name and holds paths relative to the search folder (readable on any machine), and
``search.json`` records each dataset's train statistics and when the search finished; 4: the
objectives since the paper (``dist_beta``, ``dist_gamma``, ``logit_std``, ``tau_schedule``).
Older rows trained without them: they read as their defaults (no DIST, no standardisation, a
constant temperature), and a key names such a knob only off its default."""
PORTABLE_FORMAT = 3  # the first format whose spec.yaml reads the same on every machine

PAPER: Config = {"teacher": "t_ll", "loss": "ce", "tau_s": 1.0}
"""Sultan et al. (2024)'s recommendation: the lowest-loss teacher checkpoint, the CE distance and a
student temperature of 1; near-best almost everywhere in their study. kdsearch judges a best
config against it (at the alpha and tau_t best for it)."""

BASELINE_STAGE = "baseline"  # the stage of the no-distillation trial of every cell
BASELINE: Config = {"alpha": 0.0, "inter_map": "none", "augment": "none"}  # plain fine-tuning


def teacher_key(config: Mapping[str, Value]) -> str:
    """Which teacher signal a config reads: its selection, or ``ensemble:k``."""
    teacher = str(_get(config, "teacher"))
    return f"{ENSEMBLE}:{int(_get(config, 'ensemble_k'))}" if teacher == ENSEMBLE else teacher


def from_row(row: Mapping[str, Any]) -> Config:
    """The config a trial row trained: its knob columns, ``tau_s`` written back as ``same``
    where it followed tau_t (rows store the number beside ``tau_s_same``)."""
    values = {k: row[k] for k in KNOBS if k in row and row[k] is not None and row[k] == row[k]}
    same = row.get("tau_s_same")
    if same is not None and same == same and bool(same):
        values["tau_s"] = SAME
    return values


def section(name: Literal["distill", "train"]) -> list[Knob]:
    return [k for k in _KNOBS if k.section == name]


def resolve(config: Mapping[str, Any]) -> Config:
    """The knobs of ``config`` in canonical types, ``tau_s: same`` replaced by tau_t's value.

    Every config resolved here was checked where it came in (a spec, a sampler's space, a
    recorded row), so names are taken as they are: a reader of rows imports no torch."""
    with names_as_recorded():
        out: Config = {name: KNOBS[name].check(v, name) for name, v in config.items() if name in KNOBS}
    if out.get("tau_s") == SAME:
        out["tau_s"] = float(out.get("tau_t", KNOBS["tau_t"].default))
    return out


def effective(config: Mapping[str, Any]) -> Config:
    """The knobs of ``config`` that change what it trains (see ``Knob.applies``), resolved."""
    out = resolve(config)
    return {name: v for name, v in out.items() if KNOBS[name].applies(out)}


LATER = 4  # knobs recorded since this format are named in a key only off their default
LATER_DEFAULTS: Config = {k.name: k.default for k in _KNOBS if k.since >= LATER}  # the objectives since the paper, off


def key(config: Mapping[str, Any]) -> str:
    """Canonical string of the behaviour a config trains: equal keys, equal students.

    A knob added after the paper's is named only off its default, so a row of an older search
    and a new row of the same behaviour share a key."""
    out = {k: v for k, v in effective(config).items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}
    if out.get("tau_schedule") == "anneal" and "tau_s" in out and _get(config, "tau_s") == SAME:
        out["tau_s"] = SAME  # annealed, tau_s: same moves with tau_t; a fixed tau_s of tau_t's value stays put
    return json.dumps(out, sort_keys=True)


# -- configs that train one student under two names ------------------------------------------
@dataclass(frozen=True)
class SameTraining:
    """Configs for which ``when`` holds train the same student as with ``values`` set instead:
    an identity of the objective, not of this cell's data (those are a cell's aliases, as t_hs =
    t_ll on one checkpoint). A search runs such a config once and records the other name as a
    copy (``duplicate_of``), so a per-knob table still shows every choice."""
    why: str
    when: Callable[[Mapping[str, Value]], bool]
    values: Config


def _temperature_cancels(c: Mapping[str, Value]) -> bool:
    if not output_kd(c) or _get(c, "loss") != "mse" or not bool(_get(c, "tau2_scaling")):
        return False
    if _get(c, "tau_s") == SAME:  # follows tau_t at every step, annealed or not
        return True
    # an explicit tau_s stays put while an annealed tau_t moves: equal only when constant
    return float(_get(c, "tau_s")) == float(_get(c, "tau_t")) and _get(c, "tau_schedule") == "constant"


SAME_TRAINING: tuple[SameTraining, ...] = (
    SameTraining("MSE on logits with tau2_scaling and tau_s = tau_t is ((z_s - z_t) / tau)^2 * tau^2 = (z_s - z_t)^2: "
                 "every such tau_t trains as tau_t = tau_s = 1 (float rounding aside)",
                 _temperature_cancels, {"tau_t": 1.0, "tau_s": 1.0, "tau_schedule": "constant"}),
)


def trains_as(config: Mapping[str, Value]) -> Config:
    """The config ``config`` trains the same student as, by the rules of :data:`SAME_TRAINING`
    (itself when none holds). Keys of it are equal for configs that train one student."""
    out = dict(config)
    for rule in SAME_TRAINING:
        if rule.when(out):
            out.update(rule.values)
    return out
