"""Benchmarks: each measures its variants side by side in one run and writes JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdsearch import atomic


def write_result(out: str | Path, result: dict[str, Any]) -> None:
    """Write a benchmark's result JSON atomically and say where."""
    atomic.write_text(Path(out), json.dumps(result, indent=1) + "\n")
    print(f"written: {out}")
