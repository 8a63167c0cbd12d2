"""One cell, one experiment: rows of searches that ran a cell another way are kept apart.

A cell is ``dataset/student``; its configs are compared seed by seed, and rows of one config and
seed from several searches are averaged as one (reproduction's grid and greedy searches ran the
same trials). That holds only when the searches trained alike: the same data sample and lengths,
the same teachers, the same student schedule. Where they did not (a pretrained teacher beside
one trained from scratch; the breadth study's 1,000 examples at batch 16 beside the pretrained
study's whole train split at batch 32), the cell is two experiments, and every reader of rows
sees two cells, each named by what tells it apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pandas as pd

from kdsearch.fetch import label
from kdsearch.spec import Spec, cell_id


def experiments(spec: Spec) -> dict[str, str]:
    """Each cell of a search and what it fixes besides the KD knobs (JSON): its data (sample,
    lengths, tokenizer), how its teachers and its student train."""
    out = {}
    for data in spec.data_specs:
        # the dataset by its name, not the path it was read from on that machine; split files likewise
        seen = {**dataclasses.asdict(data), "dataset": cell_id(data, "").rstrip("/"), "files": None}
        teachers = {k: v for k, v in dataclasses.asdict(spec.teachers.for_data(data)).items() if k != "register"}
        for student in spec.student_specs:
            out[cell_id(data, student.model)] = json.dumps(
                {"data": seen, "teachers": teachers, "student": dataclasses.asdict(student)}, sort_keys=True, default=str)
    return out


class Searches:
    """What :func:`split_cells` reads of each search, gathered as its folder is opened."""

    def __init__(self) -> None:
        self.experiment: dict[tuple[str, str], str] = {}  # (search id, cell) -> experiments(spec)[cell]
        self.teacher: dict[str, str] = {}  # search id -> its teacher model, as results name it
        self.name: dict[str, str] = {}  # search id -> its spec's name

    def add(self, search_id: str, spec: Spec) -> None:
        self.teacher[search_id] = label(spec.teachers.model)
        self.name[search_id] = spec.name
        self.experiment.update({(search_id, cell): e for cell, e in experiments(spec).items()})


def split_cells(trials: pd.DataFrame, searches: Searches) -> pd.Series:
    """The rows' cells, a cell that the searches ran as different experiments split in as many,
    each named by what tells it apart: ``rotten_tomatoes/xs (teacher s)`` where the teacher model
    alone does, else by its searches' names (``rotten_tomatoes/xs (breadth)``), and where searches
    of one name ran it two ways, by a hash of how."""
    cells = trials["cell"].astype(str).copy()
    found = pd.Series([searches.experiment.get((s, c)) for s, c in zip(trials["search_id"], cells)], index=trials.index)
    for cell, g in found.groupby(cells, sort=False):
        kinds = g.dropna().unique()
        if len(kinds) < 2:
            continue
        ids = trials.loc[g.index, "search_id"]
        teachers = {k: {searches.teacher[i] for i in ids[g == k].unique()} for k in kinds}
        if all(len(t) == 1 for t in teachers.values()) and len({min(t) for t in teachers.values()}) == len(kinds):
            names = {k: f"teacher {min(teachers[k])}" for k in kinds}
        else:
            names = {k: ", ".join(sorted({searches.name[i] for i in ids[g == k].unique()})) for k in kinds}
            if len(set(names.values())) < len(kinds):
                names = {k: f"{n} {hashlib.sha256(k.encode()).hexdigest()[:6]}" for k, n in names.items()}
        cells.loc[g.index] = [f"{cell} ({names[k]})" if k in names else cell for k in g]
    return cells
