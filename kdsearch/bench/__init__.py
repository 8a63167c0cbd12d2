"""Benchmarks: each measures its variants side by side in one run and writes JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdsearch import atomic


def portable(path: str | Path) -> str:
    """How a result JSON names a file or folder: relative to where the bench ran, or to the
    repository, never the absolute path of this machine (results are committed and compared)."""
    p = Path(path).resolve()
    for base in (Path.cwd().resolve(), Path(__file__).resolve().parents[2]):
        if p.is_relative_to(base):
            return str(p.relative_to(base))
    return p.name


def write_result(out: str | Path, result: dict[str, Any]) -> None:
    """Write a benchmark's result JSON atomically and say where."""
    atomic.write_text(Path(out), json.dumps(result, indent=1) + "\n")
    print(f"written: {out}")


def pyplot() -> Any:
    """matplotlib's pyplot drawing to files (no display: benches run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: Path) -> None:
    """A bench's figure written beside its JSON, the same size and resolution for each."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write_summary(out: str | Path, result: dict[str, Any], plot: Callable[[dict[str, Any], Path], None]) -> None:
    """A replayed bench's end: its summary table and what it left out, then the JSON and its plot beside it."""
    from kdsearch.display import format_table

    print(format_table(result["summary"]))
    for line in result.get("left_out", []):
        print(f"left out: {line}")
    out = Path(out)
    write_result(out, result)
    plot(result, out.with_suffix(".png"))
    print(f"written: {out.with_suffix('.png')}")


def bench_spec(given: str | None, default: str) -> str:
    """A bench's ``--spec``: a file, or a shipped space by name as ``kdsearch run`` takes it
    (``quick``), else ``default`` (a shipped space's name); one line when it is neither."""
    from kdsearch.errors import KDSearchError
    from kdsearch.paths import shipped_spaces, spec_path

    path = spec_path(given or default)
    if not Path(path).is_file():
        raise KDSearchError(f"--spec {given}: no such file, nor a shipped space ({', '.join(shipped_spaces())})")
    return path
