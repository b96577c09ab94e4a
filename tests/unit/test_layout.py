"""The package's shape, read from its imports (ast, function-level imports included), so it cannot drift.

Layers, top to bottom (DESIGN.md): cli and tui; runs, after, engine and probe; data, hub, models and
presets; config and the standard-library helpers beside it. A module imports its own layer or lower
ones, never upward, and no two files import each other, however long the way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tui_lora

PACKAGE = Path(tui_lora.__file__).parent

# Each module's layer by the first part of its name below tui_lora; a higher number is a higher layer.
LAYERS = {
    "cli": 5, "tui": 5,
    "runs": 4, "after": 4, "engine": 4, "probe": 4,
    "data": 3, "hub": 3, "models": 3, "presets": 3, "estimate": 3,
    "config": 2,
    # standard-library helpers every layer may use
    "errors": 1, "secret_guard": 1, "file_modes": 1, "streams": 1, "places": 1, "assets": 1,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the tui_lora modules it imports anywhere in its body."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                found.add(f"<relative import in {name}>")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tui_lora"):
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    found.add(submodule if submodule in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("tui_lora"))
        graph[name] = {target for target in found if target != name}
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in import_graph() if name != "tui_lora" and layer(name) == 0)
    assert not unplaced, f"modules with no layer in LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{source} -> {target}" for source, targets in import_graph().items() for target in targets
                    if target != "tui_lora" and layer(target) > layer(source))
    assert not upward, "\n".join(upward)


def test_config_and_data_stay_below_the_engine():
    graph = import_graph()
    for source, targets in graph.items():
        for target in targets:
            if source.startswith("tui_lora.config"):
                assert not target.startswith(("tui_lora.data", "tui_lora.engine")), f"{source} -> {target}"
            if source.startswith("tui_lora.data"):
                assert not target.startswith("tui_lora.engine"), f"{source} -> {target}"


def test_nothing_imports_the_command_line():
    importers = sorted(source for source, targets in import_graph().items() if "tui_lora.cli" in targets)
    assert not importers, f"cli.py is parsing and dispatch only; imported by {importers}"


def test_no_relative_imports():
    relative = sorted(t for targets in import_graph().values() for t in targets if t.startswith("<relative"))
    assert not relative, relative


def test_no_import_cycles():
    graph = import_graph()
    # Tarjan's strongly connected components: any component of more than one file is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_is_read_from_real_imports():
    # the reader itself must see what is there: cli imports config (a function-level import included)
    graph = import_graph()
    assert "tui_lora.config" in graph["tui_lora.cli"] or any(t.startswith("tui_lora.config.")
                                                           for t in graph["tui_lora.cli"])
    assert any(t.startswith("tui_lora.data") for t in graph["tui_lora.engine.train"])
