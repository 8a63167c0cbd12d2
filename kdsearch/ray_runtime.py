"""Starting or joining Ray, and checking a trial's resource request against its nodes.

A request no node can hold does not fail in Ray: the trial waits forever with an
"insufficient resources" warning. So every request is checked first, against this machine
before an embedded Ray starts, or against the cluster's nodes once connected, and always
before data or teachers are prepared.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from kdsearch.errors import KDSearchError, SpecError
from kdsearch.local_ray import start_local_ray
from kdsearch.spec import ResourcesSpec, Spec

GIB = 2**30


@dataclass(frozen=True)
class NodeResources:
    """What one node offers trials: CPUs, GPUs, and memory in bytes."""

    cpu: float
    gpu: float
    memory: float


def torch_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def this_machine() -> NodeResources:
    """What the embedded Ray of ``init_ray(None)`` will offer (Ray's own memory rule)."""
    from ray._private.utils import estimate_available_memory, resolve_object_store_memory

    available = estimate_available_memory()
    return NodeResources(float(os.cpu_count() or 1), float(torch_gpus()), float(available - resolve_object_store_memory(available)))


def cluster_nodes() -> list[NodeResources]:
    """The alive nodes of the Ray this process is connected to."""
    import ray

    out = []
    for node in ray.nodes():
        if node.get("Alive"):
            r = node.get("Resources", {})
            out.append(NodeResources(float(r.get("CPU", 0)), float(r.get("GPU", 0)), float(r.get("memory", 0))))
    return out


def check_resources(resources: ResourcesSpec, nodes: list[NodeResources], where: str) -> None:
    """Refuse a per-trial request that no single node of ``nodes`` can hold.

    ``where`` names them in the message: "this machine" or "the cluster's largest node".
    """
    wants = (("cpu", resources.cpu, "CPU", 1.0), ("gpu", resources.gpu, "GPU", 1.0), ("memory", resources.memory, "GiB of memory", GIB))
    for field, want, unit, scale in wants:
        if want <= 0:
            continue
        have = max((getattr(n, field) / scale for n in nodes), default=0.0)
        if want > have + 1e-9:
            if have == 0 and field == "gpu":
                where = "this machine" if where == "this machine" else "the cluster"
                raise SpecError(f"search.resources.gpu: {want:g} GPU per trial asked, but {where} has no GPU")
            raise SpecError(f"search.resources.{field}: {want:g} {unit} per trial asked, but {where} has {have:.3g}")


def check_device(spec: Spec, local: bool) -> None:
    """``device: cuda`` needs CUDA where the trials run: here, or on GPUs Ray hands out."""
    if spec.device != "cuda":
        return
    if local:
        from kdsearch.distill.trainer import resolve_device

        resolve_device("cuda")  # its one-line error when torch sees no GPU
    elif spec.search.resources.gpu <= 0:
        raise SpecError("device: cuda needs search.resources.gpu > 0, or Ray gives trials no GPU")


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
