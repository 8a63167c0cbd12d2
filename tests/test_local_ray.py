"""The Ray kdsearch starts on one machine listens on 127.0.0.1 only."""

from __future__ import annotations

import os

import pytest

from kdsearch.local_ray import SINGLE_MACHINE_ENV
from kdsearch.ray_runtime import init_ray
from tests.conftest import SharedRay, is_loopback, listening_sockets


def test_embedded_ray_binds_every_server_to_loopback(monkeypatch: pytest.MonkeyPatch, shared_ray: SharedRay) -> None:
    import ray
    from ray._private import ray_constants

    shared_ray.stop()  # kdsearch's own start is what is checked
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert init_ray(None)  # what `kdsearch run` without --address does
    try:
        assert ray.get(ray.remote(lambda: os.getpid()).remote()) != os.getpid()  # a worker is up
        sockets = listening_sockets({os.getpid()})
        names = {name for _, _, name in sockets}
        assert {"gcs_server", "raylet"} <= names, sockets  # not vacuous: Ray's own servers are in it
        assert [s for s in sockets if not is_loopback(s[0])] == []
        assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    finally:
        ray.shutdown()
    # the switch is this process's only while Ray starts
    assert ray_constants.ENABLE_RAY_CLUSTER and not set(SINGLE_MACHINE_ENV) & set(os.environ)


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")
