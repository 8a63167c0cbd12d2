"""The files in cluster/ are valid for their tools and keep the secure defaults."""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def test_launcher_yaml_passes_rays_own_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "launcher-aws-gpu.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` runs first; raises on a bad field
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(t["max_workers"] >= 1 and t["node_config"]["InstanceType"] for t in gpu)
    assert config["docker"]["image"].startswith("rayproject/ray:") and config["docker"]["image"].endswith("-gpu")
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"] if "ray start" in c)


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _check_ray_cluster_spec(spec: dict) -> None:
    assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert "rayStartParams" in spec["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
    for c in _containers(spec):
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]  # never the token itself


def test_kuberay_raycluster() -> None:
    doc = yaml.safe_load((CLUSTER / "kuberay-raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    assert doc["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    _check_ray_cluster_spec(doc["spec"])


def test_kuberay_rayjob() -> None:
    doc = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    assert "python -m kdsearch run" in doc["spec"]["entrypoint"]
    _check_ray_cluster_spec(doc["spec"]["rayClusterSpec"])


def test_the_local_head_waits_for_its_job_agent_and_says_why_it_never_came(tmp_path: Path) -> None:
    """`local_cluster.py start` returns once the job agent listens; a head whose agent never came is
    started again, named by the agent log's last error (without it every submit says "No available agent")."""
    import socket
    import sys

    sys.path.insert(0, str(CLUSTER))
    try:
        import local_cluster
    finally:
        sys.path.remove(str(CLUSTER))
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert local_cluster._wait_for_agent(listening.getsockname()[1], tmp_path, timeout_s=5) is None
    port = local_cluster._free_port()  # bound a moment ago, nothing listens on it now
    assert local_cluster._wait_for_agent(port, tmp_path, timeout_s=1) == f"nothing listens on its port {port} after 1 s"
    logs = tmp_path / "session_2026-12-04_08-05-00_1" / "logs"
    logs.mkdir(parents=True)
    (logs / "dashboard_agent.log").write_text("INFO agent.py:177 -- starting\n"
                                              "ERROR http_server_agent.py:90 -- OSError: [Errno 98] address already in use\n"
                                              "INFO agent.py:300 -- exiting\n")
    assert local_cluster._wait_for_agent(port, tmp_path, timeout_s=1) == (
        "ERROR http_server_agent.py:90 -- OSError: [Errno 98] address already in use")
