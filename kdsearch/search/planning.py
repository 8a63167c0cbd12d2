"""What a search prepares before any trial: data, teacher pools, cached teacher outputs, cells.

The driver prepares every dataset and teacher pool once (trials never tokenize or run a
teacher) and packs what trials read into a :class:`Payload`, shipped once through Ray's
object store. Nothing here imports Ray: the export reads what it plans from here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kdsearch import knobs
from kdsearch.data.prepare import PreparedData
from kdsearch.distill.population import unfusable
from kdsearch.distill.teacher_signal import CachedTeacher
from kdsearch.errors import SpecError
from kdsearch.fetch import label
from kdsearch.search.space import Space, teacher_aliases
from kdsearch.search.ranges import RangeSpec
from kdsearch.spec import Spec, cell_id
from kdsearch.tasks import TASKS


@dataclass
class CellPlan:
    """What a cell fixes: its dataset, its student and the spec's defaults for the rest."""

    cell: str
    dataset: str
    data_key: str
    student: str
    distill: Any  # DistillSpec
    train: Any  # OptimSpec
    dropout: float | None = None  # the student's dropout (None: its own)


@dataclass
class Payload:
    """Everything trials read, shipped once through the object store."""

    cells: dict[str, CellPlan]
    data: dict[str, PreparedData]
    teachers: dict[str, dict[str, CachedTeacher]]  # data key -> teacher key (knobs.teacher_key) -> logits
    teacher_names: dict[str, dict[str, str]]  # data key -> teacher key -> checkpoint(s)
    threads: int = 1
    device: str = "auto"
    metric: str = "val_score"  # the searched metric: a diverged trial reports it as NaN
    mode: str = "max"
    asha: dict[str, float] | None = None  # successive halving inside a population: grace_period, reduction_factor, max_t


@dataclass
class Plan:
    """What the driver prepared: the trials' payload and each cell's columns."""

    payload: Payload
    spaces: dict[str, Space]
    cell_info: dict[str, dict[str, Any]]
    defaults: dict[str, dict[str, Any]]
    teachers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # dataset -> selection -> record
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset -> train statistics (data.stats)


def _candidates(spec: Spec, base: dict[str, Any], name: str) -> list[Any]:
    """Values a knob may take in this search: its choices (a range's ends), else the spec's value."""
    if spec.search.configs:
        return list(dict.fromkeys(c.get(name, base[name]) for c in spec.search.configs))
    held = spec.search.space.get(name)
    if held is None:
        return [base[name]]
    if isinstance(held, RangeSpec):
        return [held.low, held.high]
    return list(held)


def teacher_keys(spec: Spec) -> list[str]:
    """Every teacher signal a trial of this search may read (``knobs.teacher_key``)."""
    base = Space(spec.search.space, spec.distill, spec.student.train, configs=spec.search.configs).base
    combos = itertools.product(_candidates(spec, base, "teacher"), _candidates(spec, base, "ensemble_k"))
    keys = [knobs.teacher_key({"teacher": t, "ensemble_k": k}) for t, k in combos]
    # the paper's recommendation is what a best config is confirmed against (kdsearch.search.confirm)
    return list(dict.fromkeys([*keys, str(knobs.PAPER["teacher"])]))


