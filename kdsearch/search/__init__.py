"""Search on Ray Tune: the greedy approximate grid, Optuna, random and the full grid.

Import the modules themselves (``kdsearch.search.runner`` runs a search); this package
imports nothing, so reading the method table or a space does not start Ray's imports.
"""
