"""Searches as Ray Jobs: submit, list, status, logs, stop (the Jobs API, ``ray[default]``).

A submitted job runs ``python -m kdsearch run spec.yaml --address auto`` on the cluster's
head. The runtime env carries the spec (its own small working dir) and the ``kdsearch``
package (``py_modules``: the code and the built-in data, never a virtual environment,
caches or results); the cluster's nodes provide the dependencies.

Ray 2.60 turns token authentication on; the Jobs SDK then needs ``RAY_AUTH_MODE=token``
and the token (``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, or
``~/.ray/auth_token``). This module sets the mode for the user and turns a missing or
refused token into one line. The token itself is never printed or written anywhere.
Ray reads the mode when it is imported, so ``kdsearch.cli.main`` sets it first; a
library user sets ``RAY_AUTH_MODE`` before importing ray.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kdsearch
from kdsearch.errors import KDSearchError
from kdsearch.spec import Spec, dump_spec

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def token_source() -> str | None:
    """Where the Ray auth token will come from, without reading it; None when nowhere."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH ({path})" if Path(path).is_file() and Path(path).stat().st_size else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() and default.stat().st_size else None


def _auth_env() -> None:
    mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
    if mode == "token" and token_source() is None:
        raise KDSearchError(
            "no Ray auth token: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in "
            "~/.ray/auth_token (`ray get-auth-token` on the head prints it); RAY_AUTH_MODE=disabled for a cluster without auth"
        )


def client(address: str | None = None) -> Any:
    """A JobSubmissionClient for ``address`` (default ``$RAY_JOBS_ADDRESS`` or 127.0.0.1:8265)."""
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_JOBS_ADDRESS") or DEFAULT_ADDRESS
    _auth_env()
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - connection, HTTP and auth errors all end here
        raise KDSearchError(_explain(e, address)) from None


def _explain(e: Exception, address: str) -> str:
    text = " ".join(str(e).split())
    low = text.lower()
    if "401" in text or "403" in text or "unauthorized" in low or "authentication" in low or "token" in low:
        return f"the Ray cluster at {address} refused the auth token (is it this cluster's? `ray get-auth-token` on the head)"
    if "connect" in low or "refused" in low or "timed out" in low or "resolve" in low:
        return f"cannot reach the Ray cluster's job server at {address}: is the head running and its dashboard port open?"
    return f"Ray Jobs at {address}: {text[:300]}"


def _call(fn: Callable[..., Any], address: str, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except KDSearchError:
        raise
    except Exception as e:  # noqa: BLE001
        raise KDSearchError(_explain(e, address)) from None


def submit(
    spec: Spec,
    address: str | None = None,
    resume: str | None = None,
    job_id: str | None = None,
    env_vars: dict[str, str] | None = None,
) -> str:
    """Submit the search as a Ray Job and return its id (does not wait)."""
    c = client(address)
    addr = address or DEFAULT_ADDRESS
    package = Path(kdsearch.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="kdsearch-submit-") as tmp:
        (Path(tmp) / "spec.yaml").write_text(dump_spec(spec))
        command = "python -m kdsearch run spec.yaml --address auto"
        if resume:
            command += f" --resume {shlex.quote(resume)}"
        runtime_env = {
            "working_dir": tmp,
            "py_modules": [str(package)],
            "excludes": ["__pycache__", "*.pyc"],
            "env_vars": {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env_vars or {})},
        }
        sid = job_id or f"kdsearch-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        meta = {"kdsearch": "search", "spec": spec.name, "storage": spec.search.storage}
        deadline = time.time() + 60
        while True:
            try:
                return c.submit_job(entrypoint=command, runtime_env=runtime_env, submission_id=sid, metadata=meta)
            except Exception as e:  # noqa: BLE001
                # a head that has just started has no job agent for a few seconds
                if "No available agent" not in str(e) or time.time() > deadline:
                    raise KDSearchError(_explain(e, addr)) from None
                time.sleep(1)


def jobs(address: str | None = None) -> list[dict[str, Any]]:
    c = client(address)
    rows = []
    for j in _call(c.list_jobs, address or DEFAULT_ADDRESS):
        rows.append(
            {
                "job_id": j.submission_id or j.job_id,
                "status": str(getattr(j.status, "value", j.status)),
                "start": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((j.start_time or 0) / 1000)),
                "entrypoint": j.entrypoint,
                "message": (j.message or "")[:80],
            }
        )
    return rows


def status(job_id: str, address: str | None = None) -> dict[str, Any]:
    c = client(address)
    info = _call(c.get_job_info, address or DEFAULT_ADDRESS, job_id)
    return {
        "job_id": job_id,
        "status": str(getattr(info.status, "value", info.status)),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "metadata": info.metadata,
    }


def logs(job_id: str, address: str | None = None, follow: bool = False) -> Iterator[str]:
    c = client(address)
    addr = address or DEFAULT_ADDRESS
    if not follow:
        yield _call(c.get_job_logs, addr, job_id)
        return
    import asyncio

    # tail_job_logs is an async generator; stepping it keeps the CLI synchronous
    loop = asyncio.new_event_loop()
    try:
        agen = c.tail_job_logs(job_id)
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def stop(job_id: str, address: str | None = None) -> bool:
    c = client(address)
    return bool(_call(c.stop_job, address or DEFAULT_ADDRESS, job_id))


def wait(job_id: str, address: str | None = None, timeout_s: float = 600, poll_s: float = 2.0) -> str:
    """Poll until the job ends; its final status."""
    deadline = time.time() + timeout_s
    while True:
        s = status(job_id, address)["status"]
        if s in TERMINAL:
            return s
        if time.time() > deadline:
            raise KDSearchError(f"job {job_id} still {s} after {timeout_s:.0f} s")
        time.sleep(poll_s)
