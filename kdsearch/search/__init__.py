"""Search on Ray Tune: the greedy approximate grid, Optuna, random and the full grid.

``kdsearch.search.runner.run_search`` runs a whole search; it is not re-exported here so
that reading results (which needs the knob table) does not import the runner.
"""

from kdsearch.search.cells import CellSearcher
from kdsearch.search.greedy import GreedySearcher
from kdsearch.search.space import KNOBS, Space

__all__ = ["KNOBS", "CellSearcher", "GreedySearcher", "Space"]
