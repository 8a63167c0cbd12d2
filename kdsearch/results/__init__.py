"""Search results: the Parquet store and the summaries read from it."""

from kdsearch.results.store import ResultStore, open_store
from kdsearch.results.summary import best_per_cell, config_table

__all__ = ["ResultStore", "best_per_cell", "config_table", "open_store"]
