"""The wheel holds everything an installed normbench runs from, and runs: every module of normbench/ (found by
setup.py, not listed by hand: a hand-written list once left out normbench.preload), reference/ and specs/ as
normbench.reference and normbench.specs, the packaged suite with its known failures, the site's templates, and the
pytest plugin's `pytest11` entry point. Then the wheel is installed into a fresh virtual environment and judges one
implementation from a folder outside the clone. Built from a copy of the sources, so the clone gets no build/ or
egg-info. Skipped only where no wheel can be built offline (no setuptools, the build backend, to build without
isolation); a build that fails is a failure."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# slow (`pytest tests -m slow`, .ci/run): builds the wheel and installs it into a fresh venv
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: what the wheel is built from: the package, the two mapped folders, and the build configuration
SOURCES = ("normbench", "reference", "specs")
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md", "normbench_entry.py", "normbench_forkserver.py")


def _expected(tree: Path) -> set[str]:
    """The wheel's paths of the files an installed normbench needs, from the source tree."""
    files = {str(p.relative_to(tree)) for p in (tree / "normbench").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    files |= {f"normbench/reference/{p.name}" for p in (tree / "reference").glob("*.py")}
    files |= {f"normbench/specs/{p.name}" for p in (tree / "specs").iterdir() if p.suffix in (".py", ".yaml", ".json")}
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(the copied source tree, the wheel built from it)."""
    for module in ("pip", "setuptools"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"no wheel can be built offline: {module} is not installed (pip wheel --no-build-isolation "
                        "needs the build backend here)")
    tmp_path = tmp_path_factory.mktemp("packaging")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in SOURCES:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in BUILD_FILES:
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [wheel] = (tmp_path / "wheel").glob("normbench-*.whl")
    return src, wheel


def test_the_wheel_holds_every_module_data_file_and_the_pytest_entry_point(built):
    src, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_text = archive.read(entry_points).decode()
    missing = _expected(src) - names
    assert not missing, f"not in the wheel (setup.py's packages or pyproject.toml's package-data): {sorted(missing)}"
    assert {"normbench/suite/conformance.py", "normbench/suite/known_failures/torch.nn.LayerNorm.yaml",
            "normbench/preload/compile.py", "normbench/remote/judge.py"} <= names
    # only normbench at the top level (no `reference` or `specs` package beside it), and the two modules that must
    # import before it does: the pytest entry point and the forkserver it starts (normbench_forkserver)
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "normbench", "normbench_entry.py", "normbench_forkserver.py"}
    assert "[pytest11]\nnormbench.pytest_plugin = normbench_entry" in entry_text


def test_the_installed_wheel_judges_an_implementation_outside_the_clone(built, tmp_path):
    _, wheel = built
    venv = tmp_path / "venv"
    # torch and the other dependencies come from this interpreter's site-packages; normbench only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--force-reinstall", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(python), *args], cwd=outside, env=env, capture_output=True, text=True,
                              timeout=600)

    where = run("-c", "import normbench, normbench.preload.compile, normbench.specs, normbench.pytest_plugin as p, "
                      "normbench_entry as e; print(normbench.__file__); print(normbench.specs.__file__); "
                      "print(p.__file__); print(e.__file__)")
    assert where.returncode == 0, where.stderr[-3000:]
    site = venv.resolve()
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(site), f"imported from outside the wheel's install: {line}"
    proc = run("-m", "pytest", "--pyargs", "normbench.suite", "--impl", "torch.nn.RMSNorm", "-k",
               "forward_equivalence", "--no-record", "-q")
    tail = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) > 0, tail
    assert not re.search(r"\d+ (failed|error)", proc.stdout), tail
