#!/usr/bin/env python3
"""A local development Ray cluster: one head on 127.0.0.1 with dashboard, job server and
token auth. It is stopped by its own process ids, never by ``ray stop`` (which would end
every Ray on the machine).

    python cluster/local_cluster.py start [--cpus N] [--dashboard-port 8265] [--state DIR]
    python cluster/local_cluster.py status [--state DIR]
    python cluster/local_cluster.py stop [--state DIR]

``start`` prints the job server address for ``kdsearch submit --address``. The token is
Ray's (``~/.ray/auth_token``, created by ``ray get-auth-token --generate`` when missing);
it is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from kdsearch.local_ray import SINGLE_MACHINE_ENV

DEFAULT_STATE = Path(os.environ.get("KDSEARCH_CLUSTER_STATE", Path.home() / ".kdsearch-cluster"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


def _env() -> dict[str, str]:
    # jobs run `python -m kdsearch ...` on the head: it must be this environment's python
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    # without it Ray swaps --node-ip-address=127.0.0.1 for the machine's address and binds its
    # servers there (kdsearch/local_ray.py says why); a one-machine cluster needs no other node
    return {**os.environ, "PATH": path, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"), **SINGLE_MACHINE_ENV}


def _own_pids(temp_dir: Path, gcs_port: int) -> list[int]:
    """Processes of this cluster: their command line names its temp dir or its GCS port."""
    import psutil

    mine = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if str(temp_dir) in cmd or ("ray" in cmd and f":{gcs_port} " in cmd + " "):
            mine.append(p.info["pid"])
    return mine


def start(state: Path, cpus: int | None, dashboard_port: int, attempts: int = 2) -> dict:
    if (state / "cluster.json").is_file():
        info = json.loads((state / "cluster.json").read_text())
        if _alive(info["pids"]):
            raise SystemExit(f"local_cluster: already running ({info['jobs_address']}); stop it first")
    state.mkdir(parents=True, exist_ok=True)
    if _env()["RAY_AUTH_MODE"] == "token":
        subprocess.run([*_ray(), "get-auth-token", "--generate"], env=_env(), check=True, stdout=subprocess.DEVNULL)
    problem = ""
    for attempt in range(attempts):
        if attempt:
            print(f"local_cluster: the head's job agent did not start ({problem}); starting the head again", file=sys.stderr)
        info, agent_port = _start_head(state, cpus, dashboard_port)
        _wait_for_jobs(info["jobs_address"])
        # the job server answers before the head's job agent is up, and an agent that could not
        # start (a port Ray chose for it taken meanwhile) never comes: every submit would then
        # fail with "No available agent" (seen once in CI). Wait for it; a head without one is
        # stopped and started again on fresh ports.
        problem = _wait_for_agent(agent_port, Path(info["temp_dir"]))
        if problem is None:
            return info
        stop(state)
    raise SystemExit(f"local_cluster: the head's job agent did not start ({problem})")


def _start_head(state: Path, cpus: int | None, dashboard_port: int) -> tuple[dict, int]:
    """``ray start --head`` on loopback; the cluster's info (written to ``cluster.json``) and the agent's port."""
    temp_dir = state / "ray"
    gcs_port, agent_port = _free_port(), _free_port()
    cmd = [
        *_ray(), "start", "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        # fixed defaults (52365, 10001) collide with another Ray, or one still shutting down
        f"--dashboard-agent-listen-port={agent_port}",
        f"--ray-client-server-port={_free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    if cpus:
        cmd.append(f"--num-cpus={cpus}")
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines() or ["(no output)"]
        # the exception's own line names the problem; Ray adds advice after it
        errors = [line for line in lines if re.match(r"\w+(Error|Exception): ", line)]
        raise SystemExit(f"local_cluster: ray start failed: {(errors or lines)[-1]}")
    info = {
        "gcs_address": f"127.0.0.1:{gcs_port}",
        "jobs_address": f"http://127.0.0.1:{dashboard_port}",
        "temp_dir": str(temp_dir),
        "pids": _own_pids(temp_dir, gcs_port),
        "started": time.time(),
    }
    (state / "cluster.json").write_text(json.dumps(info, indent=1))
    return info, agent_port


def _wait_for_agent(port: int, temp_dir: Path, timeout_s: float = 90) -> str | None:
    """None once the job agent listens on ``port``; else what its log last said (or that it said nothing)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return None
        except OSError:
            time.sleep(0.5)
    logs = sorted(temp_dir.glob("session_*/logs/dashboard_agent.*"))
    said = [line for f in logs for line in f.read_text(errors="replace").splitlines() if "Error" in line or "rror:" in line]
    return said[-1].strip() if said else f"nothing listens on its port {port} after {timeout_s:.0f} s"


def _wait_for_jobs(address: str, timeout_s: float = 60) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            return
        except Exception as e:  # noqa: BLE001 - 401 means it is up and wants the token
            if getattr(e, "code", None) in (401, 403):
                return
            time.sleep(0.5)
    raise SystemExit(f"local_cluster: the job server at {address} did not answer in {timeout_s:.0f} s")


def _alive(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p)]


def stop(state: Path, timeout_s: float = 15) -> int:
    f = state / "cluster.json"
    if not f.is_file():
        print("local_cluster: not running")
        return 0
    info = json.loads(f.read_text())
    # processes started after `start` (workers, the job's driver) carry the temp dir too
    import psutil

    gcs_port = int(info["gcs_address"].rsplit(":", 1)[1])
    pids = set(info["pids"]) | set(_own_pids(Path(info["temp_dir"]), gcs_port))
    # agents rename themselves (ray::DashboardAgent): find them as children, before
    # their raylet dies and they are orphaned
    for pid in list(pids):
        try:
            pids |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    # the GCS last, as `ray stop` does: stopped first, it leaves the raylet and monitor
    # waiting for it until the grace period runs out (20 s against 2 s, measured)
    gcs = {pid for pid in pids if _name(pid) == "gcs_server"}
    for group in (sorted(pids - gcs), sorted(gcs)):
        _terminate(group, timeout_s)
    f.unlink()
    return len(pids)


def _name(pid: int) -> str:
    import psutil

    try:
        return psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        return ""


def _terminate(pids: list[int], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL what is left after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _alive(pids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + timeout_s
        while _alive(pids) and time.time() < deadline:
            time.sleep(0.2)
        if not _alive(pids):
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--state", type=Path, default=DEFAULT_STATE, help="where the cluster's pids and temp dir live")
    p.add_argument("--cpus", type=int, default=None)
    p.add_argument("--dashboard-port", type=int, default=8265)
    a = p.parse_args(argv)
    if a.action == "start":
        info = start(a.state, a.cpus, a.dashboard_port)
        print(f"head on 127.0.0.1: jobs {info['jobs_address']}, GCS {info['gcs_address']}, {len(info['pids'])} processes")
        print(f"submit with: kdsearch submit SPEC --address {info['jobs_address']}")
    elif a.action == "stop":
        print(f"stopped {stop(a.state)} processes")
    else:
        f = a.state / "cluster.json"
        if not f.is_file():
            print("not running")
            return 1
        info = json.loads(f.read_text())
        alive = _alive(info["pids"])
        print(f"{'running' if alive else 'dead'}: jobs {info['jobs_address']}, {len(alive)}/{len(info['pids'])} processes alive")
        return 0 if alive else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
