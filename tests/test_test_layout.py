"""No module of tests/ imports a test module: what several tests build alike lives in tests/factories/ (or
tests/helpers.py), which test modules import.

Under pytest's importlib import mode a test module imported by another is loaded a second time under another name
(its fixtures and module state twice), and a helper kept inside one test module is found only by reading it. Every
import counts, wherever it stands (inside a function too), and so does `importlib.import_module("test_x")` or
`__import__("test_x")` with a literal name. A test module is a `test_*.py` of the folder scanned."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _test_module_names(tests: Path) -> set[str]:
    return {p.stem for p in tests.glob("test_*.py")}


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every module an import statement or a literal import_module / __import__ call loads."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def imports_of_test_modules(tests: Path) -> list[str]:
    """One line per import of a test module by a module under `tests` (test modules, factories, helpers, plugins):
    the importing file and line, and the test module it imports."""
    test_modules = _test_module_names(tests)
    problems = []
    for path in sorted(tests.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _imported_names(tree):
            top = name.split(".")[0]
            if top in test_modules:
                problems.append(f"{path.relative_to(tests)}:{line} imports the test module {top} (move what it "
                                f"needs into tests/factories/)")
    return problems


def test_no_module_of_tests_imports_a_test_module():
    problems = imports_of_test_modules(TESTS)
    assert not problems, "\n".join(problems)


# -- the rule on broken and correct folders ------------------------------------------------------------------------

def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


HELPED = "def helper():\n    return 1\n\n\ndef test_b():\n    assert helper()\n"

BROKEN = {
    "from a test module": ({"test_a.py": "from test_b import helper\n", "test_b.py": HELPED},
                           ["test_a.py:1 imports the test module test_b"]),
    "inside a function": ({"test_a.py": "def test_a():\n    from test_b import helper\n    assert helper()\n",
                           "test_b.py": HELPED}, ["test_a.py:2 imports the test module test_b"]),
    "a plain import, renamed": ({"test_a.py": "import test_b as b\n", "test_b.py": HELPED},
                                ["test_a.py:1 imports the test module test_b"]),
    "by importlib": ({"test_a.py": "import importlib\n\nb = importlib.import_module('test_b')\n",
                      "test_b.py": HELPED}, ["test_a.py:3 imports the test module test_b"]),
    "a factory importing a test module": ({"factories/__init__.py": "", "factories/x.py": "from test_b import helper\n",
                                           "test_b.py": HELPED}, ["factories/x.py:1 imports the test module test_b"]),
}


@pytest.mark.parametrize("files, expected", BROKEN.values(), ids=BROKEN.keys())
def test_an_import_of_a_test_module_is_flagged(tmp_path, files, expected):
    problems = imports_of_test_modules(_folder(tmp_path, files))
    assert [p.split(" (")[0] for p in problems] == expected, problems
    assert all("tests/factories/" in p for p in problems)


def test_imports_of_factories_helpers_and_other_packages_pass(tmp_path):
    files = {
        "factories/__init__.py": "",
        "factories/records.py": "import copy\n\n\ndef records():\n    return copy.deepcopy([])\n",
        "helpers.py": "def run():\n    return 1\n",
        "test_a.py": "from factories.records import records\nfrom helpers import run\nimport testfixtures\n"
                     "import pytest\n\n\ndef test_a():\n    import importlib\n    importlib.import_module('json')\n"
                     "    assert records() == [] and run()\n",
        "test_b.py": HELPED,
    }
    assert imports_of_test_modules(_folder(tmp_path, files)) == []
