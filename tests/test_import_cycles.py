"""No import cycle inside normbench, counting the imports inside functions.

An import moved into a function hides a cycle from Python's import machinery but not from the design: the two
modules still need each other, and which one loads first decides what works. So every `import` and
`from ... import` counts, wherever it stands, except under `if TYPE_CHECKING:` (never run). `from pkg import name`
is an import of `pkg.name` when that is a module, else of `pkg`. A cycle is a strongly connected component of more
than one module (networkx is torch's own dependency, so it is there wherever normbench runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__) for every module under `package`."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the import nodes under `if TYPE_CHECKING:`."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")):
            hidden |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return hidden


def _imported(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> list[str]:
    """The modules of `modules` an import statement inside `package` loads (its deepest known one per name)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    out = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def import_graph(package: Path) -> nx.DiGraph:
    """Module -> module it imports, each edge carrying the first (file, line) that imports it."""
    modules = _modules(package)
    graph = nx.DiGraph()
    for name, (path, is_package) in modules.items():
        graph.add_node(name)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        hidden = _type_checking_only(tree)
        own_package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in hidden:
                for target in _imported(node, own_package, set(modules)):
                    if target != name and not graph.has_edge(name, target):
                        graph.add_edge(name, target, where=f"{path.relative_to(package.parent)}:{node.lineno}")
    return graph


def cycles(package: Path) -> list[str]:
    """One line per cycle: its modules and the import lines that close it."""
    graph = import_graph(package)
    out = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            edges = sorted(f"{a} -> {b} ({d['where']})" for a, b, d in graph.subgraph(component).edges(data=True))
            out.append(f"{' <-> '.join(sorted(component))}: " + "; ".join(edges))
    return sorted(out)


def test_normbench_has_no_import_cycle():
    found = cycles(ROOT / "normbench")
    assert not found, "import cycles in normbench (move what both need into a lower module):\n" + "\n".join(found)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    return tmp_path / "pkg"


CYCLES = {
    # the shape: a module imports its renderer inside a function, the renderer imports it back
    "through an import inside a function": ({
        "__init__.py": "",
        "board.py": "from pkg.shared import Row\n\ndef write():\n    from .render import render\n    return render()\n",
        "render.py": "from pkg import board\n",
        "shared.py": "Row = tuple\n",
    }, ["pkg.board <-> pkg.render:", "pkg.board -> pkg.render (pkg/board.py:4)",
        "pkg.render -> pkg.board (pkg/render.py:1)"]),
    # `from pkg.sub import helper` names a function of sub/__init__.py: an import of pkg.sub, which imports back
    "through a name of a subpackage": ({
        "__init__.py": "",
        "sub/__init__.py": "from ..top import TOP\n\ndef helper():\n    return TOP\n",
        "top.py": "TOP = 1\n\ndef use():\n    import pkg.sub.leaf\n    from pkg.sub import helper\n    return helper\n",
        "sub/leaf.py": "",
    }, ["pkg.sub <-> pkg.top:", "pkg.sub -> pkg.top (pkg/sub/__init__.py:1)", "pkg.top -> pkg.sub (pkg/top.py:5)"]),
}


@pytest.mark.parametrize("files, expected", CYCLES.values(), ids=CYCLES.keys())
def test_a_cycle_is_reported(tmp_path, files, expected):
    [cycle] = cycles(_package(tmp_path, files))
    assert cycle.startswith(expected[0]) and all(edge in cycle for edge in expected[1:]), cycle


def test_a_layered_package_and_type_checking_imports_pass(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "",
        "board.py": "from pkg.shared import Row\n\ndef write():\n    from pkg.render import render\n"
                    "    return render()\n",
        "render.py": "from typing import TYPE_CHECKING\nfrom pkg import shared\nif TYPE_CHECKING:\n"
                     "    from pkg.board import write\n\ndef render():\n    return shared.Row\n",
        "shared.py": "Row = tuple\n",
    })
    assert cycles(package) == []
    assert set(import_graph(package).edges) == {("pkg.board", "pkg.shared"), ("pkg.board", "pkg.render"),
                                                ("pkg.render", "pkg.shared")}
