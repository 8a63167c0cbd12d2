"""The Ray Tune trainable: one (cell, config, seed) trial on the KD core's trainer.

Large read-only inputs (prepared data, cached teacher logits) arrive once per node
through the object store as a :class:`Payload` (``tune.with_parameters``), never in a
closure. Each epoch reports its metrics with a checkpoint of the whole trainer state, so
a retried or resumed trial continues from its last finished epoch with the same result.
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
from kdsearch.models import build_model
from kdsearch.search.planning import Payload
from kdsearch.spec import with_knobs

STATE_FILE = "trainer.pt"
FINAL_FILE = "final.json"  # the last report, kept when a finished trial's weights are dropped


def trial_point(config: dict[str, Any]) -> dict[str, Any]:
    """The flat trial config; the full grid nests it under ``point`` (one grid axis)."""
    return config.get("point", config)


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


def _save(trainer: Trainer, folder: str, metrics: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    Path(folder, STATE_FILE).write_bytes(buf.getvalue())
    if trainer.finished:
        Path(folder, FINAL_FILE).write_text(json.dumps(metrics))


def _restore(trainer: Trainer) -> dict[str, Any] | bool:
    """Load the last checkpoint: True, or the final report of a finished trial, or False.

    A finished trial's checkpoint keeps only its final report (see ``CheckpointJanitor``);
    a search resumed from a state saved before the trial finished replays that report.
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as d:
        if Path(d, STATE_FILE).is_file():
            trainer.load_state_dict(torch.load(Path(d, STATE_FILE), map_location=trainer.device, weights_only=True))
            return True
        return json.loads(Path(d, FINAL_FILE).read_text())


def run_trial(config: dict[str, Any], payload: Payload) -> None:
    """Train one student for one (cell, config, seed) and report each epoch to Tune."""
    started = time.time()
    point = trial_point(config)
    plan = payload.cells[point["cell"]]
    seed = int(point["seed"])
    distill, train = with_knobs(plan.distill, plan.train, point)
    torch.set_num_threads(max(1, payload.threads))
    data = payload.data[plan.data_key]
    # the baseline (alpha = 0) still gets a teacher: its fidelity is the reference point
    teacher_key = knobs.teacher_key(distill.config())
    teacher = payload.teachers[plan.data_key][teacher_key]
    _inject_fault(point)
    torch.manual_seed(seed)
    model = build_model(plan.student, data.task, data.label_names, data.vocab_size, data.pad_token_id, data.max_length)
    first_step: list[float] = []

    def on_step(epoch: int, step: int, total: int) -> None:
        if not first_step:
            first_step.append(time.time())

    device = resolve_device(payload.device)
    trainer = Trainer(model, data, train, seed, distill, teacher, device, progress=on_step)
    resumed = _restore(trainer)
    if isinstance(resumed, dict):
        tune.report(resumed)
        return
    info = {
        "cell": plan.cell,
        "seed": seed,
        "teacher_name": payload.teacher_names[plan.data_key][teacher_key],
        "node": socket.gethostname(),
        "node_ip": _node_ip(),
        "node_id": _node_id(),
        "pid": os.getpid(),
        "resumed": bool(resumed),
        "device": device.type,
        "gpu_ids": _gpu_ids(),
        "cpus": _assigned("CPU"),
        "trial_start_ts": started,
    }
    try:
        for metrics in trainer.run():
            if trainer.finished and "test" in data.splits:
                metrics.update(trainer.evaluate("test"))
            metrics.update(info)
            metrics["status"] = "ok" if trainer.finished else "running"
            metrics["first_step_ts"] = first_step[0] if first_step else time.time()
            metrics["report_ts"] = time.time()
            with tempfile.TemporaryDirectory() as d:
                _save(trainer, d, metrics)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
    except Diverged as e:
        # the metric must be there (Tune's searchers and schedulers check for it); NaN makes
        # the searchers count the config as the worst, and no weights are kept
        tune.report({**info, "epoch": trainer.epoch, "diverged_at_step": e.step, "status": "diverged", "error": str(e),
                     payload.metric: math.nan, "report_ts": time.time()})


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
