"""Latency and throughput of one callable, as benchmarks take them: warm-up first, then
each run timed alone; a median and a 95th percentile, never one lucky run."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

RUNS = 30  # timed runs of one example at a time (the floor)
WARMUP = 5
BATCH = 32  # throughput is measured at this batch size


def latency(fn: Callable[[], object], runs: int = RUNS, warmup: int = WARMUP) -> dict[str, float]:
    """``p50_ms``, ``p95_ms`` and ``runs`` of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = 1000 * np.array(times)
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "runs": runs}


def throughput(fn: Callable[[], object], examples: int, runs: int = 10, warmup: int = 2) -> float:
    """Examples per second of ``fn`` (which handles ``examples`` at once), from its median run."""
    return examples / (latency(fn, runs, warmup)["p50_ms"] / 1000)
