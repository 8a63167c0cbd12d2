"""Faults on a real multi-node Ray on this machine: a head and worker nodes on 127.0.0.1.

Ray 2.60 refuses a second `ray start` node on loopback, so the nodes come from
``ray.cluster_utils.Cluster``. (A raising trial is tested in tests/search; a dead driver
in tests/cluster/test_submit.py.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from kdsearch.local_ray import single_machine
from kdsearch.search.runner import run_search
from kdsearch.spec import load_spec
from tests.conftest import SharedRay


@pytest.mark.slow
def test_worker_node_killed_mid_search(tiny_spec: Callable[..., Path], tmp_path: Path, shared_ray: SharedRay) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled

    shared_ray.stop()
    # token auth is on (RAY_AUTH_MODE=token): ray.init makes a token where there is none, Cluster
    # does not, and its GCS aborts without one (a fresh HOME, as this suite's, has none)
    ensure_token_if_auth_enabled()
    with single_machine():  # every node on 127.0.0.1, as Ray would otherwise not keep it
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        ray.init(address=cluster.address, log_to_driver=False)
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"} and len(ray.nodes()) == 3
        spec = load_spec(tiny_spec(name="nodekill", train=768, epochs=2, seeds="[0]"), ["search.max_failures=2"])
        out: dict = {}
        lines: list[str] = []
        runner = threading.Thread(target=lambda: out.setdefault("folder", run_search(spec, log=lambda *a, **k: lines.append(str(a)))))
        runner.start()
        victim, killed_at, before = None, None, 0
        deadline = time.time() + 300
        while victim is None and time.time() < deadline and runner.is_alive():
            found = list((tmp_path / "searches").glob("nodekill-*/epochs.parquet"))
            if found:
                epochs = pd.read_parquet(found[0])
                done = set(pd.read_parquet(found[0].with_name("trials.parquet")).trial_id) if found[0].with_name("trials.parquet").exists() else set()
                mid = epochs[(epochs.epoch == 1) & ~epochs.trial_id.isin(done)]
                mid = mid[~mid.trial_id.isin(epochs[epochs.epoch == 2].trial_id)]
                if len(mid):
                    victim = mid.iloc[0]
                    before = len(done)
                    node = next(w for w in workers if w.node_id == victim.node_id)
                    killed_at = time.time()
                    cluster.remove_node(node, allow_graceful=False)  # its raylet and workers, killed
                    break
            time.sleep(0.1)
        assert victim is not None, "no trial was caught between its epochs"
        runner.join(timeout=400)
        assert not runner.is_alive()
        folder = out["folder"]
        trials = pd.read_parquet(folder / "trials.parquet")
        epochs = pd.read_parquet(folder / "epochs.parquet")
        # every trial's row is there, finished: baseline + stage 0 (t_hs, t_ll) + stage 1 (mse) + stage 2 (same)
        assert len(trials) == 5 and (trials.status == "ok").all(), trials[["stage", "status", "error"]]
        row = trials[trials.trial_id == victim.trial_id].iloc[0]
        assert row.failures >= 1  # it was interrupted ...
        last = epochs[(epochs.trial_id == victim.trial_id) & (epochs.epoch == 2)].iloc[0]
        assert bool(last.resumed) and last.node_id != victim.node_id  # ... and went on from its checkpoint elsewhere
        assert not epochs.duplicated(["trial_id", "epoch"]).any()
        print(f"node kill: {before} trial rows before, {len(trials)} after; the trial resumed "
              f"{last.report_ts - killed_at:.1f} s after the kill (its epoch 2 report)")
    finally:
        ray.shutdown()
        cluster.shutdown()
