"""Run a search: spec -> data -> teachers -> Ray Tune trials -> Parquet -> best.yaml.

The driver prepares every dataset and teacher pool once (trials never tokenize or run a
teacher), ships them to trials through the object store, and lets Ray Tune schedule the
trials of all cells at once. With no address Ray runs embedded in this process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from kdsearch import atomic
from kdsearch.distill.augment import AUGMENTATIONS
from kdsearch.distill.intermediate import LAYER_MAPS
from kdsearch.errors import KDSearchError, SpecError
from kdsearch.local_ray import start_local_ray
from kdsearch.results.store import ResultStore
from kdsearch.results.summary import best_per_cell, best_yaml
from kdsearch.search.cells import CellSearcher
from kdsearch.search.greedy import GreedySearcher
from kdsearch.search.recorder import ProgressPrinter, ResultRecorder
from kdsearch.search.space import BASELINE, BASELINE_STAGE, KNOBS, Space, effective
from kdsearch.search.trial import STATE_FILE, CellPlan, Payload, run_trial
from kdsearch.spec import DataSpec, Spec, dump_spec, load_spec

TUNE_DIR = "tune"
SPEC_FILE = "spec.yaml"
BEST_FILE = "best.yaml"
META_FILE = "search.json"


def cell_id(data: DataSpec, student: str) -> str:
    name = data.dataset.rstrip("/").split("/")[-1]
    if data.hub_config:
        name += f"-{data.hub_config}"
    return f"{name}/{student.rstrip('/').split('/')[-1]}"


@dataclass
class Plan:
    """What the driver prepared: the trials' payload and each cell's columns."""

    payload: Payload
    spaces: dict[str, Space]
    cell_info: dict[str, dict[str, Any]]
    defaults: dict[str, dict[str, Any]]
    teachers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # dataset -> selection -> record


def check_resources(spec: Spec, address: str | None) -> None:
    """Refuse a GPU request where there is none, before anything starts."""
    import ray

    gpu = spec.search.resources.gpu
    if gpu <= 0:
        return
    if address is None and not ray.is_initialized():
        import torch

        if not torch.cuda.is_available():
            raise SpecError(f"search.resources.gpu: {gpu:g} GPU per trial asked, but this machine has no GPU")
        return
    have = ray.cluster_resources().get("GPU", 0)
    if have < gpu:
        raise SpecError(f"search.resources.gpu: {gpu:g} GPU per trial asked, but the cluster has {have:g}")


def plan(spec: Spec, log: Callable[[str], None] = print, prefer: dict[str, dict[str, Any]] | None = None) -> Plan:
    """Prepare every dataset, train or reuse its teacher pool, cache the teachers' outputs.

    ``prefer`` (dataset -> config) sets the starting point of that dataset's cells.
    """
    from kdsearch.data.prepare import prepare_data
    from kdsearch.progress import StepProgress
    from kdsearch.teachers import TeacherPool

    cells: dict[str, CellPlan] = {}
    data_by_key, teachers, names = {}, {}, {}
    spaces: dict[str, Space] = {}
    cell_info: dict[str, dict[str, Any]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    selections = list(dict.fromkeys([spec.distill.teacher, *[str(t) for t in spec.search.space.get("teacher", [])]]))
    features, with_model = teacher_needs(spec)
    picked: dict[str, dict[str, dict[str, Any]]] = {}
    for dspec in spec.data_specs:
        data = prepare_data(dspec, spec.workdir)
        sizes = ", ".join(f"{s} {len(e)}" for s, e in data.splits.items())
        log(f"data {data.source}: {data.task}, {data.num_labels} labels ({sizes})")
        pool = TeacherPool(spec.workdir, data, spec.device)
        for folder in spec.teachers.register:
            pool.register(folder)
        pool.train(spec.teachers, log=log, progress=StepProgress)
        data_by_key[data.key] = data
        teachers[data.key], names[data.key] = {}, {}
        loaded: dict[str, Any] = {}  # t_hs and t_ll often pick the same checkpoint: ship it once
        for sel in selections:
            rec = pool.select(sel)
            if rec.name not in loaded:
                loaded[rec.name] = pool.outputs(rec, features=features, with_model=with_model)
            teachers[data.key][sel] = loaded[rec.name]
            names[data.key][sel] = rec.name
            log(f"  teacher {sel}: {rec.name} (val {rec.val_score:.4f}, loss {rec.val_loss:.4f})")
            picked.setdefault(data.source, {})[sel] = {"name": rec.name, "val_score": rec.val_score, "val_loss": rec.val_loss}
        for student in spec.student_models:
            cid = cell_id(dspec, student)
            if cid in cells:
                raise SpecError(f"search: cell {cid!r} appears twice (same dataset and student)")
            cells[cid] = CellPlan(cid, data.source, data.key, student, spec.distill, spec.student.train)
            spaces[cid] = Space(spec.search.space, spec.distill, spec.student.train, (prefer or {}).get(data.source))
            cell_info[cid] = {"dataset": data.source, "student": student, "task": data.task}
            defaults[cid] = {k: v for k, v in spaces[cid].base.items() if KNOBS[k].section == "distill" or k in spec.search.space}
    payload = Payload(cells, data_by_key, teachers, names, threads=max(1, int(spec.search.resources.cpu)), device=spec.device)
    return Plan(payload, spaces, cell_info, defaults, picked)


def teacher_needs(spec: Spec) -> tuple[bool, bool]:
    """Whether any trial may need the teachers' hidden states, or the teachers themselves.

    Only then are they shipped: features cost N x layers x width floats per split, a
    model its weights, and most searches need neither. The model goes along for
    augmentation and for attention maps, for which the teacher runs in the trial.
    """

    def may(knob: str, *values: str) -> bool:
        # a searched knob takes its choices (str knobs take lists, never ranges); others the spec's value
        held = spec.search.space.get(knob, [getattr(spec.distill, knob)])
        return any(v in values for v in held)  # type: ignore[union-attr]

    inter = may("inter_map", *(m for m in LAYER_MAPS if m != "none"))
    augment = may("augment", *(a for a in AUGMENTATIONS if a != "none"))
    return inter and may("inter_features", "hidden", "both"), augment or (inter and may("inter_features", "attention", "both"))


def greedy_size(space: Space) -> int:
    """Distinct configs the greedy search runs at most: every choice, the default once."""
    return sum(len(c) for c in space.choices.values()) - max(0, len(space.names) - 1)


def _searcher(spec: Spec, p: Plan, folder: Path, search_id: str) -> CellSearcher:
    s = spec.search
    inner: dict[str, Any] = {}
    # every cell searches the spec's one space: by default, as many configs as greedy needs
    any_space = next(iter(p.spaces.values()))
    budget = s.budget or (10 if any_space.ranges else greedy_size(any_space))
    for cid, space in p.spaces.items():
        if s.method == "greedy":
            inner[cid] = GreedySearcher(space, metric="score", mode="max", max_configs=s.budget)
            continue
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        from ray.tune.search.optuna import OptunaSearch

        sampler = (
            optuna.samplers.TPESampler(seed=s.search_seed, constant_liar=True)
            if s.method == "optuna"
            else optuna.samplers.RandomSampler(seed=s.search_seed)
        )
        storage = JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
        inner[cid] = OptunaSearch(
            space=space.optuna_distributions(),
            metric="score",
            mode="max",
            sampler=sampler,
            study_name=f"{search_id}/{cid}",
            storage=storage,
            points_to_evaluate=[dict(space.defaults)] if s.method == "optuna" and not space.ranges else None,
        )
    baseline = BASELINE if s.baseline else None
    return CellSearcher(
        inner,
        s.seeds,
        s.metric,
        s.mode,
        baseline=baseline,
        budget=None if s.method == "greedy" else budget,
        base={cid: space.base for cid, space in p.spaces.items()},
    )


def grid_points(spec: Spec, p: Plan) -> list[dict[str, Any]]:
    """Every (cell, config, seed) of the full grid, baselines first, seeds adjacent."""
    points: list[dict[str, Any]] = []
    for cid, space in p.spaces.items():
        if spec.search.baseline:
            points += [{**BASELINE, "stage": BASELINE_STAGE, "cell": cid, "seed": seed} for seed in spec.search.seeds]
        configs = list(space.grid())[: spec.search.budget]
        for config in configs:
            points += [{**config, "cell": cid, "seed": seed} for seed in spec.search.seeds]
    return points


def init_ray(address: str | None) -> bool:
    """Connect to the Ray cluster at ``address``, or start a one-machine Ray on 127.0.0.1.

    True when this call initialised Ray, so the caller shuts it down.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise KDSearchError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
        return True
    start_local_ray(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    return True


def search_dirs(spec: Spec) -> list[Path]:
    root = Path(spec.search.storage)
    return sorted((d for d in root.glob(f"{spec.name}-*") if (d / SPEC_FILE).is_file()), key=lambda d: d.name)


def resolve_resume(spec: Spec, resume: str | bool) -> Path:
    """The folder to resume: the one named, or this spec's latest search."""
    if isinstance(resume, str):
        folder = Path(resume).expanduser().resolve()
    else:
        found = search_dirs(spec)
        if not found:
            raise KDSearchError(f"nothing to resume: no search named {spec.name!r} under {spec.search.storage}")
        folder = found[-1]
    if not (folder / TUNE_DIR).is_dir() or not (folder / SPEC_FILE).is_file():
        raise KDSearchError(f"cannot resume {str(folder)!r}: it is not a kdsearch search folder (no {TUNE_DIR}/ or {SPEC_FILE})")
    return folder


class CheckpointJanitor(Callback):
    """Drops a finished trial's weights, keeping its final report: disk use stays bounded.

    The report stays because a search resumed from a state saved just before the trial
    finished restores the trial from this checkpoint (it then replays the report). A
    finished student is retrained from its config and seed when exported: same weights.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        path = Path(trial.path or "")  # the storage copy (local_path is a staging dir)
        if path.is_dir() and path.resolve().is_relative_to(Path(self.folder).resolve()):
            for state in path.glob(f"checkpoint_*/{STATE_FILE}"):
                state.unlink(missing_ok=True)


def run_search(
    spec: Spec,
    address: str | None = None,
    resume: str | bool | None = None,
    log: Callable[..., None] = print,
    prefer: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Run (or resume) the spec's search and return its result folder.

    ``prefer`` maps a dataset to a config (a recommendation) that the search starts from.
    """
    from ray import tune

    if resume:
        folder = resolve_resume(spec, resume)
        spec = load_spec(folder / SPEC_FILE)  # the search goes on exactly as it began
        meta = json.loads((folder / META_FILE).read_text())
        search_id, prefer = meta["search_id"], meta.get("prefer")
    else:
        search_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        folder = Path(spec.search.storage) / search_id
    s = spec.search
    address = address or os.environ.get("RAY_ADDRESS") or None  # as ray.init() would: a job's driver has it
    if address is None:
        check_resources(spec, None)
    log(f"== search {search_id}: {s.method} on {len(spec.data_specs)} dataset(s) x {len(spec.student_models)} student(s), seeds {s.seeds}")
    log(f"   results: {folder}")
    p = plan(spec, log, prefer)
    started_ray = init_ray(address)
    try:
        if address is not None:
            check_resources(spec, address)
        import ray

        cpus = ray.cluster_resources().get("CPU", 1)
        concurrent = s.max_concurrent or max(1, int(cpus // s.resources.cpu))
        if not resume:
            folder.mkdir(parents=True, exist_ok=False)
            atomic.write_text(folder / SPEC_FILE, dump_spec(spec))
            meta = {"search_id": search_id, "method": s.method, "cells": list(p.spaces), "started": time.time(), "prefer": prefer,
                    "teachers": p.teachers}
            atomic.write_text(folder / META_FILE, json.dumps(meta, indent=1))
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, payload=p.payload), {"cpu": s.resources.cpu, "gpu": s.resources.gpu}
        )
        log(f"== trials: {concurrent} at a time, {s.resources.cpu:g} CPU / {s.resources.gpu:g} GPU each")
        if resume:
            tuner = tune.Tuner.restore(str(folder / TUNE_DIR), trainable, resume_unfinished=True, resume_errored=False)
        else:
            tuner = _new_tuner(spec, p, folder, search_id, trainable, concurrent, log)
        start = time.time()
        tuner.fit()
        log(f"== search finished in {time.time() - start:.0f} s")
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    finish(folder, spec, log)
    return folder


def _new_tuner(spec: Spec, p: Plan, folder: Path, search_id: str, trainable: Any, concurrent: int, log: Callable[..., None]) -> Any:
    from ray import tune

    s = spec.search
    callbacks = [
        ResultRecorder(str(folder), search_id, s.method, p.defaults, p.cell_info),
        ProgressPrinter(s.metric, s.mode, log),
        CheckpointJanitor(str(folder)),
    ]
    run_config = tune.RunConfig(
        name=TUNE_DIR,
        storage_path=str(folder),
        callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
        verbose=0,
    )
    if s.method == "grid":
        points = grid_points(spec, p)
        log(f"   full grid: {len(points)} trials")
        return tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search(points)},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrent, reuse_actors=True),
            run_config=run_config,
        )
    scheduler = None
    if s.asha is not None:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="epoch",
            metric=s.metric,
            mode=s.mode,
            max_t=spec.student.train.epochs,
            grace_period=s.asha.grace_period,
            reduction_factor=s.asha.reduction_factor,
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=_searcher(spec, p, folder, search_id),
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=concurrent,
            reuse_actors=True,
        ),
        run_config=run_config,
    )


