"""The fast loop's contract: `pytest tests` leaves the slow end-to-end tests out, and CI runs them.

pyproject registers the `slow` marker and deselects it in addopts (a `-m` on the command line comes after addopts and
replaces it: `pytest tests -m slow`, `pytest tests -m "slow or not slow"`); .ci/run and tox run `pytest tests -m slow`
after the fast loop; and every test that starts a pytest session in a subprocess (`pytest suite`, `--pyargs
normbench.suite`, `normbench test`, a pytest run of other self-tests) or drives a browser is marked slow, by a
decorator or its module's pytestmark. The last rule reads the test modules: a test is such a test when its own code,
a helper it calls (in its module, or imported from a module beside it or from tests/factories/) or a fixture it
requests does it. A run started through a shell script (the CI workflow example's steps) is not seen, and is marked
by hand."""

from __future__ import annotations

import ast
import configparser
import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

#: what, in a function's own source, starts a pytest session in a subprocess or a browser
STARTS = re.compile(r'"-m",\s*"pytest"|"-m",\s*"normbench",\s*"test"|\bwebdriver\.Chrome\(')


def default_selection_problems(pyproject: str) -> list[str]:
    """What is wrong, in pyproject.toml's text, with the `slow` marker's registration and the default deselection."""
    options = tomllib.loads(pyproject).get("tool", {}).get("pytest", {}).get("ini_options", {})
    problems = []
    if not any(str(m).split(":")[0].strip() == "slow" for m in options.get("markers", [])):
        problems.append("pyproject.toml: [tool.pytest.ini_options] markers does not register `slow`")
    addopts = shlex.split(options.get("addopts", ""))
    expressions = [addopts[i + 1] for i, a in enumerate(addopts[:-1]) if a == "-m"]
    if expressions != ["not slow"]:
        problems.append(f"pyproject.toml: addopts must deselect the slow tests with -m \"not slow\"; its -m: "
                        f"{expressions}")
    return problems


def _pytest_runs(lines: list[str], prefix: list[str]) -> list[list[str]]:
    """The uncommented commands that start with `prefix` and run `tests`, split as the shell would."""
    runs = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[:len(prefix)] == prefix and "tests" in words:
            runs.append(words)
    return runs


def _marker_expression(words: list[str]) -> str | None:
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"), None)


def ci_problems(ci_script: str, tox_ini: str) -> list[str]:
    """What is wrong with .ci/run (`ci_script`) and tox.ini (`tox_ini`) running both the fast loop and the slow
    tests."""
    problems = []
    runs = _pytest_runs(ci_script.splitlines(), ["run_pytest"])
    if not any(_marker_expression(r) is None for r in runs):
        problems.append(".ci/run: no `run_pytest tests ...` without -m (the fast loop)")
    if not any(_marker_expression(r) == "slow" for r in runs):
        problems.append(".ci/run: no `run_pytest tests ... -m slow` (the slow tests would never run in CI)")
    tox = configparser.ConfigParser(interpolation=None)
    tox.read_string(tox_ini)
    commands = tox.get("testenv:slow", "commands", fallback="").splitlines()
    if not any(_marker_expression(r) == "slow" for r in _pytest_runs(commands, ["pytest"])):
        problems.append("tox.ini: [testenv:slow] does not run `pytest tests ... -m slow`")
    return problems


def _text(lines: list[str], node: ast.AST) -> str:
    """`node`'s source lines (ast.get_source_segment splits the whole file on every call: too slow for ~100
    modules)."""
    return "\n".join(lines[node.lineno - 1:node.end_lineno])


