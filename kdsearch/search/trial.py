"""The Ray Tune trainable: one Tune trial trains the (cell, config, seed) points it is given.

A trial's config is ``{"members": [point, ...]}`` (see :mod:`kdsearch.search.populations`):
one member trains on the single-trial Trainer, several as one fused
:class:`~kdsearch.distill.population.Population`, whose report carries each member's
metrics under ``members``. Large read-only inputs (prepared data, cached teacher logits)
arrive once per node through the object store as a :class:`Payload`
(``tune.with_parameters``), never in a closure. Each epoch reports with a checkpoint of
the whole training state, so a retried or resumed trial continues from its last finished
epoch with the same result.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from kdsearch import knobs
from kdsearch.distill.trainer import Diverged, Trainer, resolve_device
from kdsearch.models import build_for
from kdsearch.distill.population import Population
from kdsearch.search.planning import Payload, population_members
from kdsearch.spec import with_knobs

STATE_FILE = "trainer.pt"
FINAL_FILE = "final.json"  # the last report, kept when a finished trial's weights are dropped
MEMBERS_FILE = "members.json"  # a population's latest report per member (who was frozen, and why)


def trial_points(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The (cell, config, seed) points a trial trains."""
    return list(config["members"])


def _inject_fault(point: dict[str, Any]) -> None:
    """Test hook: ``KDSEARCH_FAULT="raise:alpha=1.0,seed=0"`` makes matching trials raise.

    ``raise_once`` raises only the first time per trial (a marker file under
    ``KDSEARCH_FAULT_DIR``), to test retries that then succeed.
    """
    spec = os.environ.get("KDSEARCH_FAULT")
    if not spec:
        return
    kind, _, conds = spec.partition(":")
    for cond in filter(None, conds.split(",")):
        k, _, v = cond.partition("=")
        if str(point.get(k)) != v and not (_is_float(v) and _is_float(point.get(k)) and float(v) == float(point[k])):
            return
    if kind == "raise_once":
        marker = Path(os.environ.get("KDSEARCH_FAULT_DIR", tempfile.gettempdir())) / f"fault-{tune.get_context().get_trial_id()}"
        if marker.exists():
            return
        marker.touch()
    raise RuntimeError(f"injected fault ({spec}) in trial {point}")


