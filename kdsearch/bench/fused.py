"""``kdsearch bench fused``: populations against one student per trial, and against the peer.

In one run, on one machine (the device and the GPU's name are recorded):

1. member-steps/s of a fused population of K xs students for each K, against today's
   single-trial Trainer, on a first pass over a set of steps (new tensor shapes: a GPU pays
   each one's kernel set-up) and on a later pass (shapes seen);
2. one KD grid on Rotten Tomatoes (one seed, the paper's knobs) run three ways on Ray Tune:
   fused populations (``search.fuse``), one trial per config (``fuse: off``), and the peer,
   ``transformers.Trainer.hyperparameter_search`` on Ray with a KD ``compute_loss`` that runs
   the teacher each step; wall time and configs/hour for each, and the GPU's utilisation
   sampled each second while each runs.

``auto_fuses_on_cpu`` records what ``search.fuse: auto`` does without a GPU (off): the
CPU figures here are the measurement behind that choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import torch

from kdsearch.bench import hf_peer, write_result
from kdsearch.display import format_table

GRID = {"teacher": ["t_hs", "t_ll"], "loss": ["ce", "kl", "mse"], "alpha": [0.5, 1.0], "tau_t": [1.0, 4.0]}  # 24 configs


class GpuSampler:
    """``nvidia-smi``'s utilisation of GPU 0, once a second, on a thread (None where there is none)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi") and torch.cuda.is_available():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.split()[0]) / 100)
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


# -- 1. member-steps/s --------------------------------------------------------------------------
def _configs(k: int) -> list[Any]:
    """K distillation configs that differ (loss, alpha, temperature), cycling."""
    from kdsearch.spec import DistillSpec

    combos = list(itertools.product(["ce", "kl", "mse"], [0.5, 1.0], [1.0, 4.0]))
    out = []
    for i in range(k):
        loss, alpha, tau = combos[i % len(combos)]
        d = DistillSpec(teacher="t_ll", loss=loss, alpha=alpha, tau_t=tau)
        d.check("distill")
        out.append(d)
    return out


