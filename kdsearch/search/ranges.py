"""A numeric range of a search space: what Optuna and random search sample."""

from __future__ import annotations

from dataclasses import dataclass

from kdsearch.errors import SpecError


@dataclass
class RangeSpec:
    """A numeric range for Optuna and random search (greedy and grid need choices)."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def check(self, where: str) -> None:
        if not self.low < self.high:
            raise SpecError(f"{where}: low must be < high, got {self.low} and {self.high}")
        if self.log and self.low <= 0:
            raise SpecError(f"{where}: a log range needs low > 0, got {self.low}")
