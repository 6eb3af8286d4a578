"""The package's layering: no import cycle among hybrid/ modules, and the library never imports the CLI.

The graph counts every import statement of a module, at the top or inside a function (a lazy import
is still a dependency of the layer it sits in). A package's ``__init__`` importing its own submodules
is the one kind of edge that is not a dependency of a layer on another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hybrid

PACKAGE = Path(hybrid.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The hybrid modules ``path`` imports (``from pkg import name`` counts as ``pkg.name`` when that
    is a module, else as ``pkg``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            targets = [source + "." + a.name for a in node.names]
            targets = [t if t in modules else source for t in targets]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    assert "hybrid.adapters.stage" in import_graph()["hybrid.tasks"]  # imported inside a function
    pkg = tmp_path / "hybrid" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from . import b\nfrom .b import x\nfrom ..other import y\n")
    modules = {"hybrid.sub.a", "hybrid.sub.b", "hybrid.other"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "hybrid"
    try:
        assert imports_of(pkg / "a.py", modules) == {"hybrid.sub.b", "hybrid.other"}
    finally:
        PACKAGE = saved


def test_no_import_cycle_among_hybrid_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_only_the_cli_imports_the_cli() -> None:
    importers = sorted(m for m, deps in import_graph().items() if "hybrid.cli" in deps and m != "hybrid.cli")
    assert importers == [], f"the library imports hybrid.cli (a layer above it): {importers}"
