"""The spec's schema: typed dataclasses, each field checked, a bad one named by its dotted path."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from kdsearch import knobs
from kdsearch.errors import SpecError
from kdsearch.search.methods import METHODS
from kdsearch.search.race import Race
from kdsearch.search.ranges import RangeSpec
from kdsearch.tasks import COLUMN_ROLES, TASKS

MAX_LENGTH = 8192  # tokens: beyond any BERT-style encoder kdsearch builds (its position table grows with it)
MAX_SEED = 2**32
MAX_MEMBERS = 1024  # students in one fused population
MAX_CONFIRM_SEEDS = 100  # confirmation seeds per config: past this a verdict is settled anyway


@dataclass
class TokenizerSpec:
    """``wordpiece`` trains a tokenizer on the train split; ``pretrained`` loads ``name``."""

    kind: Literal["wordpiece", "pretrained"] = "wordpiece"
    name: str | None = None
    vocab_size: int = 8000
    lowercase: bool = True

    def check(self, where: str) -> None:
        if self.kind == "pretrained" and not self.name:
            raise SpecError(f"{where}.name: a pretrained tokenizer needs a folder, a fetched model or a hub name")
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
    # extractive QA: how many tokens consecutive windows of a long context share (the HF
    # examples' doc_stride): an answer cut by one window is whole in the next. None: a third
    # of max_length, the examples' 128 of 384
    doc_stride: int | None = None
    # the teachers' sample of train, larger than the students' (max_train_examples), which it
    # holds (both are one seeded shuffle's first rows): a teacher fine-tuned once on more data
    # while each of a search's many students trains on what the budget allows. None: the same
    teacher_train_examples: int | None = None
    # this dataset's teacher learning rate, over teachers.train's: a pretrained teacher may need
    # another rate per dataset (MiniLM learns WNUT-16's entities at 2e-4 and nothing at 5e-5)
    teacher_learning_rate: float | None = None

    @property
    def stride(self) -> int:
        return self.max_length // 3 if self.doc_stride is None else self.doc_stride

    def for_teachers(self) -> DataSpec:
        """The data the teacher pool trains on."""
        if self.teacher_train_examples is None:
            return self
        return dataclasses.replace(self, max_train_examples=self.teacher_train_examples, teacher_train_examples=None)

    def check(self, where: str) -> None:
        if self.task is not None and self.task not in TASKS:
            raise SpecError(f"{where}.task: unknown task {self.task!r} (known: {', '.join(TASKS)})")
        if not 0 < self.max_length <= MAX_LENGTH:
            raise SpecError(f"{where}.max_length: must be in 1..{MAX_LENGTH} tokens, got {self.max_length}")
        for k in self.columns:
            if k not in COLUMN_ROLES:
                raise SpecError(f"{where}.columns: unknown role {k!r} (known: {', '.join(sorted(COLUMN_ROLES))})")
        if self.doc_stride is not None and not 0 <= self.doc_stride < self.max_length:
            raise SpecError(f"{where}.doc_stride: must be in 0..{self.max_length - 1} (below max_length), got {self.doc_stride}")
        for name in ("max_train_examples", "max_eval_examples", "teacher_train_examples"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise SpecError(f"{where}.{name}: must be > 0, got {v}")
        self.tokenizer.check(f"{where}.tokenizer")
        if self.teacher_learning_rate is not None and not self.teacher_learning_rate > 0:
            raise SpecError(f"{where}.teacher_learning_rate: must be > 0, got {self.teacher_learning_rate}")
        if self.teacher_train_examples is not None:
            if self.max_train_examples is None or self.teacher_train_examples <= self.max_train_examples:
                raise SpecError(f"{where}.teacher_train_examples: must be above max_train_examples "
                                f"({self.max_train_examples or 'unset: the students read all of train'}), got "
                                f"{self.teacher_train_examples}")
            if self.tokenizer.kind != "pretrained":
                raise SpecError(f"{where}.teacher_train_examples: needs a pretrained tokenizer (data.tokenizer.kind: "
                                "pretrained); one trained on the teachers' sample would not read the students' data alike")


def dataset_name(data: DataSpec) -> str:
    """The name a dataset goes by in cells and reports: its folder's or built-in name (a hub
    dataset's with its config), e.g. ``multiemo_en`` for ``../shared/datasets/multiemo_en``."""
    name = data.dataset.rstrip("/").split("/")[-1]
    return f"{name}-{data.hub_config}" if data.hub_config else name


