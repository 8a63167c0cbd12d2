"""Run a search: spec -> data -> teachers -> Ray Tune trials -> Parquet -> best.yaml.

Everything that can be refused is refused before anything starts: the device, the
resources a trial asks for, where results and caches go. Then the driver prepares every
dataset and teacher pool once (:mod:`kdsearch.search.planning`), Ray Tune schedules the
trials of all cells at once, and the callbacks write Parquet as they report. With no
address Ray runs embedded in this process. ``--resume`` continues a search from Tune's
state and the searcher's JSON state, as its ``spec.yaml`` says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray import tune

from kdsearch import atomic
from kdsearch.errors import Interrupted, KDSearchError
from kdsearch.preflight import resolve_models
from kdsearch.knobs import BASELINE, BASELINE_STAGE, KNOBS, SAME
from kdsearch.knobs import key as knob_key
from kdsearch.knobs import resolve as resolve_knobs
from kdsearch.ray_runtime import check_device, check_resources, cluster_nodes, init_ray, this_machine
from kdsearch.results.store import BEST_FILE, CONFIRM, COSTS, SPEC_FILE, TRIALS, TUNE_DIR, ResultStore, open_store
from kdsearch.results.summary import best_per_cell, best_yaml, summary_lines
from kdsearch.search import confirm
from kdsearch.search._state import read_state
from kdsearch.search.callbacks import CheckpointJanitor, ProgressPrinter, ResultRecorder, recorded_best
from kdsearch.search.cells import CellSearcher
from kdsearch.search.methods import METHODS, BuildContext
from kdsearch.search.planning import Plan, plan, sample_students, unfusable_reasons
from kdsearch.search.populations import PopulationSearcher, fusion, populations
from kdsearch.search.race import Race
from kdsearch.search.trial import run_trial
from kdsearch.spec import Spec, dump_spec
from kdsearch.trust import check_trusted

RESUMABLE = re.compile(r"search\.resources\.\w+")  # what --set may change on --resume
DUPLICATE_SUFFIX = "=dup"  # the trial id of a row recorded for a config that trained as another
CONFIRM_DIR = "tune-confirm"  # Tune's folder for confirmation trials (never restored: rows say what is missing)
DEFAULT_CONFIRM = 3  # confirmation seeds `kdsearch confirm` adds to a search that ran with none


def _stamp_order(folder: Path) -> tuple[str, int]:
    # name-TIME or name-TIME-N (two searches started in the same second)
    base, _, n = folder.name.rpartition("-")
    return (base, int(n)) if n.isdigit() and len(n) < 4 else (folder.name, 0)


def search_dirs(spec: Spec) -> list[Path]:
    """This spec's searches under its storage, oldest first."""
    root = Path(spec.search.storage)
    found = (d for d in root.glob(f"{spec.name}-*") if (d / SPEC_FILE).is_file())
    return sorted(found, key=_stamp_order)


def claim_folder(spec: Spec) -> tuple[Path, str, list[Path]]:
    """A new result folder, created now: two searches started in the same second get two.

    Also returns the folders this created (the storage itself, maybe), to remove them
    again if the search fails before it begins.
    """
    root = Path(spec.search.storage)
    stamp = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        search_id = stamp if n == 1 else f"{stamp}-{n}"
        try:
            return root / search_id, search_id, atomic.make_dirs(root / search_id)
        except FileExistsError:
            continue
    raise KDSearchError(f"search.storage: cannot make a new folder for {stamp} under {root}")


