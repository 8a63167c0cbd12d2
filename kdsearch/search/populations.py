"""Grouping (cell, config, seed) points into populations: one Tune trial trains many students.

Every trial's config is ``{"members": [point, ...]}``. One member runs on the single-trial
Trainer, as always; several members that may share one fused model (same cell, and the same
value of every knob the knob table marks as not ``fusable``: epochs, batch size, ...) run
as a :class:`~kdsearch.distill.population.Population`. :class:`PopulationSearcher` wraps the
search's :class:`~kdsearch.search.cells.CellSearcher`: it asks it for every point it can hand
out now (a greedy stage's configs x seeds, a batch of Optuna's, asked together under the
constant liar), groups them, and hands each member's result back as a single trial's would,
so greedy's winners, the Optuna study and the grid do not change with fusion.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune.search import Searcher

from kdsearch import knobs
from kdsearch.distill.population import unfusable
from kdsearch.search._state import JsonStateSearcher
from kdsearch.search.cells import CellSearcher

Point = dict[str, Any]


def group_key(point: Mapping[str, Any], base: Mapping[str, Any]) -> str | None:
    """What members of one population share; None for a point that must train alone."""
    config = {**base, **{k: v for k, v in point.items() if k in knobs.KNOBS}}
    if unfusable(config):
        return None
    fixed = {k: v for k, v in knobs.resolve(config).items() if not knobs.KNOBS[k].fusable}
    return json.dumps([point["cell"], fixed], sort_keys=True)


def member_id(trial_id: str, index: int, members: int) -> str:
    """The row key of a population's member: the trial's own id when it trains alone."""
    return trial_id if members == 1 else f"{trial_id}-{index}"


def populations(points: list[Point], base: Mapping[str, Mapping[str, Any]], cap: int) -> list[list[Point]]:
    """Points grouped in order into populations of at most ``cap`` (the full grid's way)."""
    out: list[list[Point]] = []
    open_groups: dict[str, list[Point]] = {}
    for p in points:
        key = group_key(p, base[p["cell"]]) if cap > 1 else None
        if key is None:
            out.append([p])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= cap:
            group = open_groups[key] = []
            out.append(group)
        group.append(p)
    return out


class PopulationSearcher(JsonStateSearcher):
    """Hands Tune populations of up to ``cap`` points drawn from ``cells``.

    Args:
        cells: the search's per-cell searcher; each member is one of its trials.
        cap: members per population (1: every point trains alone, as without fusion).
        base: cell -> every knob's spec value (a point holds only the searched knobs).
    """

    def __init__(self, cells: CellSearcher, cap: int, base: dict[str, dict[str, Any]]) -> None:
        super().__init__(metric=cells.metric, mode=cells.mode)
        self.cells = cells
        self.cap = cap
        self.base = base
        self.pending: list[tuple[str, Point]] = []  # (member id in cells, point), drawn but not handed out
        self.live: dict[str, list[str]] = {}  # Tune trial id -> its members' ids in cells
        self.n_members = 0
        self.finished_source = False

    def _key(self, point: Point) -> str | None:
        return group_key(point, self.base[point["cell"]]) if self.cap > 1 else None

    def _draw(self) -> None:
        """Take points from ``cells`` until a group is full, a point must train alone, or none is ready."""
        while not self.finished_source:
            sizes: dict[str | None, int] = {}
            for _, p in self.pending:
                sizes[self._key(p)] = sizes.get(self._key(p), 0) + 1
            if sizes.get(None) or (sizes and max(sizes.values()) >= self.cap):
                return
            mid = f"m{self.n_members}"
            point = self.cells.suggest(mid)
            if point is None:
                return
            if point == Searcher.FINISHED:
                self.finished_source = True
                return
            self.n_members += 1
            self.pending.append((mid, point))

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._draw()
        if not self.pending:
            return Searcher.FINISHED if self.finished_source and not self.live else None
        first_key = self._key(self.pending[0][1])
        if first_key is None:
            chosen = [self.pending[0]]
        else:  # the largest group (ties: the one drawn first), in the order drawn
            keys = [self._key(p) for _, p in self.pending]
            best = max((k for k in keys if k is not None), key=lambda k: (keys.count(k), -keys.index(k)))
            chosen = [(mid, p) for (mid, p), k in zip(self.pending, keys) if k == best][: self.cap]
        taken = {mid for mid, _ in chosen}
        self.pending = [(mid, p) for mid, p in self.pending if mid not in taken]
        self.live[trial_id] = [mid for mid, _ in chosen]
        return {"members": [p for _, p in chosen]}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        mids = self.live.pop(trial_id, None)
        if mids is None:
            return
        if len(mids) == 1 or error or not result:
            for mid in mids:
                self.cells.on_trial_complete(mid, None if error or not result else result, error=error or not result)
            return
        for mid, member in zip(mids, result.get("members") or [None] * len(mids)):
            self.cells.on_trial_complete(mid, member, error=member is None)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # fixed at construction, as the cells' searcher's

    def get_state(self) -> dict[str, Any]:
        return {"pending": self.pending, "live": self.live, "n_members": self.n_members,
                "finished_source": self.finished_source, "cells": self.cells.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.pending = [(mid, p) for mid, p in state["pending"]]
        self.live = state["live"]
        self.n_members = state["n_members"]
        self.finished_source = state["finished_source"]
        self.cells.set_state(state["cells"])


# -- how many members fit -------------------------------------------------------------------
MAX_AUTO_MEMBERS = 64  # past this the GPU is full of work anyway (the H100 probe: K=64, 4.7 GiB)
UNKNOWN_GPU_BYTES = 16 * 2**30  # a cluster's GPU this driver cannot see: assume a small one
CPU_FUSION = "off"  # what auto does without a GPU: fusion measured no faster there (results/bench/fused.json)


def member_bytes(model: Any, batch_size: int, max_length: int) -> int:
    """A member's training memory: fp32 weights, gradients and two Adam moments, plus one
    step's activations under bf16 autocast (twice, for what autocast keeps in fp32)."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    per_token = 12 * cfg.hidden_size + 2 * cfg.intermediate_size + 2 * cfg.num_attention_heads * max_length
    activations = 2 * 2 * batch_size * max_length * cfg.num_hidden_layers * per_token
    return 16 * params + activations


def fusion(spec: Any, students: Callable[[], list[Any]], local_gpu_bytes: int | None) -> tuple[int, str]:
    """Members per population for ``spec``, and why (one line for the plan).

    Args:
        spec: the search's spec (``search.fuse``, resources, batch size, max length).
        students: builds a student model of each kind the search trains (the largest sizes
            the estimate); called only when the estimate is needed.
        local_gpu_bytes: this machine's GPU memory, None without one.
    """
    fuse, gpu = spec.search.fuse, spec.search.resources.gpu
    if fuse == "off":
        return 1, "search.fuse: off"
    if isinstance(fuse, int):
        return fuse, f"search.fuse: {fuse}"
    if gpu <= 0 or spec.device == "cpu":
        return 1, f"search.fuse: auto, and trials get no GPU (on CPU fusion is {CPU_FUSION}: it measured no faster there)"
    total = local_gpu_bytes if local_gpu_bytes else UNKNOWN_GPU_BYTES
    share = total * min(gpu, 1.0)
    batch = max(st.train.batch_size for st in spec.student_specs)
    need = max(member_bytes(m, batch, max(d.max_length for d in spec.data_specs)) for m in students())
    cap = max(1, min(MAX_AUTO_MEMBERS, int(0.6 * share // need)))
    seen = "" if local_gpu_bytes else " (assumed: no GPU visible here)"
    return cap, (f"search.fuse: auto, {gpu:g} GPU per trial of {total / 2**30:.0f} GiB{seen}, "
                 f"~{need / 2**20:.0f} MiB per member")
