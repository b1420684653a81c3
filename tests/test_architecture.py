"""docs/architecture.md's picture, checked against the code: every import of flashgau (top of file or inside a
function) points down the layers below, never sideways or up, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "flashgau"

# The rooms of docs/architecture.md, top to bottom; a room may import only rooms of a later row.
LAYERS = [
    {"__main__"},
    {"cli"},
    {"flags", "bench", "hf"},
    {"training"},
    {"tasks"},
    {"data", "runtime"},
    {"model"},
    {"generation"},
    {"inputs", "documents"},
    {"layers"},
    {"ops"},
    {"config"},
    {"files", "meter", "signals"},
    {"errors"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the flashgau modules it imports, anywhere in its text."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_imports_in_functions_and_relative_ones():
    graph = import_graph()
    assert "flashgau.training.loop" in graph["flashgau.cli"]            # imported inside run_train
    assert "flashgau.ops.autocast" in graph["flashgau.layers.flash"]    # from ..ops.autocast import cast
    assert "flashgau.layers.gau" in graph["flashgau.layers.flash"]      # from .gau import GAUBase
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_in_a_circle():
    assert circles(import_graph()) == []


def test_every_room_is_in_the_picture():
    rooms = {room(m) for m in import_graph()} - {""}
    assert rooms == set().union(*LAYERS), "a room was added or removed: draw it in docs/architecture.md and LAYERS"


def test_imports_point_down_the_picture_only():
    row = {name: i for i, names in enumerate(LAYERS) for name in names}
    wrong = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                   if room(a) and room(b) and room(a) != room(b) and row[room(b)] <= row[room(a)])
    assert wrong == []