def resolve_resume(spec: Spec | None, resume: str | bool) -> Path:
    """The folder to resume (the one named, or this spec's latest search), checked first.

    Refused: a folder that is not a search's, one recorded by an older kdsearch, one that
    another user could have written (Tune's restore files are pickles), a searcher
    state that is not kdsearch's JSON, and a search that finished (nothing is left to run).
    """
    if isinstance(resume, str):
        folder = Path(resume).expanduser().resolve()
    else:
        assert spec is not None, "--resume without a folder needs the spec to find its latest search"
        found = search_dirs(spec)
        if not found:
            raise KDSearchError(f"nothing to resume: no search named {spec.name!r} under {spec.search.storage}")
        folder = found[-1]
    if not (folder / TUNE_DIR).is_dir() or not (folder / SPEC_FILE).is_file():
        raise KDSearchError(f"cannot resume {str(folder)!r}: it is not a kdsearch search folder (no {TUNE_DIR}/ or {SPEC_FILE})")
    check_trusted(folder, f"resume {folder}")
    fmt = ResultStore(folder).meta().get("results_format", 1)
    if fmt < 2:
        raise KDSearchError(f"cannot resume {folder}: it was recorded by an older kdsearch (results format {fmt}); start it again")
    states = sorted((folder / TUNE_DIR).glob("searcher-state-*.pkl"))
    if states:
        read_state(states[-1])  # JSON or a one-line refusal, before Tune touches it
    experiments = sorted((folder / TUNE_DIR).glob("experiment_state-*.json"))
    try:
        json.loads(experiments[-1].read_text())
    except (IndexError, OSError, UnicodeDecodeError, ValueError):
        where = experiments[-1] if experiments else folder / TUNE_DIR
        raise KDSearchError(f"cannot resume {folder}: Ray Tune's state {where} is missing or damaged; start the search again") from None
    ResultStore(folder).spec_text()  # a cut or edited spec.yaml is refused by name, whether or not the search finished
    ended = ResultStore(folder).meta().get("finished")
    if ended:  # last: a damaged folder says what is wrong with it first
        at = time.strftime(" at %Y-%m-%d %H:%M", time.localtime(ended)) if isinstance(ended, float) else ""
        raise KDSearchError(f"nothing to resume: {folder.name} finished{at} (kdsearch results {shlex.quote(str(folder))} "
                            "shows it; kdsearch confirm adds seeds to its picks)")
    return folder