def _may_configs(spec: Spec, names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Every combination of what ``names`` may take in this search, over the spec's values."""
    base = Space(spec.search.space, spec.distill, spec.student.train, configs=spec.search.configs).base
    for combo in itertools.product(*(_candidates(spec, base, n) for n in names)):
        yield {**base, **dict(zip(names, combo))}


_TERMS = ("alpha", "inter_map", "inter_weight", "inter_features", "augment", "augment_p")


def teacher_needs(spec: Spec) -> tuple[bool, bool]:
    """Whether any trial may need the teachers' hidden states, or the teachers themselves.

    Only then are they shipped: features cost N x layers x width floats per split, a
    model its weights, and most searches need neither. The model goes along for
    augmentation and for attention maps, for which the teacher runs in the trial.
    """
    features = model = False
    for config in _may_configs(spec, _TERMS):
        features |= knobs.hidden_term(config)
        model |= knobs.live_teacher(config)
    return features, model


def unfusable_reasons(spec: Spec) -> list[str]:
    """Why some of this search's configs will train alone even when others share a population."""
    return sorted({why for config in _may_configs(spec, _TERMS) if (why := unfusable(config))})


def plan(spec: Spec, log: Callable[[str], None] = print, prefer: dict[str, dict[str, Any]] | None = None) -> Plan:
    """Prepare every dataset, train or reuse its teacher pool, cache the teachers' outputs.

    ``prefer`` (dataset -> config) sets the starting point of that dataset's cells.
    """
    from kdsearch.data.prepare import prepare_data
    from kdsearch.progress import StepProgress
    from kdsearch.teachers import open_pool

    cells: dict[str, CellPlan] = {}
    data_by_key, teachers, names = {}, {}, {}
    spaces: dict[str, Space] = {}
    cell_info: dict[str, dict[str, Any]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    keys = teacher_keys(spec)
    features, with_model = teacher_needs(spec)
    picked: dict[str, dict[str, dict[str, Any]]] = {}
    stats: dict[str, dict[str, Any]] = {}
    for dspec in spec.data_specs:
        data = prepare_data(dspec, spec.workdir, log=log)
        sizes = ", ".join(f"{s} {len(e)}" for s, e in data.splits.items())
        log(f"data {data.source}: {data.task}, {data.num_labels} labels ({sizes})")
        _check_task_knobs(spec, data.task, data.source)
        pool = open_pool(spec.workdir, dspec, data, spec.device, log)
        for folder in spec.teachers.register:
            pool.register(folder)
        pool.train(spec.teachers.for_data(dspec), log=log, progress=StepProgress)
        data_by_key[data.key] = data
        teachers[data.key], names[data.key] = {}, {}
        loaded: dict[str, Any] = {}  # t_hs and t_ll often pick the same checkpoint: ship it once
        for key in keys:
            members = pool.members(key)
            if len(members) == 1 and members[0].name in loaded:
                signal, rec = loaded[members[0].name]
            else:
                signal, rec = pool.signal(key, features=features, with_model=with_model and len(members) == 1)
                loaded[rec.name] = signal, rec
            teachers[data.key][key], names[data.key][key] = signal, rec.name
            log(f"  teacher {key}: {rec.name} (val {rec.val_score:.4f}, loss {rec.val_loss:.4f})")
            if rec.collapsed:
                log(f"warning: teacher {key} ({rec.name}) collapsed: its validation predictions are one class, or no "
                    "better than the majority class, so its soft labels carry nothing; train the pool longer")
            picked.setdefault(data.source, {})[key] = {"name": rec.name, "val_score": rec.val_score, "val_loss": rec.val_loss,
                                                       "collapsed": rec.collapsed, **_test_score(data, signal)}
        stats[data.source] = {**data.stats, **pool.traits()}
        for st in spec.student_specs:
            cid = cell_id(dspec, st.model)
            if cid in cells:
                raise SpecError(f"search: cell {cid!r} appears twice (same dataset and student)")
            cells[cid] = CellPlan(cid, data.source, data.key, st.model, spec.distill, st.train, st.dropout)
            # t_hs and t_ll picking one checkpoint train the same: such configs run once
            aliases = teacher_aliases(picked.get(data.source, {}), spec.distill.teacher)
            spaces[cid] = Space(spec.search.space, spec.distill, st.train, (prefer or {}).get(data.source), aliases,
                                spec.search.configs, classes=data.num_classes)
            cell_info[cid] = {"dataset": data.source, "student": label(st.model), "task": data.task}
            defaults[cid] = {k: v for k, v in spaces[cid].base.items()
                             if knobs.KNOBS[k].section == "distill" or k in spec.search.space}
    asha = spec.search.asha
    payload = Payload(cells, data_by_key, teachers, names, threads=max(1, int(spec.search.resources.cpu)),
                      device=spec.device, metric=spec.search.metric, mode=spec.search.mode,
                      asha=None if asha is None else {"grace_period": asha.grace_period, "reduction_factor": asha.reduction_factor,
                                                      "max_t": spec.student.train.epochs})
    return Plan(payload, spaces, cell_info, defaults, picked, stats)


def _check_task_knobs(spec: Spec, task: str, source: str) -> None:
    """One line, before any teacher trains, for a knob the dataset's task cannot take."""
    if not TASKS[task].extractive:
        return
    asked = {spec.distill.augment, *spec.search.space.get("augment", []), *(c.get("augment", "none") for c in spec.search.configs or [])}
    if asked - {"none"}:
        raise SpecError(f"augment: {', '.join(sorted(asked - {'none'}))} on {source!r}: augmentation edits tokens and mixes "
                        "labels of classification examples; an extractive QA answer is a span of the context, which an "
                        "edit would move or cut (use augment: none)")


def population_members(points: list[dict[str, Any]], cell: CellPlan, data: PreparedData,
                       teachers: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """The students and :class:`~kdsearch.distill.population.Member` s of one population of
    ``points`` (one cell), built in order as its trial builds them: each student seeded as
    its single trial would be. ``teachers`` maps a teacher key to its signal."""
    import torch

    from kdsearch.distill.population import Member
    from kdsearch.models import build_for
    from kdsearch.spec import with_knobs

    models, members = [], []
    for point in points:
        distill, train = with_knobs(cell.distill, cell.train, point)
        seed = int(point["seed"])
        torch.manual_seed(seed)
        models.append(build_for(cell.student, data, cell.dropout))
        members.append(Member(distill, train, seed, teachers[knobs.teacher_key(distill.config())]))
    return models, members


def _test_score(data: PreparedData, teacher: CachedTeacher) -> dict[str, float]:
    """The teacher's test score, from its cached logits: what a student keeps of it is reported."""
    from kdsearch.distill.trainer import logit_scores

    logits = teacher.split_logits("test") if "test" in data.splits else None
    return {} if logits is None else {"test_score": float(logit_scores(data, "test", logits)["score"])}


def sample_students(p: Plan) -> list[Any]:
    """One student of each kind the cells train, as trials build them (sizes a member's memory)."""
    from kdsearch.models import build_for

    seen: dict[str, Any] = {}
    for cell in p.payload.cells.values():
        if cell.student not in seen:
            seen[cell.student] = build_for(cell.student, p.payload.data[cell.data_key], cell.dropout)
    return list(seen.values())