def cell_id(data: DataSpec, student: str) -> str:
    """``dataset/student``, e.g. ``rotten_tomatoes/xs``: a cell is searched on its own
    (and read back: results name their cells so)."""
    return f"{dataset_name(data)}/{student.rstrip('/').split('/')[-1]}"


class _OptimChecks:
    """Checks of :class:`OptimSpec`: its knob fields by the knob table, the others here."""

    def check(self, where: str) -> None:
        for knob in knobs.section("train"):
            setattr(self, knob.name, knob.check(getattr(self, knob.name), f"{where}.{knob.name}"))
        if self.max_steps is not None and self.max_steps <= 0:  # type: ignore[attr-defined]
            raise SpecError(f"{where}.max_steps: must be > 0, got {self.max_steps}")  # type: ignore[attr-defined]
        if not 0 <= self.warmup_ratio < 1:  # type: ignore[attr-defined]
            raise SpecError(f"{where}.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")  # type: ignore[attr-defined]


def _knob_fields(section: str) -> list[tuple[str, Any, Any]]:
    """Dataclass fields of a section's knobs, typed and defaulted by the knob table."""
    out = []
    for k in knobs.section(section):  # type: ignore[arg-type]
        tp: Any = Union[k.kind, str] if k.words else k.kind
        out.append((k.name, tp, field(default=k.default)))
    return out


def _spec_class(name: str, fields: list[tuple[str, Any, Any]], base: type, doc: str) -> type:
    cls = dataclasses.make_dataclass(name, fields, bases=(base,), namespace={"__doc__": doc})
    cls.__module__ = __name__  # so instances pickle (trials get specs through the object store)
    return cls


# epochs, batch_size, learning_rate, weight_decay come from the knob table
OptimSpec = _spec_class(
    "OptimSpec",
    [*_knob_fields("train"), ("max_steps", Optional[int], field(default=None)), ("warmup_ratio", float, field(default=0.1))],
    _OptimChecks,
    """How a model is trained: AdamW with linear warmup and decay.

    ``epochs``, ``batch_size``, ``learning_rate`` and ``weight_decay`` are knobs (see
    :mod:`kdsearch.knobs`); ``max_steps`` caps the steps, ``warmup_ratio`` is the warm-up share.
    """,
)


@dataclass
class TeacherSpec:
    """The teacher pool: ``model`` trained once per seed, one checkpoint kept per epoch.

    ``register`` lists existing ``save_pretrained`` folders added to the pool as they are.
    """

    model: str = "l"
    seeds: list[int] = field(default_factory=lambda: [0])
    train: OptimSpec = field(default_factory=lambda: OptimSpec(epochs=4, learning_rate=5e-4))
    register: list[str] = field(default_factory=list)

    def for_data(self, data: DataSpec) -> TeacherSpec:
        """How the teachers of ``data`` train: its own learning rate, where it names one."""
        if data.teacher_learning_rate is None:
            return self
        return dataclasses.replace(self, train=dataclasses.replace(self.train, learning_rate=data.teacher_learning_rate))

    def check(self, where: str) -> None:
        _check_model(self.model, f"{where}.model")
        if not self.seeds and not self.register:
            raise SpecError(f"{where}: needs at least one seed to train or one folder to register")
        _check_seeds(self.seeds, f"{where}.seeds")
        self.train.check(f"{where}.train")


