"""A cell that searches ran as other experiments is as many cells, on hand-made specs and rows."""

from __future__ import annotations

import dataclasses

import pandas as pd

from kdsearch.results.experiments import Searches, experiments, split_cells
from kdsearch.spec import Spec, StudentSpec, TeacherSpec


def test_a_cell_run_as_other_experiments_stays_apart() -> None:
    """rotten_tomatoes/xs from one teacher model at two student schedules, and from another
    teacher model: three experiments, never averaged into one cell; each named by what tells
    it apart (the teacher model where that alone does, else its searches' names)."""
    base = Spec(name="pretrained", teachers=TeacherSpec(model="minilm-l6"))
    other_batch = dataclasses.replace(base, name="breadth",
                                      student=StudentSpec(train=dataclasses.replace(base.student.train, batch_size=16)))
    scratch = dataclasses.replace(base, name="reproduction", teachers=TeacherSpec(model="s"))
    again = dataclasses.replace(base, name="pretrained")  # another search of the same experiment
    specs = {"a": base, "b": other_batch, "c": scratch, "d": again}
    assert experiments(base) == experiments(again) and experiments(base) != experiments(other_batch)
    searches = Searches()
    for sid, spec in specs.items():
        searches.add(sid, spec)
    rows = pd.DataFrame({"search_id": list(specs), "cell": "rotten_tomatoes/xs"})
    cells = split_cells(rows, searches)
    assert list(cells) == ["rotten_tomatoes/xs (pretrained)", "rotten_tomatoes/xs (breadth)",
                           "rotten_tomatoes/xs (reproduction)", "rotten_tomatoes/xs (pretrained)"]
    # two experiments that differ in the teacher model alone are named by it
    two = rows[rows["search_id"].isin(["a", "c"])]
    assert list(split_cells(two, searches)) == ["rotten_tomatoes/xs (teacher minilm-l6)",
                                                                        "rotten_tomatoes/xs (teacher s)"]
    # one experiment: the cell keeps its name
    one = rows[rows["search_id"].isin(["a", "d"])]
    assert list(split_cells(one, searches)) == ["rotten_tomatoes/xs"] * 2
    # two ways under one search name: told apart by content
    searches.name["b"] = "pretrained"
    split = split_cells(rows[rows["search_id"].isin(["a", "b"])], searches)
    assert split.nunique() == 2 and all(c.startswith("rotten_tomatoes/xs (pretrained ") for c in split)
