"""GPU trials: Ray assigns a GPU fraction, the trainer uses it with bf16 autocast, else CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdsearch.errors import SpecError
from kdsearch.search.runner import run_search
from kdsearch.spec import load_spec
from tests.conftest import running_ray

HALF_GPU = ["search.resources.gpu=0.5", "search.resources.cpu=1", "search.space={teacher: [t_hs, t_ll]}"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the GPU path cannot run here")
def test_trials_run_on_a_gpu_fraction(tiny_spec: Callable[..., Path]) -> None:
    with running_ray(num_gpus=1):
        spec = load_spec(tiny_spec(name="gpu", seeds="[0]"), ["search.resources.gpu=0.5", "search.resources.cpu=1"])
        folder = run_search(spec, log=lambda *a, **k: None)
    trials = pd.read_parquet(folder / "trials.parquet")
    assert (trials.status == "ok").all() and trials.device.eq("cuda").all()


def test_gpu_fractions_share_one_gpu(tiny_spec: Callable[..., Path]) -> None:
    """Ray's scheduling of GPU fractions, on any machine: Ray is told of one GPU, whether or
    not torch can use it; asking for two is refused, and two half-GPU trials share it. Without
    CUDA they train on CPU."""
    lines: list[str] = []
    with running_ray(num_gpus=1):
        too_much = load_spec(tiny_spec(name="toomuch", seeds="[0]"), ["search.resources.gpu=2"])
        with pytest.raises(SpecError, match=r"search.resources.gpu: 2 GPU per trial asked, but the cluster's largest node has 1"):
            run_search(too_much, log=lambda *a, **k: None)
        spec = load_spec(tiny_spec(name="halfgpu", seeds="[0]"), HALF_GPU)
        folder = run_search(spec, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == 3 and (trials.status == "ok").all()  # baseline, t_hs, t_ll
    assert trials.gpu_ids.eq("0").all()  # each was given the one GPU ...
    epochs = pd.read_parquet(folder / "epochs.parquet").groupby("trial_id").agg(start=("trial_start_ts", "min"), end=("report_ts", "max"))
    spans = sorted(zip(epochs.start, epochs.end))
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans  # ... and two held it at once
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert trials.device.eq(device).all()
    warned = [ln for ln in lines if ln.startswith("warning: Ray gave trials GPU 0")]
    assert len(warned) == (device == "cpu"), lines  # the CPU fallback is said, once