def finish(folder: Path, spec: Spec, log: Callable[..., None] = print) -> dict[str, dict[str, Any]]:
    """Write ``best.yaml`` from the Parquet rows and print the best config per cell."""
    store = ResultStore(folder)
    trials = store.trials()
    if trials.empty:
        raise KDSearchError(f"search in {folder} finished without a single trial row")
    best = best_per_cell(trials, spec.search.metric, spec.search.mode)
    store.write_text(BEST_FILE, best_yaml(best, spec.search.metric))
    counts = trials["status"].value_counts().to_dict()
    log(f"== {len(trials)} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    for cell, b in best.items():
        if "config" not in b:
            log(f"   {cell}: {b['status']}")
            continue
        try:  # name only the knobs that change what the best config trains
            applies = set(effective(b["config"]))
        except SpecError:
            applies = set(b["config"])
        knobs = ", ".join(f"{k}={v}" for k, v in b["config"].items() if k in applies)
        metric = spec.search.metric
        base = f"; no KD {b['baseline_no_kd']:.4f} ({b['gain_over_baseline']:+.4f})" if "baseline_no_kd" in b else ""
        fid = f"; agreement {b['val_agreement']:.4f}" if not math.isnan(b.get("val_agreement", math.nan)) else ""
        log(f"   best {cell}: {knobs} -> {metric} {b[metric]:.4f} ± {b['std']:.4f} over {b['seeds']} seed(s){base}{fid}")
    log(f"results: {folder}/trials.parquet, epochs.parquet, best.yaml")
    if not (trials["status"] == "ok").any():
        first = trials["error"].dropna()
        why = f" (first error: {first.iloc[0]})" if len(first) else ""
        raise KDSearchError(f"every one of the {len(trials)} trials failed or diverged{why}; rows are in {folder}")
    return best
