"""Shared fixtures: small slices of the real built-in data, tiny real models, a tiny search spec."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kdsearch.data.prepare import PreparedData, prepare_data
from kdsearch.local_ray import start_local_ray
from kdsearch.spec import DataSpec, OptimSpec, TeacherSpec, TokenizerSpec
from kdsearch.teachers import TeacherPool

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "token")  # as the CLI sets it; before ray is imported
torch.set_num_threads(min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def running_ray(**init_kwargs) -> Iterator[None]:
    """A real Ray on this machine, started as kdsearch starts it (127.0.0.1 only)."""
    import ray

    start_local_ray(**{"num_cpus": 2, "include_dashboard": False, "log_to_driver": False, **init_kwargs})
    try:
        yield
    finally:
        ray.shutdown()


def listening_sockets(roots: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket these processes or their descendants listen on."""
    import psutil

    pids = set(roots)
    for pid in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            pids |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
    found = []
    for c in psutil.net_connections("inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                found.append((c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def small_data_spec(dataset: str = "rotten_tomatoes", **kw) -> DataSpec:
    base = dict(
        dataset=dataset,
        max_length=32,
        tokenizer=TokenizerSpec(vocab_size=1000),
        max_train_examples=384,
        max_eval_examples=128,
    )
    base.update(kw)
    return DataSpec(**base)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kdsearch")


@pytest.fixture(scope="session")
def rt_data(workdir: Path) -> PreparedData:
    return prepare_data(small_data_spec(), workdir)


@pytest.fixture(scope="session")
def ner_data(workdir: Path) -> PreparedData:
    return prepare_data(small_data_spec("wnut16", max_length=48), workdir)


@pytest.fixture(scope="session")
def rt_pool(workdir: Path, rt_data: PreparedData) -> TeacherPool:
    """A real pool: an `s` teacher trained 3 epochs, one checkpoint per epoch."""
    # its own workdir: searches in `workdir` on the same data add their teachers to theirs
    pool = TeacherPool(workdir / "rt_pool", rt_data, "cpu")
    pool.train(
        TeacherSpec(model="s", seeds=[0], train=OptimSpec(epochs=3, batch_size=32, learning_rate=2e-3)),
        log=lambda s: None,
    )
    return pool


TINY = """
name: {name}
data:
  dataset: rotten_tomatoes
  max_length: 32
  max_train_examples: {train}
  max_eval_examples: 128
  tokenizer: {{vocab_size: 1000}}
teachers:
  model: xs
  seeds: [0]
  train: {{epochs: 2, batch_size: 32, learning_rate: 2.0e-3}}
student:
  model: xs
  train: {{epochs: {epochs}, batch_size: 32, learning_rate: 1.0e-3}}
distill: {{teacher: t_ll, loss: ce, alpha: 0.5, tau_t: 2.0, tau_s: 1.0}}
workdir: {workdir}
search:
  method: {method}
  space:
    teacher: [t_hs, t_ll]
    loss: [ce, mse]
    tau_s: [1.0, same]
  seeds: {seeds}
  budget: {budget}
  max_failures: 1
  storage: {storage}
"""


@pytest.fixture
def tiny_spec(tmp_path: Path, workdir: Path):
    """Write a tiny search spec; keyword arguments change its fields."""

    def make(**kw) -> Path:
        fields = dict(name="tiny", train=384, epochs=1, method="greedy", seeds="[0, 1]", budget="null")
        fields.update(kw)
        text = TINY.format(workdir=workdir, storage=tmp_path / "searches", **fields)
        p = tmp_path / f"{fields['name']}.yaml"
        p.write_text(text)
        return p

    return make
