"""No import cycle inside normbench, counting the imports inside functions.

An import moved into a function hides a cycle from Python's import machinery but not from the design: the two
modules still need each other, and which one loads first decides what works. So every `import` and
`from ... import` counts, wherever it stands, except under `if TYPE_CHECKING:` (never run). `from pkg import name`
is an import of `pkg.name` when that is a module, else of `pkg`. A cycle is a strongly connected component of more
than one module of the graph tests/factories/import_graph.py builds."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
from factories.import_graph import import_graph, package_tree

ROOT = Path(__file__).resolve().parent.parent


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
    [cycle] = cycles(package_tree(tmp_path, files))
    assert cycle.startswith(expected[0]) and all(edge in cycle for edge in expected[1:]), cycle


def test_a_layered_package_and_type_checking_imports_pass(tmp_path):
    package = package_tree(tmp_path, {
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
