"""The layers of normbench's results side: the store (normbench/store/) imports nothing above it, the board
(normbench/board/) nothing of its renderers or the CLI, counting the imports inside functions and those made
through another module (a store module importing a helper that imports a publisher reaches the publisher)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
from factories.import_graph import import_graph, package_tree

ROOT = Path(__file__).resolve().parent.parent

#: layer -> what it must never reach, directly or through other modules (names relative to the package)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "store": ("board", "publish", "checks", "sandbox", "pytest_plugin", "cli"),
    "board": ("publish", "cli"),
}
#: the only modules outside itself the store imports directly: the leaf vocabularies a record is written in
#: (version: the normbench version it stamps; verdicts: the counts of an implementation; deploy: the deployment
#: names of a merge unit and their older aliases)
STORE_IMPORTS = ("store", "version", "verdicts", "deploy")


def _within(module: str, package: str, layer: str) -> bool:
    return module == f"{package}.{layer}" or module.startswith(f"{package}.{layer}.")


def violations(package: Path, forbidden: dict[str, tuple[str, ...]] = FORBIDDEN,
               store_imports: tuple[str, ...] = STORE_IMPORTS) -> list[str]:
    """One line per module of a layer that reaches a module it must not, with the chain of imports."""
    graph, name = import_graph(package), package.name
    found = []
    for layer, above in forbidden.items():
        for module in sorted(m for m in graph if _within(m, name, layer)):
            for target in sorted(nx.descendants(graph, module)):
                if any(_within(target, name, a) for a in above):
                    chain = nx.shortest_path(graph, module, target)
                    found.append(f"{layer}: {module} reaches {target}: " + " -> ".join(
                        f"{b} ({graph.edges[a, b]['where']})" for a, b in zip(chain, chain[1:], strict=False)))
    for module in sorted(m for m in graph if _within(m, name, "store")):
        for target in sorted(graph.successors(module)):
            if not any(_within(target, name, allowed) for allowed in store_imports):
                found.append(f"store: {module} imports {target} ({graph.edges[module, target]['where']}), "
                             f"not one of {', '.join(store_imports)}")
    return found


def test_the_store_and_the_board_import_nothing_above_them():
    found = violations(ROOT / "normbench")
    assert not found, "layering broken (move what both need below the store, or the call above it):\n" + \
        "\n".join(found)


LAYERED = {
    "__init__.py": "",
    "version.py": "V = 1\n",
    "store/__init__.py": "",
    "store/records.py": "from pkg.version import V\n",
    "board/__init__.py": "",
    "board/model.py": "from pkg.store.records import V\n",
    "publish/__init__.py": "from pkg.board.model import V\n",
    "cli/__init__.py": "from pkg.publish import V\n",
    "checks/__init__.py": "",
}

PLANTED = {
    "a store module importing a publisher inside a function": (
        {"store/files.py": "def write():\n    from pkg.publish import V\n    return V\n"},
        ["store: pkg.store.files reaches pkg.publish: pkg.publish (pkg/store/files.py:2)"]),
    "a store module reaching the board through a helper": (
        {"helper.py": "import pkg.board.model\n", "store/scan.py": "from pkg import helper\n"},
        ["store: pkg.store.scan reaches pkg.board.model: pkg.helper (pkg/store/scan.py:1) -> pkg.board.model "
         "(pkg/helper.py:1)", "store: pkg.store.scan imports pkg.helper (pkg/store/scan.py:1), not one of"]),
    "the board importing the CLI": (
        {"board/build.py": "from pkg import cli\n"},
        ["board: pkg.board.build reaches pkg.cli: pkg.cli (pkg/board/build.py:1)"]),
    "the store importing the checks": (
        {"store/merge.py": "import pkg.checks\n"},
        ["store: pkg.store.merge reaches pkg.checks: pkg.checks (pkg/store/merge.py:1)"]),
}


@pytest.mark.parametrize("files, expected", PLANTED.values(), ids=PLANTED.keys())
def test_a_planted_violation_is_reported(tmp_path, files, expected):
    found = violations(package_tree(tmp_path, {**LAYERED, **files}))
    assert all(any(line.startswith(e) for line in found) for e in expected), found


def test_a_layered_package_passes(tmp_path):
    # the layers import downwards only: publish -> board -> store -> version (a leaf), cli on top
    assert violations(package_tree(tmp_path, LAYERED)) == []
