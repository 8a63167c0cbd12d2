"""Ray on this machine alone, with every server it starts bound to 127.0.0.1.

Ray 2.60 binds its servers (the GCS, the raylet, each worker's gRPC port, the dashboard and
runtime-env agents) to the node's IP address. Asked for ``127.0.0.1``, though, ``ray.init``
and ``ray start`` replace a loopback address with the machine's reachable one, so they listen
on the network, unless multi-node clusters are turned off
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; on Linux that setting changes only how Ray picks the
node's IP). A runtime for one machine needs no other node, so kdsearch turns them off for it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

LOOPBACK = "127.0.0.1"
SINGLE_MACHINE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

__all__ = ["LOOPBACK", "SINGLE_MACHINE_ENV", "single_machine", "start_local_ray"]


@contextlib.contextmanager
def single_machine() -> Iterator[None]:
    """Within it, Ray takes 127.0.0.1 for this node's IP, here and in the processes it starts.

    Ray reads the setting when it is imported, so the flag already read is switched too; both
    are restored on exit (nodes started inside keep it in their environment).
    """
    from ray._private import ray_constants

    saved_env = {k: os.environ.get(k) for k in SINGLE_MACHINE_ENV}
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(SINGLE_MACHINE_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_local_ray(**init_kwargs: Any) -> None:
    """Start a new Ray in this process (``ray.init`` arguments), listening on 127.0.0.1 only."""
    import ray

    with single_machine():
        ray.init(address="local", _node_ip_address=LOOPBACK, **init_kwargs)