class _DistillMethods:
    """What a distillation config implies, all read off the knob table's predicates."""

    tau_s_same: bool

    def config(self) -> knobs.Config:
        """The knob values, ``tau_s`` as ``same`` where it follows ``tau_t``."""
        out = {k.name: getattr(self, k.name) for k in knobs.section("distill")}
        if self.tau_s_same:
            out["tau_s"] = knobs.SAME
        return out

    def check(self, where: str) -> None:
        for knob in knobs.section("distill"):
            setattr(self, knob.name, knob.check(getattr(self, knob.name), f"{where}.{knob.name}"))
        # tau_s: same is resolved here, once: a number plus the flag that it follows tau_t
        if self.tau_s == knobs.SAME:  # type: ignore[attr-defined]
            self.tau_s_same = True
        if self.tau_s_same:
            self.tau_s = float(self.tau_t)  # type: ignore[attr-defined]

    @property
    def student_temperature(self) -> float:
        return float(self.tau_t if self.tau_s_same or self.tau_s == knobs.SAME else self.tau_s)  # type: ignore[attr-defined]

    @property
    def intermediate(self) -> bool:
        """Whether an intermediate-representation term is in the objective."""
        return knobs.intermediate(self.config())

    @property
    def hidden_term(self) -> bool:
        """Whether pooled hidden states are compared (and the teacher's must be cached)."""
        return knobs.hidden_term(self.config())

    @property
    def attention_term(self) -> bool:
        """Whether attention maps are compared (the teacher then runs in the trial)."""
        return knobs.attention_term(self.config())

    @property
    def augmenting(self) -> bool:
        return knobs.augmenting(self.config())

    @property
    def live_teacher(self) -> bool:
        """Whether the teacher must run in the trial, so its model must ship with it."""
        return knobs.live_teacher(self.config())

    def describe_intermediate(self) -> str:
        """The intermediate term in words, e.g. ``1.0 x (mse on hidden states), layers mapped by skip``."""
        if not self.intermediate:
            return "not distilled"
        parts = []
        if self.hidden_term:
            alpha = f" (alpha {self.mi_alpha})" if self.inter_loss == "mi_alpha" else ""  # type: ignore[attr-defined]
            parts.append(f"{self.inter_loss}{alpha} on hidden states")  # type: ignore[attr-defined]
        if self.attention_term:
            parts.append("KL on attention maps")
        return f"{self.inter_weight} x ({' + '.join(parts)}), layers mapped by {self.inter_map}"  # type: ignore[attr-defined]


DistillSpec = _spec_class(
    "DistillSpec",
    [*_knob_fields("distill"), ("tau_s_same", bool, field(default=False))],
    _DistillMethods,
    """One distillation config: ``L = (1-alpha)*CE(y, p_s) + alpha*D(z_t/tau_t, z_s/tau_s)``.

    Its fields are the ``distill`` knobs of :mod:`kdsearch.knobs` (what each holds, its
    default, when it applies). ``tau_s: same`` is read as ``tau_s = tau_t`` with
    ``tau_s_same`` set, and written back as ``same``. Distiller's knobs (He et al. 2021) add
    ``inter_weight * I``, an intermediate term over mapped layers, and augmentation of the
    distillation batches.
    """,
)


def with_knobs(distill: Any, train: Any, config: Mapping[str, Any]) -> tuple[Any, Any]:
    """``distill`` and ``train`` with ``config``'s knobs set (checked; other keys ignored)."""
    d_changes: dict[str, Any] = {}
    t_changes: dict[str, Any] = {}
    for name, value in config.items():
        knob = knobs.KNOBS.get(name)
        if knob is None:
            continue
        value = knob.check(value, name)
        (d_changes if knob.section == "distill" else t_changes)[name] = value
    if "tau_s" in d_changes:
        d_changes["tau_s_same"] = d_changes["tau_s"] == knobs.SAME
    new_d = dataclasses.replace(distill, **d_changes)
    new_d.check("distill")
    return new_d, dataclasses.replace(train, **t_changes)


@dataclass
class StudentSpec:
    """The student model (a size preset, a local folder or a hub name) and its training.

    ``dropout`` sets its hidden and attention dropout (None: the model's own, 0.1 for the
    presets); 0 makes a population's members equal their single trials (vmap draws
    dropout masks its own way).
    """

    model: str = "xs"
    train: OptimSpec = field(default_factory=OptimSpec)
    seed: int = 0
    dropout: float | None = None

    def check(self, where: str) -> None:
        _check_model(self.model, f"{where}.model")
        self.train.check(f"{where}.train")
        _check_seeds([self.seed], f"{where}.seed")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"{where}.dropout: must be in [0, 1), got {self.dropout}")


def _check_seeds(seeds: list[int], where: str) -> None:
    for s in seeds:
        if not 0 <= s < MAX_SEED:
            raise SpecError(f"{where}: a seed must be in 0..{MAX_SEED - 1}, got {s}")


def _check_model(name: str, where: str) -> None:
    from kdsearch.presets import check_model_name

    problem = check_model_name(name)
    if problem:
        raise SpecError(f"{where}: {problem}")


