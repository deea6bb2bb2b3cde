"""The import graph of a package, counting every import wherever it stands (inside a function too), except under
`if TYPE_CHECKING:` (never run): what tests/test_import_cycles.py (no cycle) and tests/test_layering.py (no import
of a layer above) read. `from pkg import name` is an import of `pkg.name` when that is a module, else of `pkg`.
networkx is torch's own dependency, so it is there wherever normbench runs."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx


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


def package_tree(root: Path, files: dict[str, str], name: str = "pkg") -> Path:
    """A throwaway package `name` under `root` with these files (relative path -> text), for planted violations."""
    for relative, text in files.items():
        (root / name / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / name / relative).write_text(text)
    return root / name
