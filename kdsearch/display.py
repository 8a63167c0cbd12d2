"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


# columns that count things: printed as whole numbers (a mean over searches only when it is one)
COUNTS = frozenset({"searches", "trials", "configs", "choices", "seeds", "rank", "cells", "cells_with_it", "failed",
                    "collapsed", "epochs_run", "members", "seed", "configs_tried", "train_size", "labels"})


def format_value(column: str, v: Any) -> str:
    """One table cell: counts as integers, other floats with 4 decimals, NaN and None empty."""
    if isinstance(v, float) and v != v or v is None:
        return ""
    if column in COUNTS and isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer():
        return str(int(v))
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table (see :func:`format_value`)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    cells = [[format_value(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])