def resumed_spec(store: ResultStore, overrides: list[str]) -> tuple[Spec, bool]:
    """The search's own spec, and whether ``--set search.resources.*`` changed what a trial asks for."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not RESUMABLE.fullmatch(key):
            raise KDSearchError(
                f"--set {key}: --resume continues {store.folder.name} as its spec.yaml says; only "
                "search.resources.* may change (start a new search for anything else)"
            )
    before = store.spec()
    if not overrides:
        return before, False
    spec = store.spec(overrides)
    return spec, spec.search.resources != before.search.resources


def _writable(spec: Spec) -> None:
    if "://" not in spec.search.storage:
        atomic.check_writable(Path(spec.search.storage), "search.storage")
    atomic.check_writable(Path(spec.workdir), "workdir")


def run_search(
    spec: Spec | None,
    address: str | None = None,
    resume: str | bool | None = None,
    log: Callable[..., None] = print,
    prefer: dict[str, dict[str, Any]] | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Run (or resume) the spec's search and return its result folder.

    ``prefer`` maps a dataset to a config (a recommendation) that the search starts from;
    ``overrides`` are the ``--set`` items, which a resume checks (see :func:`resumed_spec`).
    ``spec`` may be None when ``resume`` names the folder: its own ``spec.yaml`` says all.
    SIGINT and SIGTERM stop it as :class:`~kdsearch.errors.Interrupted`, resumable.
    """
    import ray

    folder: Path | None = None
    new_resources = False
    if resume:
        folder = resolve_resume(spec, resume)
        store = ResultStore(folder)
        spec, new_resources = resumed_spec(store, overrides or [])
        meta = store.meta()
        search_id, prefer = meta["search_id"], meta.get("prefer")
    assert spec is not None, "a new search needs a spec"
    if METHODS[spec.search.method].auto:
        spec, why = resolve_auto(spec)
        log(f"== method: auto -> {spec.search.method}: {why}")
    elif not resume and (short := short_rung_warning(spec)):
        log(short)
    s = spec.search
    _writable(spec)
    trained = resolve_models(spec)  # every model checked, before a folder is made or a teacher trains
    address = address or os.environ.get("RAY_ADDRESS") or None  # as ray.init() would: a job's driver has it
    local = address is None and not ray.is_initialized()
    check_device(spec, local)
    started_ray = False
    if local:
        check_resources(s.resources, [this_machine()], "this machine")
    else:
        started_ray = init_ray(address)
    claimed: list[Path] = []  # folders made for a search that has not begun yet
    stop = _StopSignals()
    try:
        with stop:
            if not local:
                check_resources(s.resources, cluster_nodes(), "the cluster's largest node")
            if new_resources:  # checked: a later resume asks for the same
                ResultStore(folder).write_spec(dump_spec(spec, folder))
                log(f"   resources per trial now: {dataclasses.asdict(spec.search.resources)}")
            if folder is None:
                folder, search_id, claimed = claim_folder(spec)
            log(f"== search {search_id}: {s.method} on {len(spec.data_specs)} dataset(s) x {len(spec.student_specs)} student(s), seeds {s.seeds}")
            log(f"   results: {folder}")
            p = plan(trained, log, prefer)
            cap = _fusion(trained, p, log)
            if local:
                started_ray = init_ray(None)
                stop.install()  # Ray's core takes SIGTERM when it starts (and aborts on it): take it back
            cpus = ray.cluster_resources().get("CPU", 1)
            concurrent = s.max_concurrent or max(1, int(cpus // s.resources.cpu))
            store = ResultStore(folder)
            if claimed:
                store.write_spec(dump_spec(spec, folder))  # names and relative paths: readable anywhere
                store.write_meta({"search_id": search_id, "method": s.method, "cells": list(p.spaces), "started": time.time(),
                                  "prefer": prefer, "teachers": p.teachers, "datasets": p.datasets})
                claimed = []  # the folder is a search's now, resumable
            _quiet_tune()
            trainable = tune.with_resources(tune.with_parameters(run_trial, payload=p.payload), s.resources.ray())
            for line in plan_lines(spec, p, folder, concurrent):
                log(line)
            if resume:
                try:
                    tuner = tune.Tuner.restore(str(folder / TUNE_DIR), trainable, resume_unfinished=True, resume_errored=False)
                except Exception as e:  # noqa: BLE001 - tuner.pkl unreadable: Tune raises many kinds
                    raise KDSearchError(f"cannot resume {folder}: Ray Tune cannot restore its state ({str(e).splitlines()[0][:200]})") from None
            else:
                tuner = _new_tuner(spec, p, folder, search_id, trainable, concurrent, cap, log)
            start = time.time()
            with stop.tune_stops_gracefully():
                tuner.fit()
            if stop.signal is None:
                log(f"== search finished in {time.time() - start:.0f} s")
                record_duplicates(folder, spec, p, log)
                if s.confirm_seeds:
                    run_confirmation(folder, spec, p, search_id, trainable, concurrent, cap, stop, log, s.confirm_seeds)
        if stop.signal is not None:
            raise KeyboardInterrupt  # Tune stopped the trials and saved its state: resumable
    except KeyboardInterrupt:
        if claimed:  # stopped before it became a search: leave nothing behind
            _remove_claimed(claimed)
            raise Interrupted(stop.signal, f"the search stopped before it began ({stop.name}); nothing was written") from None
        raise Interrupted(stop.signal, interrupted_text(folder, stop.name)) from None
    except BaseException:
        if claimed:  # failed before it became a search: leave nothing behind
            _remove_claimed(claimed)
        raise
    finally:
        if started_ray:
            ray.shutdown()
    finish(folder, spec, log)
    if s.costs:
        record_costs(folder, trained, p, log)
    return folder


def _quiet_tune() -> None:
    """Tune's own start-up box and its TensorBoard hint (into Ray's session folder) give way to
    kdsearch's plan lines; TensorBoard's files are in the search folder, beside the rest."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def run_confirmation(folder: Path, spec: Spec, p: Plan, search_id: str, trainable: Any, concurrent: int, cap: int,
                     stop: _StopSignals, log: Callable[..., None], n_seeds: int, cells: list[str] | None = None,
                     every: bool = False) -> int:
    """Train the confirmation points still missing (:mod:`kdsearch.search.confirm`): each cell's
    picks on ``n_seeds`` fresh seeds, fused where members fuse; rows marked ``role: confirm``.
    Returns how many points it trained; a stop leaves the rows of what finished."""
    s = spec.search
    store = ResultStore(folder)
    todo = confirm.points(store.trials(), store.trials(CONFIRM), s.metric, s.mode, n_seeds, cells, every)
    if not todo:
        log(f"== confirmation: {confirm.nothing_left(store.trials(), s.metric, s.mode, n_seeds, every)}")
        return 0
    seeds = sorted({pt["seed"] for pt in todo})
    groups = populations(todo, {cid: space.base for cid, space in p.spaces.items()}, cap)
    what = "every config" if every else "the best config, no KD and the paper's recommendation"
    log(f"== confirmation: {what} of {len({pt['cell'] for pt in todo})} cell(s) on fresh seeds {seeds} "
        f"(never picked on): {len(todo)} (config, seed) points in {len(groups)} trial(s)")
    tuner = tune.Tuner(
        trainable,
        param_space={"members": tune.grid_search(groups)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=_run_config(spec, p, folder, search_id, CONFIRM_DIR, log),
    )
    with stop.tune_stops_gracefully():
        tuner.fit()
    return len(todo)


def confirm_search(folder: str | Path, n_seeds: int | None = None, cells: list[str] | None = None, every: bool = False,
                   address: str | None = None, log: Callable[..., None] = print) -> Path:
    """``kdsearch confirm DIR``: add confirmation seeds to a finished search (up to ``n_seeds``
    per confirmed config, default the spec's ``search.confirm_seeds`` or 3), then rewrite its
    ``best.yaml`` and print the verdicts. Run again after a stop, it trains only what is missing."""
    import ray

    store = open_store(folder)
    folder = Path(folder).expanduser().resolve()  # Tune's storage must be absolute; the line printed works anywhere
    check_trusted(folder, f"confirm {folder}")
    if store.finished() is False:
        raise KDSearchError(f"{folder}: the search has not finished; finish it first (kdsearch run --resume "
                            f"{shlex.quote(str(folder))}), which also confirms its picks")
    spec = store.spec()
    n = n_seeds if n_seeds is not None else spec.search.confirm_seeds or DEFAULT_CONFIRM
    # checked before any data, teacher or Ray starts: a cell that does not exist, nothing to confirm
    todo = confirm.points(store.trials(), store.trials(CONFIRM), spec.search.metric, spec.search.mode, n, cells, every)
    if not todo:
        log(f"== confirmation: {confirm.nothing_left(store.trials(), spec.search.metric, spec.search.mode, n, every)}")
        finish(folder, spec, log)
        return folder
    _writable(spec)
    trained = resolve_models(spec)
    address = address or os.environ.get("RAY_ADDRESS") or None
    local = address is None and not ray.is_initialized()
    check_device(spec, local)
    if local:
        check_resources(spec.search.resources, [this_machine()], "this machine")
    stop = _StopSignals()
    started_ray = False
    try:
        with stop:
            started_ray = init_ray(address)
            stop.install()
            if not local:
                check_resources(spec.search.resources, cluster_nodes(), "the cluster's largest node")
            p = plan(trained, log, store.meta().get("prefer"))
            _same_teachers(store, p, log)
            cap = _fusion(trained, p, log)
            cpus = ray.cluster_resources().get("CPU", 1)
            concurrent = spec.search.max_concurrent or max(1, int(cpus // spec.search.resources.cpu))
            _quiet_tune()
            trainable = tune.with_resources(tune.with_parameters(run_trial, payload=p.payload), spec.search.resources.ray())
            run_confirmation(folder, spec, p, store.meta()["search_id"], trainable, concurrent, cap, stop, log, n, cells, every)
        if stop.signal is not None:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        done = len(ResultStore(folder).trials(CONFIRM))
        raise Interrupted(stop.signal, f"confirmation of {folder.name} interrupted ({stop.name}), {done} confirmation row(s) "
                          f"recorded; continue it with: kdsearch confirm {shlex.quote(str(folder))} --seeds {n}"
                          + (" --all" if every else "")) from None
    finally:
        if started_ray:
            ray.shutdown()
    finish(folder, spec, log)
    return folder


def _same_teachers(store: ResultStore, p: Plan, log: Callable[..., None]) -> None:
    """Say so when a teacher pool now picks another checkpoint than the search recorded (a pool
    trained again elsewhere): confirmation rows then distil another teacher than the search's."""
    recorded = store.meta().get("teachers") or {}
    for dataset, picked in p.teachers.items():
        for key, rec in picked.items():
            then = (recorded.get(dataset) or {}).get(key)
            if then and (then.get("name") != rec["name"] or abs(float(then.get("val_score", 0)) - rec["val_score"]) > 1e-6):
                log(f"warning: teacher {key} of {dataset} is now {rec['name']} (val {rec['val_score']:.4f}); the search "
                    f"distilled {then.get('name')} (val {float(then.get('val_score', 0)):.4f}): the teacher pool was "
                    "trained again, so confirmation seeds distil another teacher than the selection seeds did")


def duplicate_configs(folder: Path, spec: Spec, p: Plan) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(cell, config run, another config asked that trains the same) for this search: from the
    searcher's saved state, or for the grid from each cell's space."""
    if METHODS[spec.search.method].covers_grid:
        return [(cid, config, dup) for cid, space in p.spaces.items()
                for config, dups in space.grid_with_duplicates() for dup in dups]
    states = sorted((folder / TUNE_DIR).glob("searcher-state-*.pkl"))
    if not states:
        return []
    cells = read_state(states[-1]).get("cells", {})
    out = [(g["cell"], g["config"], dup) for g in cells.get("groups", {}).values() for dup in g.get("duplicates", [])]
    for cell, inner in cells.get("inner", {}).items():  # a searcher that saw them first (greedy's stages)
        out += [(cell, d["config"], {**d["duplicate"], "stage": d["stage"]}) for d in inner.get("duplicates", [])]
    return out


def record_duplicates(folder: Path, spec: Spec, p: Plan, log: Callable[..., None] = print) -> None:
    """Rows for configs that were asked but trained as another (t_hs = t_ll on one checkpoint, or an
    identity of the objective: ``knobs.SAME_TRAINING``): the other config's rows, with this one's
    knobs and ``duplicate_of`` naming the row it copies."""
    store = ResultStore(folder)
    trials = store.trials()
    if trials.empty:
        return
    rows = []
    for cell, config, dup in duplicate_configs(folder, spec, p):
        # every length it trained at, where a rung set it (successive halving's train shorter)
        lengths: list[dict[str, int]] = [{}]
        if "epochs" in trials.columns and "epochs" not in config:
            lengths += [{"epochs": int(e)} for e in sorted(set(trials.loc[trials["cell"] == cell, "epochs"].dropna()))]
        for length in lengths:
            values = {**p.defaults[cell], **{k: v for k, v in config.items() if k in KNOBS}, **length}
            source = trials[(trials["cell"] == cell) & (trials["config_key"] == knob_key(values))]
            dup_values = {**values, **{k: v for k, v in dup.items() if k in KNOBS}, **length}
            for r in source.to_dict("records"):
                if str(r["trial_id"]).endswith(DUPLICATE_SUFFIX):
                    continue
                rows.append({**r, **resolve_knobs(dup_values), "tau_s_same": dup_values.get("tau_s") == SAME,
                             "config_key": knob_key(dup_values), "trial_id": f"{r['trial_id']}{DUPLICATE_SUFFIX}",
                             "duplicate_of": r["trial_id"], "stage": dup.get("stage", r.get("stage"))})
    if rows:
        store.append(TRIALS, rows)
        log(f"== {len(rows)} row(s) of configs that train the same student as another (t_hs and t_ll one checkpoint, "
            "or MSE with tau_s = tau_t at any tau_t): run once, recorded for both, marked duplicate_of")


def record_costs(folder: Path, trained: Spec, p: Plan, log: Callable[..., None] = print) -> None:
    """``costs.parquet``: what the teacher and each student cost to serve (after the trials, so
    the timings have the machine to themselves; cached per architecture and machine)."""
    from kdsearch.deploy.costs import search_costs

    log("== costs: parameters, weights, latency and throughput of each architecture (cached per machine)")
    data = {d.source: d for d in p.payload.data.values()}
    try:
        rows = search_costs(trained, data, p.teachers, trained.workdir, log=log)
    except KDSearchError as e:  # the search is whole without them: say why they are missing
        log(f"warning: costs not measured ({e}); `kdsearch costs {shlex.quote(str(folder))}` measures them later")
        return
    ResultStore(folder).append(COSTS, rows)
    log(f"costs: {folder / COSTS}")


def resolve_auto(spec: Spec) -> tuple[Spec, str]:
    """The spec with ``search.method: auto`` replaced by the method it stands for here, and why."""
    from kdsearch.search.methods import choose
    from kdsearch.search.space import Space

    space = Space(spec.search.space, spec.distill, spec.student_specs[0].train)
    gpu = spec.search.resources.gpu > 0 and spec.device != "cpu"
    method, why = choose(space, gpu, first_rung_steps(spec))
    race = spec.search.racing() or "off"  # auto races: resolved now, while the method still says auto
    if isinstance(race, Race):
        why += f"; racing seeds up to {race.max_seeds} where a choice is open"
    return dataclasses.replace(spec, search=dataclasses.replace(spec.search, method=method, race=race)), why


def first_rung_steps(spec: Spec) -> int | None:
    """The fewest optimizer steps halving's first rung (``GRACE`` epochs) would train in any
    cell, from each dataset's ``max_train_examples`` and each student's batch size (a dataset
    read whole counts as not known; QA counts questions, fewer than its windows)."""
    from kdsearch.search.methods import GRACE

    caps = [d.max_train_examples for d in spec.data_specs if d.max_train_examples]
    if not caps:
        return None
    return min(math.ceil(n / s.train.batch_size) * GRACE for n in caps for s in spec.student_specs)


def short_rung_warning(spec: Spec) -> str | None:
    """A line for a method that sets its rungs' epochs (halving) asked by name where its first
    rung trains under ``MIN_RUNG_STEPS`` optimizer steps: that rung likely ranks nothing."""
    from kdsearch.search.methods import GRACE, MIN_RUNG_STEPS

    steps = first_rung_steps(spec)
    if not METHODS[spec.search.method].sets_epochs or steps is None or steps >= MIN_RUNG_STEPS:
        return None
    return (f"warning: {spec.search.method}'s first rung ({GRACE} epoch) trains {steps} optimizer steps in the smallest "
            f"cell, under {MIN_RUNG_STEPS}: students that short often all predict one class, and then the rung ranks "
            "nothing (search.method: auto would run the grid here)")


def _remove_claimed(claimed: list[Path]) -> None:
    shutil.rmtree(claimed[0], ignore_errors=True)
    for parent in claimed[1:]:
        with contextlib.suppress(OSError):  # only while empty: another search may use it now
            parent.rmdir()


def interrupted_text(folder: Path, why: str) -> str:
    """What an interrupted search says: what stopped it, how far it got, the command that continues it."""
    trials = ResultStore(folder).trials()
    done = f"{len(trials)} trial(s) recorded" if not trials.empty else "no trial finished"
    return (f"search {folder.name} interrupted ({why}) before it finished, {done}; continue it with: "
            f"kdsearch run --resume {shlex.quote(str(folder))}")


class _StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM, caught while a search runs.

    Before the trials start a signal unwinds at once (KeyboardInterrupt). While Tune runs,
    the first one asks Tune to stop as on Ctrl-C (its SIGUSR1 handler: trials stop, the
    experiment state is saved, ``fit`` returns) and the search ends as interrupted, never as
    finished; a second one unwinds at once. Only the main thread can take signals: elsewhere
    (a test's worker thread) nothing is installed.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.in_fit = False
        self.saved: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "stopped"

    def _on_signal(self, sig: int, frame: Any) -> None:
        first = self.signal is None
        self.signal = self.signal or sig
        tune_stop = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if first and self.in_fit and callable(tune_stop) and tune_stop is not self._on_signal:
            # Tune's own lines here would point at Tuner.restore; the interrupted line says what to run
            logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
            tune_stop(sig, frame)
            return
        raise KeyboardInterrupt

    def install(self) -> None:
        """Take SIGINT and SIGTERM (again: whatever took them since, Ray's core among them)."""
        if threading.current_thread() is threading.main_thread():
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours decides; Tune's SIGUSR1 still stops it
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(sig, self._on_signal)
                self.saved.setdefault(sig, previous)

    def __enter__(self) -> _StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        self.saved = {}

    @contextlib.contextmanager
    def tune_stops_gracefully(self) -> Iterator[None]:
        self.in_fit = True
        try:
            yield
        finally:
            self.in_fit = False


def plan_lines(spec: Spec, p: Plan, folder: Path, concurrent: int) -> list[str]:
    """What the search will do, said once before the trials: method, budget, where things go."""
    s = spec.search
    # cells' spaces differ (t_hs and t_ll one checkpoint in some, DIST's beta moot with two classes)
    configs = max(METHODS[s.method].configs(space, s.budget) for space in p.spaces.values())
    base = " + the no-KD baseline" if s.baseline else ""
    race = s.racing()
    if race is not None:
        where = "at the end of each cell" if METHODS[s.method].races_at_end else "at each decision"
        base += (f"; racing {where}: the leader and the configs a {race.test} test cannot separate from it get more "
                 f"seeds, up to {race.max_seeds}")
        if race.budget is not None:
            base += (f", within {race.budget} trial-epochs a cell" +
                     (" (a round that does not fit: the leader and its nearest challengers)" if race.partial else ""))
    if s.confirm_seeds:
        base += f"; then the picks on {s.confirm_seeds} fresh seed(s), for the verdicts"
    return [
        f"== plan: {s.method}, at most {configs} config(s) per cell x {len(s.seeds)} paired seed(s){base}, {len(p.spaces)} cell(s); "
        f"{concurrent} trial(s) at a time, {s.resources.cpu:g} CPU / {s.resources.gpu:g} GPU each",
        f"   rows: {folder / TRIALS}; Tune's state and TensorBoard logs: {folder / TUNE_DIR} "
        f"(tensorboard --logdir {shlex.quote(str(folder / TUNE_DIR))})",
    ]


def _fusion(spec: Spec, p: Plan, log: Callable[..., None]) -> int:
    """Members per population, said with why and what trains alone."""
    import torch

    gpu = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    cap, why = fusion(spec, lambda: sample_students(p), gpu)
    if cap == 1:
        log(f"== populations: off, one student per trial ({why})")
        return 1
    log(f"== populations: up to {cap} (config, seed) points per trial as one fused model ({why}); "
        "members share a cell, its epochs and batch size")
    for reason in unfusable_reasons(spec):
        log(f"   some configs train alone: {reason}")
    return cap


def _searcher(spec: Spec, p: Plan, folder: Path, search_id: str, cap: int) -> PopulationSearcher:
    s = spec.search
    method = METHODS[s.method]
    # every cell searches the spec's one space: the budget is the same for all
    budget = method.budget(next(iter(p.spaces.values())), s.budget)
    inner = {
        cid: method.build(BuildContext(space, cid, f"{search_id}/{cid}", folder, s.search_seed, budget))
        for cid, space in p.spaces.items()
    }
    base = {cid: space.base for cid, space in p.spaces.items()}
    cells = CellSearcher(inner, s.seeds, s.metric, s.mode, baseline=BASELINE if s.baseline else None, budget=budget, base=base,
                         keys={cid: space.key for cid, space in p.spaces.items()}, race=s.racing(),
                         race_at_end=method.races_at_end)
    return PopulationSearcher(cells, cap, base)


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


class _StagingRace(logging.Filter):
    """Drops Tune's traceback for a snapshot of its state that lost a race with the next one.

    Tune copies its staging folder to the search folder in a background thread while the
    driver writes the next snapshot there (a searcher's state goes to a ``.<uuid>-tmp-`` file,
    then is renamed): the copy can list the temporary file and not find it (seen in CI on
    Ctrl-C). Nothing is lost: the snapshot that renamed it is copied next, and Tune's last one,
    at the end of every fit, is waited for. Any other failed save still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, FileNotFoundError) and "-tmp-" in str(exc)
                    and record.getMessage().startswith("Saving experiment state"))


def quiet_tune_logs() -> None:
    """Silence Tune's log lines that are noise here, once per process."""
    # a population reports its members' metrics as a list under ``members``; TensorBoard's
    # logger cannot chart a list and warns with the whole report: the scalars are charted
    logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.ERROR)
    state_log = logging.getLogger("ray.tune.execution.experiment_state")
    if not any(isinstance(f, _StagingRace) for f in state_log.filters):
        state_log.addFilter(_StagingRace())


def _run_config(spec: Spec, p: Plan, folder: Path, search_id: str, name: str, log: Callable[..., None]) -> Any:
    """Where Tune keeps its state (``name`` under the search folder), and the driver's callbacks."""
    s = spec.search
    quiet_tune_logs()
    callbacks = [
        ResultRecorder(str(folder), search_id, s.method, p.defaults, p.cell_info),
        ProgressPrinter(s.metric, s.mode, log, recorded_best(folder, s.metric, s.mode)),  # a resumed search's best too
        CheckpointJanitor(str(folder)),
    ]
    return tune.RunConfig(
        name=name,
        storage_path=str(folder),
        callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
        verbose=0,
    )


def _new_tuner(spec: Spec, p: Plan, folder: Path, search_id: str, trainable: Any, concurrent: int, cap: int,
               log: Callable[..., None]) -> Any:
    s = spec.search
    run_config = _run_config(spec, p, folder, search_id, TUNE_DIR, log)
    if METHODS[s.method].grid_points and s.racing() is None:  # a raced grid asks its configs through the searcher
        points = grid_points(spec, p)
        groups = populations(points, {cid: space.base for cid, space in p.spaces.items()}, cap)
        log(f"   full grid: {len(points)} (config, seed) points in {len(groups)} trials")
        return tune.Tuner(
            trainable,
            param_space={"members": tune.grid_search(groups)},
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
            search_alg=_searcher(spec, p, folder, search_id, cap),
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
    best = best_per_cell(trials, spec.search.metric, spec.search.mode, store.trials(CONFIRM))
    store.write_text(BEST_FILE, best_yaml(best, spec.search.metric))
    store.mark_finished()
    for line in summary_lines(trials, best, spec.search.metric, shlex.quote(str(folder))):
        log(line)
    log(f"results: {folder}/trials.parquet, epochs.parquet, {BEST_FILE}")
    if not (trials["status"] == "ok").any():
        first = trials["error"].dropna()
        why = f" (first error: {first.iloc[0]})" if len(first) else ""
        raise KDSearchError(f"every one of the {len(trials)} trials failed or diverged{why}; rows are in {folder}")
    return best
