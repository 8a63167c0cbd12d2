"""The import graph: no cycles anywhere, readers of results never import Ray, and reading a stored
search builds no model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdsearch"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """kdsearch modules ``path`` imports, at any depth (functions too), but not for type checking."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking(node) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kdsearch")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdsearch"):
            for a in node.names:  # `from kdsearch.search import study` imports the module study
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    edges = graph()
    assert len(edges) > 40 and "kdsearch.knobs" in edges  # not vacuous
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_knob_table_is_the_bottom_of_the_graph() -> None:
    assert graph()["kdsearch.knobs"] <= {"kdsearch.errors"}


READERS = ["kdsearch.results.summary", "kdsearch.results.store", "kdsearch.reports.compare", "kdsearch.recommend",
           "kdsearch.export", "kdsearch.knobs", "kdsearch.spec", "kdsearch.search.methods", "kdsearch.search.space"]


def test_readers_of_results_do_not_import_ray() -> None:
    code = (f"import sys\nfor m in {READERS!r}:\n    __import__(m)\n"
            "leaked = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\nprint(len(leaked), leaked[:5])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "0", r.stdout


def test_reading_a_stored_search_imports_no_model_code() -> None:
    """`results` (and `compare`, `recommend`) read a stored spec's model names by name
    (kdsearch.presets) and its loss and augmentation names as recorded: they import neither
    the model builders nor torch (seconds of every call) nor transformers."""
    folder = sorted((ROOT / "results" / "tasks").glob("tasks-*"))[0]
    code = (f"import sys\nfrom kdsearch.cli import main\nassert main(['results', {str(folder)!r}]) == 0\n"
            "print(sorted(m for m in ('kdsearch.models', 'torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "best per cell" in r.stdout.lower() or "configs" in r.stdout  # it read the search
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout[-500:]
