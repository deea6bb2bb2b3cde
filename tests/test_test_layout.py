"""No module of tests/ imports a test module: what several tests build alike lives in tests/factories/ (or
tests/helpers.py, the mutants_*.py beside it), which test modules import. And tests/ mirrors the package: the tests of
normbench/<package>/ stand in tests/<package>/, so a folder of tests names a package of normbench.

Under pytest's importlib import mode a test module imported by another is loaded a second time under another name
(its fixtures and module state twice), and a helper kept inside one test module is found only by reading it. Every
import counts, wherever it stands (inside a function too), and so does `importlib.import_module("test_x")` or
`__import__("test_x")` with a literal name, a dotted one (`checks.test_x`: tests/ is on sys.path, so its folders
import as namespace packages) and a relative one. A test module is a `test_*.py` anywhere below the folder scanned."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


#: folders of tests/ that hold what the tests share, not the tests of a package
SHARED_FOLDERS = ("factories", "plugins")


def _test_module_names(tests: Path) -> set[str]:
    return {p.stem for p in tests.rglob("test_*.py")}


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every module an import statement or a literal import_module / __import__ call loads;
    `from a import b` counts as a.b too (b may be a module), a relative import by the names it spells."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found += [(node.lineno, f"{base}.{alias.name}".lstrip(".")) for alias in node.names]
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
            named = next((part for part in name.split(".") if part in test_modules), None)
            if named:
                problems.append(f"{path.relative_to(tests)}:{line} imports the test module {named} (move what it "
                                f"needs into tests/factories/)")
    return problems


def folders_without_a_package(tests: Path, package: Path) -> list[str]:
    """One line per folder below `tests` that holds test modules but names no package below `package` (its path,
    folder for folder, from `package`), the shared folders apart; and one per __init__.py there (the importlib mode
    needs none, and one would make its folder a package that shadows the one of the same name)."""
    problems = []
    for folder in sorted({p.parent for p in tests.rglob("test_*.py")} - {tests}):
        rel = folder.relative_to(tests)
        if rel.parts[0] in SHARED_FOLDERS:
            continue
        if not (package / rel / "__init__.py").is_file():
            problems.append(f"tests/{rel.as_posix()}/ holds tests but {package.name}/{rel.as_posix()}/ is no "
                            f"package (the tests of {package.name}/<package>/ go in tests/<package>/)")
        if (folder / "__init__.py").exists():
            problems.append(f"tests/{rel.as_posix()}/__init__.py: a test folder is no package (remove it)")
    return problems


def test_no_module_of_tests_imports_a_test_module():
    problems = imports_of_test_modules(TESTS)
    assert not problems, "\n".join(problems)


def test_every_folder_of_tests_mirrors_a_package():
    problems = folders_without_a_package(TESTS, TESTS.parent / "normbench")
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
    "one in a subfolder": ({"test_a.py": "from test_b import helper\n", "checks/test_b.py": HELPED},
                           ["test_a.py:1 imports the test module test_b"]),
    "a subfolder's, dotted": ({"bench/test_a.py": "from checks.test_b import helper\n", "checks/test_b.py": HELPED},
                              ["bench/test_a.py:1 imports the test module test_b"]),
    "a subfolder's, as a name": ({"test_a.py": "from checks import test_b\n", "checks/test_b.py": HELPED},
                                 ["test_a.py:1 imports the test module test_b"]),
    "a relative import": ({"checks/test_a.py": "from .test_b import helper\n", "checks/test_b.py": HELPED},
                          ["checks/test_a.py:1 imports the test module test_b"]),
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
        "checks/test_c.py": "from helpers import run\nfrom factories import records\n\n\ndef test_c():\n"
                            "    assert run() and records\n",
    }
    assert imports_of_test_modules(_folder(tmp_path, files)) == []


def _package(root: Path, *names: str) -> Path:
    for name in names:
        (root / "normbench" / name).mkdir(parents=True, exist_ok=True)
        (root / "normbench" / name / "__init__.py").write_text("")
    return root / "normbench"


def test_a_test_folder_that_names_no_package_or_is_one_is_flagged(tmp_path):
    package = _package(tmp_path, "checks", "checks/toolkit")
    tests = _folder(tmp_path / "tests", {"checks/test_a.py": HELPED, "check/test_b.py": HELPED,
                                         "toolkit/test_c.py": HELPED, "checks/deep/test_d.py": HELPED,
                                         "bench/__init__.py": "", "bench/test_e.py": HELPED})
    (package / "bench").mkdir()  # a folder, not a package
    (package / "checks" / "deep").mkdir()
    assert [p.split(" (")[0] for p in folders_without_a_package(tests, package)] == [
        "tests/bench/ holds tests but normbench/bench/ is no package",
        "tests/bench/__init__.py: a test folder is no package",
        "tests/check/ holds tests but normbench/check/ is no package",
        "tests/checks/deep/ holds tests but normbench/checks/deep/ is no package",
        "tests/toolkit/ holds tests but normbench/toolkit/ is no package",
    ]


def test_test_folders_that_mirror_packages_and_the_shared_folders_pass(tmp_path):
    package = _package(tmp_path, "checks", "checks/toolkit", "deploy")
    tests = _folder(tmp_path / "tests", {"test_top.py": HELPED, "checks/test_a.py": HELPED,
                                         "checks/toolkit/test_b.py": HELPED, "deploy/test_c.py": HELPED,
                                         "factories/__init__.py": "", "factories/test_like.py": HELPED,
                                         "plugins/__init__.py": "", "plugins/test_plugin.py": HELPED})
    assert folders_without_a_package(tests, package) == []
