"""The kdsearch spec: a YAML file loaded with ``yaml.safe_load`` into typed dataclasses.

Every field is checked on load; a bad field raises :class:`SpecError` naming the field
by its dotted path and saying why, so the CLI can print one line and exit non-zero.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from kdsearch.errors import SpecError

TASKS = ("classification", "pair_classification", "token_classification")


@dataclass
class TokenizerSpec:
    """``wordpiece`` trains a tokenizer on the train split; ``pretrained`` loads ``name``."""

    kind: Literal["wordpiece", "pretrained"] = "wordpiece"
    name: str | None = None
    vocab_size: int = 8000
    lowercase: bool = True

    def check(self, where: str) -> None:
        if self.kind == "pretrained" and not self.name:
            raise SpecError(f"{where}.name: a pretrained tokenizer needs a folder or hub name")
        if self.vocab_size < 100:
            raise SpecError(f"{where}.vocab_size: must be at least 100, got {self.vocab_size}")


@dataclass
class DataSpec:
    """Where the data comes from and how it is read.

    ``dataset`` is a built-in name (``rotten_tomatoes``, ``bbc_news``, ``wnut16``), a
    local folder holding ``train``/``validation``/``test`` files (csv, jsonl, parquet),
    or a Hugging Face dataset name. ``files`` names split files explicitly instead.
    """

    dataset: str = "rotten_tomatoes"
    task: str | None = None
    files: dict[str, str] | None = None
    hub_config: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    max_length: int = 128
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    max_train_examples: int | None = None
    max_eval_examples: int | None = None

    def check(self, where: str) -> None:
        if self.task is not None and self.task not in TASKS:
            raise SpecError(f"{where}.task: unknown task {self.task!r} (known: {', '.join(TASKS)})")
        if self.max_length <= 0:
            raise SpecError(f"{where}.max_length: must be > 0, got {self.max_length}")
        known_cols = {"text", "text_pair", "label", "tokens", "tags"}
        for k in self.columns:
            if k not in known_cols:
                raise SpecError(
                    f"{where}.columns: unknown role {k!r} (known: {', '.join(sorted(known_cols))})"
                )
        for name in ("max_train_examples", "max_eval_examples"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise SpecError(f"{where}.{name}: must be > 0, got {v}")
        self.tokenizer.check(f"{where}.tokenizer")


@dataclass
class OptimSpec:
    """How a model is trained: AdamW with linear warmup and decay."""

    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01

    def check(self, where: str) -> None:
        if self.epochs <= 0:
            raise SpecError(f"{where}.epochs: must be > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise SpecError(f"{where}.max_steps: must be > 0, got {self.max_steps}")
        if self.batch_size <= 0:
            raise SpecError(f"{where}.batch_size: must be > 0, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise SpecError(f"{where}.learning_rate: must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise SpecError(f"{where}.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise SpecError(f"{where}.weight_decay: must be >= 0, got {self.weight_decay}")


@dataclass
class TeacherSpec:
    """The teacher pool: ``model`` trained once per seed, one checkpoint kept per epoch.

    ``register`` lists existing ``save_pretrained`` folders added to the pool as they are.
    """

    model: str = "l"
    seeds: list[int] = field(default_factory=lambda: [0])
    train: OptimSpec = field(default_factory=lambda: OptimSpec(epochs=4, learning_rate=5e-4))
    register: list[str] = field(default_factory=list)

    def check(self, where: str) -> None:
        _check_model(self.model, f"{where}.model")
        if not self.seeds and not self.register:
            raise SpecError(f"{where}: needs at least one seed to train or one folder to register")
        self.train.check(f"{where}.train")


@dataclass
class DistillSpec:
    """One distillation config: ``L = (1-alpha)*CE(y, p_s) + alpha*D(z_t/tau_t, z_s/tau_s)``.

    ``tau_s`` may be the string ``same`` (equal to ``tau_t``). ``tau2_scaling`` multiplies D
    by ``tau_s**2`` (Hinton et al.'s ``tau**2`` when ``tau_s == tau_t``), on by default so
    that the distillation gradient keeps its size as the temperature grows.

    Distiller's knobs (He et al. 2021) add ``inter_weight * I``, an intermediate term over
    student layers mapped to teacher layers (``inter_map``: none, skip, last), on their
    ``inter_features`` (hidden: pooled hidden states compared by ``inter_loss``, mse, cosine
    or mi_alpha with its ``mi_alpha``; attention: KL between attention maps; both: the
    sum), and augmentation of the distillation batches (``augment``: none, swap, delete,
    mask, mixup; each example is augmented with probability ``augment_p``).
    """

    teacher: str = "t_ll"
    alpha: float = 0.5
    loss: str = "ce"
    tau_t: float = 1.0
    tau_s: float | str = 1.0
    tau2_scaling: bool = True
    inter_map: str = "none"
    inter_features: str = "hidden"
    inter_loss: str = "mse"
    inter_weight: float = 1.0
    mi_alpha: float = 0.5
    augment: str = "none"
    augment_p: float = 0.5

    def check(self, where: str) -> None:
        from kdsearch.distill.augment import AUGMENTATIONS
        from kdsearch.distill.intermediate import FEATURE_LOSSES, INTER_FEATURES, LAYER_MAPS
        from kdsearch.distill.losses import LOSSES

        if self.inter_map not in LAYER_MAPS:
            raise SpecError(f"{where}.inter_map: unknown layer mapping {self.inter_map!r} (known: {', '.join(LAYER_MAPS)})")
        if self.inter_features not in INTER_FEATURES:
            raise SpecError(
                f"{where}.inter_features: unknown features {self.inter_features!r} (known: {', '.join(INTER_FEATURES)})"
            )
        if self.inter_loss not in FEATURE_LOSSES:
            raise SpecError(f"{where}.inter_loss: unknown objective {self.inter_loss!r} (known: {', '.join(FEATURE_LOSSES)})")
        if not self.inter_weight >= 0:
            raise SpecError(f"{where}.inter_weight: must be >= 0, got {self.inter_weight}")
        if not 0.0 <= self.mi_alpha <= 1.0:
            raise SpecError(f"{where}.mi_alpha: must be in [0, 1], got {self.mi_alpha}")
        if self.augment not in AUGMENTATIONS:
            raise SpecError(f"{where}.augment: unknown augmentation {self.augment!r} (known: {', '.join(AUGMENTATIONS)})")
        if not 0.0 <= self.augment_p <= 1.0:
            raise SpecError(f"{where}.augment_p: must be in [0, 1], got {self.augment_p}")

        if not 0.0 <= self.alpha <= 1.0:
            raise SpecError(f"{where}.alpha: must be in [0, 1], got {self.alpha}")
        if self.loss not in LOSSES:
            raise SpecError(f"{where}.loss: unknown loss {self.loss!r} (known: {', '.join(LOSSES)})")
        if not self.tau_t > 0:
            raise SpecError(f"{where}.tau_t: must be > 0, got {self.tau_t}")
        if isinstance(self.tau_s, str):
            if self.tau_s != "same":
                raise SpecError(f"{where}.tau_s: must be a number > 0 or 'same', got {self.tau_s!r}")
        elif not self.tau_s > 0:
            raise SpecError(f"{where}.tau_s: must be > 0, got {self.tau_s}")

    @property
    def student_temperature(self) -> float:
        return float(self.tau_t if self.tau_s == "same" else self.tau_s)

    @property
    def intermediate(self) -> bool:
        """Whether an intermediate-representation term is in the objective."""
        return self.inter_map != "none" and self.inter_weight > 0

    @property
    def hidden_term(self) -> bool:
        """Whether pooled hidden states are compared (and the teacher's must be cached)."""
        return self.intermediate and self.inter_features != "attention"

    @property
    def attention_term(self) -> bool:
        """Whether attention maps are compared (the teacher then runs in the trial)."""
        return self.intermediate and self.inter_features != "hidden"

    def describe_intermediate(self) -> str:
        """The intermediate term in words, e.g. ``1.0 x (mse on hidden states), layers mapped by skip``."""
        if not self.intermediate:
            return "not distilled"
        parts = []
        if self.hidden_term:
            alpha = f" (alpha {self.mi_alpha})" if self.inter_loss == "mi_alpha" else ""
            parts.append(f"{self.inter_loss}{alpha} on hidden states")
        if self.attention_term:
            parts.append("KL on attention maps")
        return f"{self.inter_weight} x ({' + '.join(parts)}), layers mapped by {self.inter_map}"

    @property
    def augmenting(self) -> bool:
        return self.augment != "none" and self.augment_p > 0

    @property
    def live_teacher(self) -> bool:
        """Whether the teacher must run in the trial, so its model must ship with it."""
        return self.augmenting or self.attention_term


@dataclass
class StudentSpec:
    """The student model (a size preset, a local folder or a hub name) and its training."""

    model: str = "xs"
    train: OptimSpec = field(default_factory=OptimSpec)
    seed: int = 0

    def check(self, where: str) -> None:
        _check_model(self.model, f"{where}.model")
        self.train.check(f"{where}.train")


def _check_model(name: str, where: str) -> None:
    from kdsearch.models import check_model_name

    problem = check_model_name(name)
    if problem:
        raise SpecError(f"{where}: {problem}")


METHODS = ("greedy", "grid", "optuna", "random")


@dataclass
class RangeSpec:
    """A numeric range for Optuna and random search (greedy and grid need choices)."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def check(self, where: str) -> None:
        if not self.low < self.high:
            raise SpecError(f"{where}: low must be < high, got {self.low} and {self.high}")
        if self.log and self.low <= 0:
            raise SpecError(f"{where}: a log range needs low > 0, got {self.low}")


@dataclass
class ResourcesSpec:
    """What one trial asks Ray for; fractions of a GPU let small students share one."""

    cpu: float = 1.0
    gpu: float = 0.0

    def check(self, where: str) -> None:
        if not self.cpu > 0:
            raise SpecError(f"{where}.cpu: must be > 0, got {self.cpu}")
        if self.gpu < 0:
            raise SpecError(f"{where}.gpu: must be >= 0, got {self.gpu}")
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise SpecError(f"{where}.gpu: more than one GPU must be a whole number, got {self.gpu}")


@dataclass
class AshaSpec:
    """ASHA early stopping on epochs (Optuna and random only)."""

    grace_period: int = 1
    reduction_factor: float = 2.0

    def check(self, where: str) -> None:
        if self.grace_period < 1:
            raise SpecError(f"{where}.grace_period: must be >= 1, got {self.grace_period}")
        if not self.reduction_factor > 1:
            raise SpecError(f"{where}.reduction_factor: must be > 1, got {self.reduction_factor}")


@dataclass
class SearchSpec:
    """A search: which cells, which knobs, which method, how much, where results go.

    A cell is one (dataset, student size) pair, searched on its own. ``datasets`` entries
    are a dataset name or a mapping of ``data`` fields that override the top-level
    ``data`` section; empty means ``[data]``. ``students`` empty means
    ``[student.model]``. ``space`` maps each knob, in greedy order, to its choices (or,
    for Optuna and random, a range). ``budget`` is configs per cell for Optuna and
    random (default: as many as greedy needs), a cap for greedy and grid.
    """

    method: Literal["greedy", "grid", "optuna", "random"] = "greedy"
    datasets: list[DataSpec] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    space: dict[str, Union[list[Union[float, str, bool]], RangeSpec]] = field(default_factory=dict)
    baseline: bool = True
    metric: str = "val_score"
    mode: Literal["max", "min"] = "max"
    budget: int | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent: int | None = None
    max_failures: int = 1
    storage: str = "results/searches"
    asha: AshaSpec | None = None
    search_seed: int = 0

    def check(self, where: str) -> None:
        from kdsearch.search.space import check_space

        for i, d in enumerate(self.datasets):
            d.check(f"{where}.datasets[{i}]")
        for i, m in enumerate(self.students):
            _check_model(m, f"{where}.students[{i}]")
        check_space(self.space, f"{where}.space", self.method)
        if self.metric != "val_score" and not self.metric.startswith("val_"):
            raise SpecError(f"{where}.metric: must be a validation metric (val_...), got {self.metric!r}")
        if self.budget is not None and self.budget < 1:
            raise SpecError(f"{where}.budget: must be >= 1 config per cell, got {self.budget}")
        if not self.seeds:
            raise SpecError(f"{where}.seeds: needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"{where}.seeds: seeds repeat: {self.seeds}")
        self.resources.check(f"{where}.resources")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise SpecError(f"{where}.max_concurrent: must be >= 1, got {self.max_concurrent}")
        if self.max_failures < 0:
            raise SpecError(f"{where}.max_failures: must be >= 0, got {self.max_failures}")
        if self.asha is not None:
            if self.method not in ("optuna", "random"):
                raise SpecError(f"{where}.asha: early stopping works with optuna or random, not {self.method}")
            self.asha.check(f"{where}.asha")
        if not self.storage:
            raise SpecError(f"{where}.storage: must be a path")


@dataclass
class Spec:
    """A whole spec. ``workdir`` holds caches, the teacher pool and outputs."""

    name: str = "kdsearch"
    data: DataSpec = field(default_factory=DataSpec)
    teachers: TeacherSpec = field(default_factory=TeacherSpec)
    student: StudentSpec = field(default_factory=StudentSpec)
    distill: DistillSpec = field(default_factory=DistillSpec)
    workdir: str = ".kdsearch"
    device: str = "auto"
    search: SearchSpec = field(default_factory=SearchSpec)

    @property
    def data_specs(self) -> list[DataSpec]:
        return self.search.datasets or [self.data]

    @property
    def student_models(self) -> list[str]:
        return self.search.students or [self.student.model]

    def check(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise SpecError(f"device: must be auto, cpu or cuda, got {self.device!r}")
        self.data.check("data")
        self.teachers.check("teachers")
        self.student.check("student")
        self.distill.check("distill")
        self.search.check("search")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to ``tp``, raising SpecError naming ``where`` on mismatch."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except SpecError as e:
                errors.append(e)
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise SpecError(f"{where}: expected {names}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise SpecError(f"{where}: must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-3 as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise SpecError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported spec type {tp!r} at {where}")


def from_dict(cls: type, raw: Any, where: str = "spec") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            prefix = "" if where == "spec" else f"{where}."
            raise SpecError(f"{prefix}{key}: unknown field (known: {', '.join(names)})")
    kwargs = {}
    for key, value in raw.items():
        path = key if where == "spec" else f"{where}.{key}"
        kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


def load_spec(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Spec:
    """Read, override (``a.b=value`` strings, values parsed as YAML) and validate a spec.

    Relative data and model paths are resolved against the spec file's folder, so a spec
    works from any current directory; ``workdir`` (or ``$KDSEARCH_WORKDIR``) against the
    current directory, where the user runs.
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{p}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: the spec must be a YAML mapping, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item)
    _merge_datasets(raw)
    spec = from_dict(Spec, raw)
    resolve_paths(spec, p.parent.resolve(), Path.cwd())
    spec.check()
    return spec


def _merge_datasets(raw: dict[str, Any]) -> None:
    """Each ``search.datasets`` entry (a name or a partial ``data`` mapping) over ``data``."""
    search = raw.get("search")
    if not isinstance(search, dict) or search.get("datasets") is None:
        return
    items = search["datasets"]
    if not isinstance(items, list):
        raise SpecError(f"search.datasets: expected a list, got {items!r}")
    base = raw.get("data") or {}
    if not isinstance(base, dict):
        raise SpecError(f"data: expected a mapping, got {base!r}")
    merged = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"dataset": item}
        if not isinstance(item, dict):
            raise SpecError(f"search.datasets[{i}]: expected a dataset name or a mapping, got {item!r}")
        entry = {k: v for k, v in base.items() if k not in ("dataset", "files", "columns", "task", "hub_config")}
        entry.update(item)
        merged.append(entry)
    search["datasets"] = merged


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override to a raw spec mapping."""
    if "=" not in item:
        raise SpecError(f"override {item!r}: expected dotted.key=value")
    key, _, text = item.partition("=")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"override {item!r}: {part} is not a mapping")
    try:
        node[parts[-1]] = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SpecError(f"override {item!r}: value is not valid YAML") from None


def _looks_local(s: str) -> bool:
    return s.startswith((".", "/", "~")) or os.sep in s and Path(s).exists()


def resolve_paths(spec: Spec, base: Path, cwd: Path) -> None:
    """Make local paths absolute: data and models against ``base``, workdir against ``cwd``."""

    def fix(s: str, against: Path = base) -> str:
        q = Path(s).expanduser()
        return str(q if q.is_absolute() else (against / q).resolve())

    spec.workdir = fix(os.environ.get("KDSEARCH_WORKDIR", spec.workdir), cwd)
    for data in [spec.data, *spec.search.datasets]:
        if _looks_local(data.dataset):
            data.dataset = fix(data.dataset)
        if data.files:
            data.files = {k: fix(v) for k, v in data.files.items()}
        if data.tokenizer.name and _looks_local(data.tokenizer.name):
            data.tokenizer.name = fix(data.tokenizer.name)
    for m in (spec.teachers, spec.student):
        if _looks_local(m.model):
            m.model = fix(m.model)
    spec.search.students = [fix(m) if _looks_local(m) else m for m in spec.search.students]
    # storage is where every node writes: always absolute, against where the user runs
    if "://" not in spec.search.storage:
        spec.search.storage = fix(os.environ.get("KDSEARCH_STORAGE", spec.search.storage), cwd)
    spec.teachers.register = [fix(r) for r in spec.teachers.register]


def dump_spec(spec: Spec) -> str:
    """The spec as YAML, every default written out."""
    return yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False)