def unmarked_starters(modules: dict[str, str]) -> list[str]:
    """The tests of `modules` (module name -> source) that start a pytest session in a subprocess or a browser,
    themselves, through a helper (of their module or imported from one of `modules`, at the top or inside a
    function) or through a fixture they request, and are not marked slow: `module::test` each."""
    Key = tuple[str, str]
    starts: set[Key] = set()
    reaches: dict[Key, set[Key]] = {}  # what each function calls or requests, among the functions of `modules`
    marked: dict[Key, bool] = {}
    for m, source in modules.items():
        tree, lines = ast.parse(source), source.splitlines()
        fns = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        imported = {alias.asname or alias.name: (node.module, alias.name) for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module in modules for alias in node.names}
        fixtures = {f for f, fn in fns.items() if any("fixture" in _text(lines, d) for d in fn.decorator_list)}
        module_marked = any("mark.slow" in _text(lines, node) for node in tree.body if isinstance(node, ast.Assign)
                            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets))
        for f, fn in fns.items():
            if STARTS.search(_text(lines, fn)):
                starts.add((m, f))
            called = {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            reaches[(m, f)] = ({(m, c) for c in called if c in fns} | {imported[c] for c in called if c in imported}
                               | {(m, a.arg) for a in fn.args.args if a.arg in fixtures})
            marked[(m, f)] = module_marked or any("mark.slow" in _text(lines, d) for d in fn.decorator_list)
    changed = True
    while changed:  # a helper that calls a starter starts one too; so does a fixture requesting a starting fixture
        changed = False
        for key, reached in reaches.items():
            if key not in starts and reached & starts:
                starts.add(key)
                changed = True
    return [f"{m}::{f}" for (m, f) in reaches if f.startswith("test_") and (m, f) in starts and not marked[(m, f)]]


def _test_modules(tests: Path = TESTS) -> dict[str, str]:
    """The test modules (tests/ and its folders, tests/checks/test_x.py as `checks.test_x`) and the helpers beside
    them by the name they are imported under (`factories.suite_runs` for tests/factories/suite_runs.py, whose
    run_suite the end-to-end tests call)."""
    paths = sorted({*tests.glob("*.py"), *(tests / "factories").glob("*.py"), *tests.glob("*/**/test_*.py")})
    return {".".join(p.relative_to(tests).with_suffix("").parts): p.read_text() for p in paths}


# -- the project's files ------------------------------------------------------------------------------------------

def test_the_marker_is_registered_and_the_default_run_deselects_it():
    assert default_selection_problems((ROOT / "pyproject.toml").read_text()) == []


def test_ci_and_tox_run_the_fast_loop_and_the_slow_tests():
    assert ci_problems((ROOT / ".ci" / "run").read_text(), (ROOT / "tox.ini").read_text()) == []


def test_every_test_that_starts_a_pytest_session_or_a_browser_is_marked_slow():
    offenders = unmarked_starters(_test_modules())
    assert offenders == [], ("mark these @pytest.mark.slow (or their module pytestmark = pytest.mark.slow): "
                             + ", ".join(offenders))


def test_the_scan_sees_the_known_end_to_end_tests():
    # the rule must find something to check: these start `pytest suite` through helpers and fixtures
    modules = _test_modules()
    for name, source in modules.items():
        modules[name] = source.replace("pytest.mark.slow", "pytest.mark.unmarked")
    found = set(unmarked_starters(modules))
    assert {"test_suite_runner::test_bad_spec_is_one_clear_failure",  # a module fixture calling run_suite
            "test_variants::test_the_suite_runs_a_compile_subset_and_records_the_variant",  # run_suite imported
            "test_site_browser::test_a_header_click_sorts_the_rows",  # the browser, through a fixture
            "test_run_from_anywhere::test_normbench_test_writes_nothing_with_no_record_and_to_normbench_results_by_default",
            } <= found, sorted(found)


# -- the rules on broken and correct files -------------------------------------------------------------------------

PYPROJECT = '''[tool.pytest.ini_options]
addopts = "--import-mode=importlib {m}"
markers = [{markers}]
'''


def test_a_pyproject_without_the_marker_or_the_deselection_is_flagged():
    good = PYPROJECT.format(m='-m \\"not slow\\"', markers='"slow: end to end"')
    assert default_selection_problems(good) == []
    assert "does not register `slow`" in default_selection_problems(PYPROJECT.format(m='-m \\"not slow\\"',
                                                                                     markers='"deploy: x"'))[0]
    assert "-m \"not slow\"" in default_selection_problems(PYPROJECT.format(m="", markers='"slow: x"'))[0]
    assert "['slow']" in default_selection_problems(PYPROJECT.format(m="-m slow", markers='"slow: x"'))[0]


CI = "set -e\nrun_pytest tests -n 2 -q\n{slow}\nrun_pytest suite -n 2 -q\n"
TOX = "[testenv:slow]\ncommands = {commands}\n"


def test_a_ci_script_or_tox_that_never_runs_the_slow_tests_is_flagged():
    good_tox = TOX.format(commands="pytest tests -n 2 -m slow {posargs}")
    assert ci_problems(CI.format(slow="run_pytest tests -n 2 -q -m slow"), good_tox) == []
    (missing,) = ci_problems(CI.format(slow=""), good_tox)
    assert "-m slow" in missing and ".ci/run" in missing
    (commented,) = ci_problems(CI.format(slow="# run_pytest tests -n 2 -q -m slow"), good_tox)
    assert ".ci/run" in commented
    (suite_only,) = ci_problems(CI.format(slow="run_pytest suite -m slow"), good_tox)  # not the self-tests
    assert ".ci/run" in suite_only
    (no_fast,) = ci_problems("run_pytest tests -m slow\n", good_tox)
    assert "fast loop" in no_fast
    (tox,) = ci_problems(CI.format(slow="run_pytest tests -m slow"), TOX.format(commands="pytest tests -n 2"))
    assert "tox.ini" in tox
    assert "tox.ini" in ci_problems(CI.format(slow="run_pytest tests -m slow"), "[testenv:tests]\ncommands = x\n")[0]


RUNNER = '''
import subprocess, sys
def run_suite(*args):
    return subprocess.run([sys.executable, "-m", "pytest", "suite", *args])
'''

FIXTURE_USER = '''
import pytest
from runner import run_suite

@pytest.fixture(scope="module")
def a_run():
    return run_suite("-k", "x")

{mark}
def test_reads_the_run(a_run):
    assert a_run

def test_unit():
    assert 1
'''


def test_a_test_reaching_a_suite_run_through_a_fixture_or_a_helper_must_be_marked():
    unmarked = {"runner": RUNNER, "user": FIXTURE_USER.format(mark="")}
    assert unmarked_starters(unmarked) == ["user::test_reads_the_run"]  # test_unit stays in the fast loop
    assert unmarked_starters({"runner": RUNNER, "user": FIXTURE_USER.format(mark="@pytest.mark.slow")}) == []
    module_mark = FIXTURE_USER.format(mark="").replace("from runner import run_suite\n",
                                                       "from runner import run_suite\npytestmark = pytest.mark.slow\n")
    assert unmarked_starters({"runner": RUNNER, "user": module_mark}) == []
    other_mark = FIXTURE_USER.format(mark="@pytest.mark.deploy")
    assert unmarked_starters({"runner": RUNNER, "user": other_mark}) == ["user::test_reads_the_run"]


# module-level, not inside a test: the scan of this very module would see them in a test's source
DIRECT = 'import subprocess, sys\ndef test_x():\n    subprocess.run([sys.executable, "-m", "pytest", "tests"])\n'
CLI = 'def _run(*a):\n    pass\ndef test_y():\n    _run("-m", "normbench", "test", "--impl", "x")\n'
BROWSER = 'def test_z():\n    driver = webdriver.Chrome(service=None)\n'
HARMLESS = 'import subprocess, sys\ndef test_w():\n    subprocess.run([sys.executable, "-c", "print(1)"])\n'
LOCAL_IMPORT = 'def test_v():\n    from runner import run_suite\n    run_suite("-k", "x")\n'


def test_a_direct_pytest_subprocess_a_cli_suite_run_a_browser_and_a_local_import_are_each_seen():
    found = unmarked_starters({"a": DIRECT, "b": CLI, "c": BROWSER, "d": HARMLESS, "e": LOCAL_IMPORT,
                               "runner": RUNNER})
    assert found == ["a::test_x", "b::test_y", "c::test_z", "e::test_v"]


def test_the_scan_reads_the_test_modules_of_tests_folders(tmp_path):
    for name, text in {"factories/runner.py": RUNNER, "checks/test_user.py": FIXTURE_USER.format(mark=""),
                       "plugins/test_collected_too.py": DIRECT, "test_top.py": LOCAL_IMPORT}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text.replace("from runner import", "from factories.runner import"))
    # a test_*.py in any folder is one pytest collects
    assert unmarked_starters(_test_modules(tmp_path)) == ["checks.test_user::test_reads_the_run",
                                                          "plugins.test_collected_too::test_x", "test_top::test_v"]