@dataclass
class ResourcesSpec:
    """What one trial asks Ray for; fractions of a GPU let small students share one.

    ``memory`` is in GiB (0: no reservation); a trial must fit on one node.
    """

    cpu: float = 1.0
    gpu: float = 0.0
    memory: float = 0.0

    def check(self, where: str) -> None:
        if not self.cpu >= 0.01 or not math.isfinite(self.cpu):
            raise SpecError(f"{where}.cpu: must be at least 0.01 (a share of one CPU), got {self.cpu}")
        if not self.gpu >= 0 or not math.isfinite(self.gpu):
            raise SpecError(f"{where}.gpu: must be >= 0, got {self.gpu}")
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise SpecError(f"{where}.gpu: more than one GPU must be a whole number, got {self.gpu}")
        if not self.memory >= 0 or not math.isfinite(self.memory):
            raise SpecError(f"{where}.memory: must be >= 0 GiB, got {self.memory}")

    def ray(self) -> dict[str, float]:
        """As Ray Tune's ``with_resources`` takes them (memory in bytes)."""
        out = {"cpu": self.cpu, "gpu": self.gpu}
        if self.memory:
            out["memory"] = self.memory * 2**30
        return out


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
    ``data`` section; empty means ``[data]``. ``students`` entries are a model name or a
    mapping of ``student`` fields (its own ``train``: a pretrained student wants another
    learning rate than one from scratch) over the top-level ``student``; empty means
    ``[student]``. ``space`` maps each knob, in greedy order, to its choices (or,
    for Optuna and random, a range). ``budget`` is configs per cell for Optuna and
    random (default: as many as greedy needs), a cap for greedy and grid. ``fuse``:
    ``auto`` trains up to as many (config, seed) points as fit the GPU as one population
    per trial when trials get a GPU, and one per trial on CPU; ``off``; or a number of
    members per population.
    """

    method: str = "auto"
    datasets: list[DataSpec] = field(default_factory=list)
    students: list[StudentSpec] = field(default_factory=list)
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
    fuse: Union[bool, int, str] = "auto"  # YAML reads a bare `off` as false
    costs: bool = True  # measure what each architecture costs to serve (kdsearch.deploy.costs) when it ends
    configs: list[dict[str, Union[float, str, bool]]] = field(default_factory=list)  # with grid: exactly these, not a product
    # fresh seeds for each cell's best config, its no-KD baseline and the paper's recommendation, run when the
    # search ends: the verdicts come from them alone (a config judged on the seeds it was picked on looks better)
    confirm_seeds: int = 3
    # seeds spent where a decision is open (kdsearch.search.race): auto races under method auto (the
    # replays' finding), off elsewhere unless asked; true or a block of settings turns it on
    race: Union[bool, str, Race] = "auto"

    def racing(self) -> Race | None:
        """The race this search runs, once ``auto`` is resolved (None: none)."""
        if isinstance(self.race, Race):
            return self.race
        return Race() if self.race == "auto" and METHODS[self.method].auto else None

    def check(self, where: str) -> None:
        method = METHODS.get(self.method)
        if method is None:
            raise SpecError(f"{where}.method: must be one of {', '.join(METHODS)}, got {self.method!r}")
        for i, d in enumerate(self.datasets):
            d.check(f"{where}.datasets[{i}]")
        for i, st in enumerate(self.students):
            st.check(f"{where}.students[{i}]")
        check_space(self.space, f"{where}.space", method.name)
        if method.sets_epochs and "epochs" in self.space:
            raise SpecError(f"{where}.space.epochs: {method.name} sets each rung's epochs itself (student.train.epochs is the "
                            "full length); take epochs out of the space")
        if self.configs:
            if not method.grid_points:
                raise SpecError(f"{where}.configs: a list of configs runs with method grid, not {self.method}")
            if self.space:
                raise SpecError(f"{where}.configs: give the configs or a space, not both")
            for i, config in enumerate(self.configs):
                if not config:
                    raise SpecError(f"{where}.configs[{i}]: an empty config")
                for name, value in config.items():
                    knob = knobs.KNOBS.get(name)
                    if knob is None:
                        raise SpecError(f"{where}.configs[{i}].{name}: unknown knob (known: {', '.join(knobs.KNOBS)})")
                    knob.check(value, f"{where}.configs[{i}].{name}")
        if self.metric != "val_score" and not self.metric.startswith("val_"):
            raise SpecError(f"{where}.metric: must be a validation metric (val_...), got {self.metric!r}")
        if self.budget is not None and self.budget < 1:
            raise SpecError(f"{where}.budget: must be >= 1 config per cell, got {self.budget}")
        if not self.seeds:
            raise SpecError(f"{where}.seeds: needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"{where}.seeds: seeds repeat: {self.seeds}")
        _check_seeds(self.seeds, f"{where}.seeds")
        _check_seeds([self.search_seed], f"{where}.search_seed")
        if not 0 <= self.confirm_seeds <= MAX_CONFIRM_SEEDS:
            raise SpecError(f"{where}.confirm_seeds: must be in 0..{MAX_CONFIRM_SEEDS}, got {self.confirm_seeds}")
        self.resources.check(f"{where}.resources")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise SpecError(f"{where}.max_concurrent: must be >= 1, got {self.max_concurrent}")
        if self.max_failures < 0:
            raise SpecError(f"{where}.max_failures: must be >= 0, got {self.max_failures}")
        if self.asha is not None:
            if not method.supports_asha:
                takes = " or ".join(m.name for m in METHODS.values() if m.supports_asha)
                raise SpecError(f"{where}.asha: early stopping works with {takes}, not {self.method}")
            self.asha.check(f"{where}.asha")
        if not self.storage:
            raise SpecError(f"{where}.storage: must be a path")
        if self.race is False:
            self.race = "off"
        elif self.race is True or self.race == "on":
            self.race = Race()
        if isinstance(self.race, str) and self.race not in ("auto", "off"):
            raise SpecError(f"{where}.race: must be auto, off, on or a block (max_seeds, test, level, min_seeds, budget), "
                            f"got {self.race!r}")
        if isinstance(self.race, Race):
            self.race.check(f"{where}.race")
        if self.fuse is False:
            self.fuse = "off"
        if self.fuse is True or isinstance(self.fuse, str) and self.fuse not in ("auto", "off"):
            raise SpecError(f"{where}.fuse: must be auto, off or a number of members >= 1, got {self.fuse!r}")
        if isinstance(self.fuse, int) and not 1 <= self.fuse <= MAX_MEMBERS:
            raise SpecError(f"{where}.fuse: members per population must be in 1..{MAX_MEMBERS}, got {self.fuse}")


def check_space(space: Mapping[str, Any], where: str, method: str) -> None:
    """Validate a spec's ``search.space`` against the knob table; SpecError names the bad knob."""
    for name, choices in space.items():
        at = f"{where}.{name}"
        knob = knobs.KNOBS.get(name)
        if knob is None:
            raise SpecError(f"{at}: unknown knob (known: {', '.join(knobs.KNOBS)})")
        if isinstance(choices, RangeSpec):
            if not METHODS[method].takes_ranges:
                takes = " or ".join(m.name for m in METHODS.values() if m.takes_ranges)
                raise SpecError(f"{at}: a range works with {takes}; {method} needs a list of choices")
            if knob.kind not in (float, int):
                raise SpecError(f"{at}: {name} takes choices, not a range")
            choices.check(at)
            knob.check(choices.low, f"{at}.low")
            knob.check(choices.high, f"{at}.high")
            continue
        if not choices:
            raise SpecError(f"{at}: needs at least one choice")
        canon = [knob.check(c, f"{at}[{i}]") for i, c in enumerate(choices)]
        if len(set(map(repr, canon))) != len(canon):
            raise SpecError(f"{at}: choices repeat: {choices}")