def _is_float(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _report(state: dict[str, Any], finished: bool, metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Report ``metrics`` with a checkpoint: the training ``state`` (and ``extra`` files)."""
    with tempfile.TemporaryDirectory() as d:
        buf = io.BytesIO()
        torch.save(state, buf)
        Path(d, STATE_FILE).write_bytes(buf.getvalue())
        for name, content in (extra or {}).items():
            Path(d, name).write_text(json.dumps(content))
        if finished:
            Path(d, FINAL_FILE).write_text(json.dumps(metrics))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _restore(load: Any, device: torch.device, extra: str | None = None) -> Any:
    """Load the last checkpoint into ``load``: True (or the ``extra`` file's content), the
    final report of a finished trial, or False when there is none.

    A finished trial's checkpoint keeps only its final report (see ``CheckpointJanitor``);
    a search resumed from a state saved before the trial finished replays that report.
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as d:
        if Path(d, STATE_FILE).is_file():
            load(torch.load(Path(d, STATE_FILE), map_location=device, weights_only=True))
            return json.loads(Path(d, extra).read_text()) if extra else True
        return {"final": json.loads(Path(d, FINAL_FILE).read_text())}


def run_trial(config: dict[str, Any], payload: Payload) -> None:
    """Train the trial's points, one alone or several as a population, reporting each epoch."""
    points = trial_points(config)
    for point in points:
        _inject_fault(point)
    torch.set_num_threads(max(1, payload.threads))
    if len(points) == 1:
        _run_single(points[0], payload)
    else:
        _run_population(points, payload)


def _run_single(point: dict[str, Any], payload: Payload) -> None:
    """Train one student for one (cell, config, seed)."""
    started = time.time()
    plan = payload.cells[point["cell"]]
    seed = int(point["seed"])
    distill, train = with_knobs(plan.distill, plan.train, point)
    data = payload.data[plan.data_key]
    # the baseline (alpha = 0) still gets a teacher: its fidelity is the reference point
    teacher_key = knobs.teacher_key(distill.config())
    teacher = payload.teachers[plan.data_key][teacher_key]
    torch.manual_seed(seed)
    model = build_for(plan.student, data, plan.dropout)
    first_step, on_step = _first_step()
    device = resolve_device(payload.device)
    trainer = Trainer(model, data, train, seed, distill, teacher, device, progress=on_step)
    resumed = _restore(trainer.load_state_dict, trainer.device)
    if isinstance(resumed, dict):
        tune.report(resumed["final"])
        return
    info = {
        "cell": plan.cell,
        "seed": seed,
        "teacher_name": payload.teacher_names[plan.data_key][teacher_key],
        **_where(device, started, bool(resumed)),
    }
    try:
        for metrics in trainer.run():
            if trainer.finished and "test" in data.splits:
                metrics.update(trainer.evaluate("test"))
            metrics.update(info)
            metrics["status"] = "ok" if trainer.finished else "running"
            metrics["first_step_ts"] = first_step[0] if first_step else time.time()
            metrics["report_ts"] = time.time()
            _report(trainer.state_dict(), trainer.finished, metrics)
    except Diverged as e:
        # the metric must be there (Tune's searchers and schedulers check for it); NaN makes
        # the searchers count the config as the worst, and no weights are kept
        tune.report({**info, "epoch": trainer.epoch, "diverged_at_step": e.step, "status": "diverged", "error": str(e),
                     payload.metric: math.nan, "report_ts": time.time()})


def _first_step() -> tuple[list[float], Any]:
    """A list that gets the time of the first training step, and the progress hook that fills it."""
    first: list[float] = []

    def on_step(epoch: int, step: int, total: int) -> None:
        if not first:
            first.append(time.time())

    return first, on_step


def _where(device: torch.device, started: float, resumed: bool) -> dict[str, Any]:
    """Where and how a trial runs: node, process, device, what Ray assigned."""
    return {
        "node": socket.gethostname(),
        "node_ip": _node_ip(),
        "node_id": _node_id(),
        "pid": os.getpid(),
        "resumed": resumed,
        "device": device.type,
        "gpu_ids": _gpu_ids(),
        "cpus": _assigned("CPU"),
        "trial_start_ts": started,
    }


def _best(values: list[float], mode: str) -> float:
    finite = [v for v in values if v == v]
    return (max(finite) if mode == "max" else min(finite)) if finite else math.nan


def _run_population(points: list[dict[str, Any]], payload: Payload) -> None:
    """Train several (config, seed) points of one cell as one fused population.

    The report carries each member's latest metrics under ``members`` (status ``running``,
    ``ok``, or ``diverged`` with its step), and the searched metric as the best of them
    (Tune's searchers and schedulers look for it). With ASHA, members below a rung's cut
    are frozen inside the population: successive halving without new processes.
    """
    started = time.time()
    plan = payload.cells[points[0]["cell"]]
    data = payload.data[plan.data_key]
    device = resolve_device(payload.device)
    models, members = population_members(points, plan, data, payload.teachers[plan.data_key])
    names = [payload.teacher_names[plan.data_key][knobs.teacher_key(m.distill.config())] for m in members]
    first_step, on_step = _first_step()
    pop = Population(models, data, members, device, progress=on_step)
    resumed = _restore(pop.load_state_dict, pop.device, MEMBERS_FILE)
    if isinstance(resumed, dict):
        tune.report(resumed["final"])
        return
    latest: list[dict[str, Any]] = resumed if isinstance(resumed, list) else [{} for _ in points]
    where = _where(device, started, bool(resumed))
    k_all = len(points)
    for metrics in pop.run():
        diverged = pop.diverged()
        for k, m in enumerate(metrics):
            if latest[k].get("status") in ("ok", "diverged"):
                continue  # frozen earlier: its report stands
            info = {"cell": plan.cell, "seed": members[k].seed, "teacher_name": names[k], **where}
            if k in diverged:
                latest[k] = {**info, "epoch": pop.epoch - 1, "status": "diverged", "diverged_at_step": diverged[k],
                             "error": f"loss is nan at step {diverged[k]}", payload.metric: math.nan}
            else:
                latest[k] = {**m, **info, "status": "running"}
        if payload.asha is not None:
            _halve(pop, latest, payload)
        done = pop.finished or not bool(pop.active.any())
        for k in range(k_all):
            if latest[k]["status"] == "running" and (done or not bool(pop.active[k])):
                latest[k]["status"] = "ok"
        if done and "test" in data.splits:
            for k, test in enumerate(pop.evaluate("test")):
                if latest[k]["status"] == "ok":
                    latest[k].update(test)
        now = time.time()
        for m in latest:
            m["first_step_ts"] = first_step[0] if first_step else now
            m["report_ts"] = now
        result = {"epoch": pop.epoch, "members": latest, "status": "ok" if done else "running", **where,
                  payload.metric: _best([float(m.get(payload.metric, math.nan)) for m in latest], payload.mode),
                  "first_step_ts": first_step[0] if first_step else now, "report_ts": now}
        _report(pop.state_dict(), done, result, {MEMBERS_FILE: latest})


def _halve(pop: Population, latest: list[dict[str, Any]], payload: Payload) -> None:
    """At a rung (grace_period x reduction_factor^i epochs), keep the best 1/reduction_factor
    of the members still training; freeze the rest with their results as they stand."""
    asha = payload.asha
    assert asha is not None
    rungs, r = set(), float(asha["grace_period"])
    while r < asha["max_t"]:
        rungs.add(int(r))
        r *= asha["reduction_factor"]
    if pop.epoch not in rungs:
        return
    running = [k for k, m in enumerate(latest) if m.get("status") == "running" and bool(pop.active[k])]
    keep = math.ceil(len(running) / asha["reduction_factor"])
    ranked = sorted(running, key=lambda k: latest[k][payload.metric], reverse=payload.mode == "max")
    pop.freeze(ranked[keep:])


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - informative only
        return ""


def _assigned(resource: str) -> float | None:
    """How much of ``resource`` Ray reserved for this trial (None outside a Ray worker)."""
    try:
        import ray

        return float(ray.get_runtime_context().get_assigned_resources().get(resource, 0.0))
    except Exception:  # noqa: BLE001 - informative only
        return None


def _gpu_ids() -> str:
    """The GPUs Ray assigned this trial ("0,1"; "" for none), whether or not torch can use them."""
    try:
        import ray

        return ",".join(str(g) for g in ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - outside a Ray worker there are none
        return ""


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - the address is informative only
        return "127.0.0.1"
