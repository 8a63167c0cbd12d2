"""`kdsearch submit` to a real local Ray head (dashboard + job server on 127.0.0.1, token auth)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from kdsearch.results.store import ResultStore

from tests.conftest import is_loopback, listening_sockets

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--set", "data.max_train_examples=384", "--set", "data.max_eval_examples=128", "--set", "data.max_length=32",
    "--set", "data.tokenizer.vocab_size=1000", "--set", "teachers.model=xs", "--set", "teachers.train.epochs=2",
    "--set", "search.space={teacher: [t_hs, t_ll], loss: [ce, mse]}", "--set", "search.seeds=[0]",
    "--set", "search.confirm_seeds=0",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def head() -> Iterator[dict]:
    import shutil
    import tempfile

    # short: Ray's unix sockets live under it, and their paths are limited to ~107 bytes
    state = Path(tempfile.mkdtemp(prefix="kdc-", dir="/tmp"))
    port = free_port()
    r = run("cluster/local_cluster.py", "start", "--state", str(state), "--cpus", "2", "--dashboard-port", str(port))
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads((state / "cluster.json").read_text())
    yield info
    r = run("cluster/local_cluster.py", "stop", "--state", str(state))
    assert r.returncode == 0, r.stderr
    assert not [p for p in info["pids"] if psutil.pid_exists(p)], "the head's processes outlived stop"
    shutil.rmtree(state, ignore_errors=True)


def test_wrong_token_is_one_line(head: dict) -> None:
    r = run("-m", "kdsearch", "jobs", "list", "--address", head["jobs_address"], env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"kdsearch: error: the Ray cluster at {head['jobs_address']} refused the auth token "
        "(is it this cluster's? `ray get-auth-token` on the head)"
    ]


def test_missing_token_is_one_line(tmp_path: Path) -> None:
    env = {"RAY_AUTH_TOKEN": "", "RAY_AUTH_TOKEN_PATH": "", "HOME": str(tmp_path)}
    r = run("-m", "kdsearch", "jobs", "list", "--address", "http://127.0.0.1:1", env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "no Ray auth token" in r.stderr


def test_unreachable_head_at_submit(tmp_path: Path) -> None:
    # a port held bound but never listening: connections are refused, and no other process (a Ray
    # worker of the shared test cluster) can take it between choosing it and the submit
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        r = run("-m", "kdsearch", "submit", "search_spaces/quick.yaml", "--address", f"http://127.0.0.1:{port}",
                "--set", f"search.storage={tmp_path}", env={"RAY_AUTH_TOKEN": "0" * 32})  # any token: none is asked
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Ray cluster's job server" in lines[0], lines


@pytest.mark.slow
def test_submit_kill_the_driver_then_resume(head: dict, tmp_path: Path) -> None:
    """A search submitted to a local head: listed, on loopback while it runs, its driver
    killed mid-search, then finished by `submit --resume` with one row per (config, seed)."""
    # everything the head serves is on loopback
    assert head["jobs_address"].startswith("http://127.0.0.1:") and head["gcs_address"].startswith("127.0.0.1:")
    storage, wd = tmp_path / "searches", tmp_path / "wd"
    args = ["search_spaces/quick.yaml", "--address", head["jobs_address"], *TINY, "--set", f"search.storage={storage}",
            "--set", f"workdir={wd}", "--set", "data.max_train_examples=768", "--set", "student.train.epochs=2"]
    submitted = time.time()
    r = run("-m", "kdsearch", "submit", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = r.stdout.split()[1]
    deadline, rows = time.time() + 300, 0
    while time.time() < deadline:
        found = list(storage.glob("quick-*/trials.parquet"))
        rows = len(ResultStore(found[0].parent).trials()) if found else 0  # the driver rewrites it meanwhile
        if rows >= 2:
            break
        time.sleep(0.5)
    # kill at once: greedy's second stage (one more trial, ~10 s) must not finish before the kill,
    # so the slower checks (a `jobs list` subprocess) wait until after it
    (folder,) = storage.glob("quick-*")
    # the head's servers, agents, workers and the job's driver all listen on loopback only, mid-search
    sockets = listening_sockets(set(head["pids"]))
    drivers = [
        p for p in psutil.process_iter(["pid", "name", "cmdline"])
        if "kdsearch run spec.yaml" in " ".join(p.info["cmdline"] or []) and p.info["name"].startswith("python")
    ]
    assert len(drivers) == 1, drivers
    drivers[0].kill()  # kill -9 the job's driver mid-search
    assert {"gcs_server", "raylet"} <= {name for _, _, name in sockets}, sockets
    assert [s for s in sockets if not is_loopback(s[0])] == []
    first = pd.read_parquet(folder / "epochs.parquet").trial_start_ts.min()
    print(f"submit-to-first-trial latency: {first - submitted:.1f} s")
    r = run("-m", "kdsearch", "jobs", "list", "--address", head["jobs_address"])
    assert r.returncode == 0 and job_id in r.stdout
    from kdsearch import jobs

    assert jobs.wait(job_id, head["jobs_address"], timeout_s=120, poll_s=1) == "FAILED"
    before = pd.read_parquet(folder / "trials.parquet")
    assert 2 <= len(before) < 4
    r = run("-m", "kdsearch", "submit", *args, "--resume", str(folder), "--wait", "500", timeout=560)
    assert r.returncode == 0 and "SUCCEEDED" in r.stdout, r.stdout + r.stderr
    assert f"results in {folder}\n" in r.stdout  # the folder it finishes, not a new one's pattern
    resumed_id = r.stdout.split()[1]
    after = pd.read_parquet(folder / "trials.parquet")
    ok = after[after.status == "ok"]
    # baseline + t_hs + t_ll + mse: exactly one finished row per (config, seed)
    assert len(ok) == 4 and len(after) == 4 and not ok.duplicated(["config_key", "seed"]).any()
    assert set(before.trial_id) <= set(after.trial_id)
    print(f"driver kill: {len(before)} trial rows before, {len(after)} after resume")
    # its logs are readable, and no token is in them or in the results
    r = run("-m", "kdsearch", "jobs", "logs", resumed_id, "--address", head["jobs_address"])
    assert r.returncode == 0 and "search finished" in r.stdout
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    assert token not in r.stdout
    assert all(token not in p.read_text(errors="ignore") for p in folder.rglob("*") if p.is_file() and p.stat().st_size < 5e6)