MAX_NAME = 100
NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}")


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

    def only_datasets(self, names: Sequence[str]) -> Spec:
        """This spec on some of its datasets, as a search of its own named ``<name>-<dataset>...``.

        A study too long for one sitting runs a dataset at a time: each such search finishes,
        and can be committed, on its own, and reports read the searches together.
        """
        have = [dataset_name(d) for d in self.data_specs]
        unknown = [n for n in names if n not in have]
        if unknown:
            raise SpecError(f"--dataset {unknown[0]}: not a dataset of this spec (its datasets: {', '.join(have)})")
        chosen = [n for n in dict.fromkeys(have) if n in names]  # the spec's order, each once
        out = dataclasses.replace(self, name="-".join([self.name, *chosen]), search=dataclasses.replace(
            self.search, datasets=[d for n, d in zip(have, self.data_specs) if n in names]))
        out.check()
        return out

    @property
    def student_specs(self) -> list[StudentSpec]:
        """Each cell's student: ``search.students`` (each over the ``student`` section), or ``[student]``."""
        return self.search.students or [self.student]

    def check(self) -> None:
        if len(self.name) > MAX_NAME:
            raise SpecError(f"name: {len(self.name)} characters; it names the result folder, at most {MAX_NAME}")
        if not NAME.fullmatch(self.name) or ".." in self.name:
            raise SpecError(
                f"name: {self.name!r} names the result folder: letters, digits, '.', '_' or '-' only (no '/' or '..')"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise SpecError(f"device: must be auto, cpu or cuda, got {self.device!r}")
        self.data.check("data")
        self.teachers.check("teachers")
        self.student.check("student")
        self.distill.check("distill")
        self.search.check("search")