def member_rates(data: Any, teacher: Any, ks: list[int], steps: int, batch_size: int, device: torch.device) -> list[dict[str, Any]]:
    """Member-steps/s: the single Trainer (K = 1, ``trainer``) and populations of each K."""
    from kdsearch.distill.population import Member, Population
    from kdsearch.distill.trainer import Trainer
    from kdsearch.models import build_for
    from kdsearch.spec import OptimSpec

    optim = OptimSpec(epochs=1, max_steps=steps, batch_size=batch_size, learning_rate=1e-3)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(make: Any) -> float:
        run = make()
        sync()
        start = time.perf_counter()
        run.train_epoch()
        sync()
        return steps / (time.perf_counter() - start)

    def single() -> Trainer:
        torch.manual_seed(0)
        return Trainer(build_for("xs", data), data, optim, 0, _configs(1)[0], teacher, device)

    rows = [{"variant": "trainer (one student)", "K": 1, "first_pass": timed(single), "later_pass": timed(single)}]
    for k in ks:
        def population(k: int = k) -> Population:
            configs = _configs(k)
            models = []
            for seed in range(k):
                torch.manual_seed(seed)
                models.append(build_for("xs", data))
            return Population(models, data, [Member(c, optim, s, teacher) for s, c in enumerate(configs)], device)

        first = timed(population)
        later = timed(population)
        rows.append({"variant": "population", "K": k, "first_pass": k * first, "later_pass": k * later})
        if device.type == "cuda":
            rows[-1]["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
    return rows


# -- 2. the grid three ways ------------------------------------------------------------------------
def _spec_overrides(args: argparse.Namespace, storage: Path, workdir: Path) -> list[str]:
    return [
        "name=bench-fused",
        f"workdir={workdir}",
        f"search.storage={storage}",
        f"data.max_train_examples={args.examples}",
        f"data.max_length={args.max_length}",
        "student.model=xs",
        "student.train.epochs=1",
        f"student.train.batch_size={args.batch_size}",
        "search.method=grid",
        "search.seeds=[0]",
        "search.baseline=false",
        # serving costs (ONNX export, int8) are measured after a search's trials, once per architecture
        # and machine: the first grid timed would pay them, and the device's onnx failed on them
        "search.costs=false",
        f"search.space={json.dumps(GRID)}",
        *args.set,
    ]


def kdsearch_grid(spec: Any, fuse: str, resources: dict[str, float]) -> dict[str, Any]:
    from kdsearch.results.store import ResultStore
    from kdsearch.search.runner import run_search

    spec = dataclasses.replace(spec, search=dataclasses.replace(
        spec.search, fuse=fuse if not fuse.isdigit() else int(fuse),
        resources=dataclasses.replace(spec.search.resources, **resources)))
    with GpuSampler() as gpu:
        start = time.time()
        folder = run_search(spec, log=lambda *a, **k: None)
        wall = time.time() - start
    trials = ResultStore(folder).trials()
    return {"wall_s": wall, "configs": int(trials.config_key.nunique()), "trials_ok": int((trials.status == "ok").sum()),
            "tune_trials": int(trials.population.nunique()), "best_val_score": float(trials.val_score.max()),
            "gpu_util_mean": gpu.mean, "resources": resources, "fuse": fuse}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from kdsearch.distill.trainer import resolve_device
    from kdsearch.local_ray import start_local_ray
    from kdsearch.paths import SPACES
    from kdsearch.search.planning import plan
    from kdsearch.search.populations import fusion
    from kdsearch.spec import load_spec

    device = resolve_device("auto")
    gpu_name = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    root = Path(args.storage)
    workdir = root / "wd"
    spec = load_spec(SPACES / "quick.yaml", _spec_overrides(args, root / "searches", workdir))
    print("== bench fused: preparing data and the teacher pool (not timed)", flush=True)
    p = plan(spec, log=lambda s: None)
    data = next(iter(p.payload.data.values()))
    teacher = p.payload.teachers[data.key]["t_ll"]
    print(f"== member-steps/s on {gpu_name or 'CPU'}: K in {args.k}, {args.steps} steps each pass", flush=True)
    rates = member_rates(data, teacher, args.k, args.steps, args.batch_size, device)
    print(format_table(rates))
    # the grids take minutes more: on a lent GPU's short time the rates must outlive a timeout
    write_result(_partial(_out(args, device.type)), {"device": device.type, "gpu": gpu_name, "member_steps_per_s": rates,
                                                    "partial": "member rates only: the grids had not finished",
                                                    "setup": {"steps": args.steps, "batch_size": args.batch_size,
                                                              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}})
    cpus = float(os.cpu_count() or 1)
    if device.type == "cuda":
        single_res, fused_res = {"cpu": 1.0, "gpu": 1.0 / args.single_per_gpu}, {"cpu": min(cpus, 4.0), "gpu": 1.0}
    else:  # both use the whole machine: singles one core each, a population every core
        single_res, fused_res = {"cpu": 1.0, "gpu": 0.0}, {"cpu": cpus, "gpu": 0.0}
    fuse = "auto" if device.type == "cuda" else str(sum(1 for _ in itertools.product(*GRID.values())))
    start_local_ray(num_cpus=int(cpus), include_dashboard=False, log_to_driver=False)
    try:
        print("== the grid, fused populations", flush=True)
        fused = kdsearch_grid(spec, fuse, fused_res)
        print("== the grid, one trial per config", flush=True)
        single = kdsearch_grid(spec, "off", single_res)
        print("== the grid, transformers.Trainer.hyperparameter_search on Ray (the peer)", flush=True)
        with GpuSampler() as sampler:
            peer = hf_peer.grid_search(spec, GRID, single_res)
        peer["gpu_util_mean"] = sampler.mean
    finally:
        ray.shutdown()
    for r in (fused, single, peer):
        r["configs_per_hour"] = 3600 * r["configs"] / r["wall_s"]
    auto_cap, auto_why = fusion(dataclasses.replace(spec, search=dataclasses.replace(spec.search, fuse="auto",
                                resources=dataclasses.replace(spec.search.resources, gpu=0.0))), list, None)
    return {
        "device": device.type,
        "gpu": gpu_name,
        "fused_vs_single": fused["configs_per_hour"] / single["configs_per_hour"],
        "fused_vs_hf_peer": fused["configs_per_hour"] / peer["configs_per_hour"],
        "gpu_util_mean": fused["gpu_util_mean"],
        "auto_fuses_on_cpu": auto_cap > 1,
        "auto_on_cpu": auto_why,
        "member_steps_per_s": rates,
        "grid": {"fused": fused, "single": single, "hf_peer": peer, "knobs": GRID},
        "targets": {"gpu": {"fused_vs_single": 20.0, "fused_vs_hf_peer": 20.0, "gpu_util_mean": 0.60},
                    "cpu": {"fused_vs_single": 0.9, "or": "auto keeps fusion off there"}},
        "setup": {"examples": args.examples, "max_length": args.max_length, "batch_size": args.batch_size, "student": "xs",
                  "teacher": spec.teachers.model, "epochs": 1, "cpus": cpus, "torch": torch.__version__,
                  "date": time.strftime("%Y-%m-%d")},
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    result = run(args)
    g = result["grid"]
    print(format_table([{"way": way, "wall_s": g[way]["wall_s"], "configs/hour": g[way]["configs_per_hour"],
                         "gpu util": g[way]["gpu_util_mean"], "best val": g[way]["best_val_score"]}
                        for way in ("fused", "single", "hf_peer")]))
    util = result["gpu_util_mean"]
    print(f"fused vs one trial per config {result['fused_vs_single']:.2f}x, vs the peer {result['fused_vs_hf_peer']:.2f}x "
          f"on {result['gpu'] or 'CPU'}; GPU utilisation {'n/a' if util is None else f'{100 * util:.0f}%'}; "
          f"auto fuses on CPU: {result['auto_fuses_on_cpu']}")
    out = _out(args, result["device"])
    write_result(out, result)
    _partial(out).unlink(missing_ok=True)  # the whole result replaces the rates kept on the way
    return result


def _out(args: argparse.Namespace, device: str) -> str:
    return args.out or ("results/bench/fused_gpu.json" if device == "cuda" else "results/bench/fused.json")


def _partial(out: str | Path) -> Path:
    return Path(out).with_suffix(".partial.json")
