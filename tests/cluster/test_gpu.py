"""GPU trials: Ray assigns a GPU fraction, the trainer uses it with bf16 autocast."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from kdsearch.search.runner import run_search
from kdsearch.spec import load_spec


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the GPU path cannot run here")
def test_trials_run_on_a_gpu_fraction(tiny_spec) -> None:
    import ray

    ray.init(num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        spec = load_spec(tiny_spec(name="gpu", seeds="[0]"), ["search.resources.gpu=0.5", "search.resources.cpu=1"])
        folder = run_search(spec, log=lambda *a, **k: None)
    finally:
        ray.shutdown()
    trials = pd.read_parquet(folder / "trials.parquet")
    assert (trials.status == "ok").all() and trials.device.eq("cuda").all()
