"""normbench runs from any folder where it is installed: `pytest --pyargs normbench.suite` and
`normbench test`, from a folder outside the clone, with the plugin given as a file or as a module on PYTHONPATH;
the record lands under --results-dir, or ./normbench-results of that folder by default, and nothing is written into
the clone; --no-record writes nothing at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

import pytest

# slow (`pytest tests -m slow`, .ci/run): every test runs the suite (--pyargs, normbench test) in a subprocess
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: one property in one dtype keeps each run short
SELECT = ["-k", "forward_equivalence and float32", "-q", "-p", "no:cacheprovider"]
PLUGIN = textwrap.dedent("""
    from torch import nn
    from normbench import Implementation

    def _rmsnorm(num_features, eps, affine):
        return nn.RMSNorm(num_features, eps=eps, elementwise_affine=affine)

    implementations = [Implementation(name="{name}", family="rmsnorm", factory=_rmsnorm)]
""")
FILE_IMPL, MODULE_IMPL = "anywhere.FileRMSNorm", "anywhere.ModuleRMSNorm"


def _clone_state() -> dict[Path, int]:
    """Every file under the clone's results folders, with its modification time."""
    return {p: p.stat().st_mtime_ns for folder in ("results", "normbench-results")
            for p in (ROOT / folder).rglob("*") if p.is_file()}


def _written_into_the_clone(before: dict[Path, int]) -> list[Path]:
    """The clone's results files, new or changed since `before`, that name this test's implementations (another
    run in the clone, at the same time, may write there: only a record of these runs counts)."""
    changed = [p for p, mtime in _clone_state().items() if before.get(p) != mtime]
    return [p for p in changed if any(name in p.read_text(errors="replace") for name in (FILE_IMPL, MODULE_IMPL))]


@pytest.fixture()
def outside(tmp_path):
    """A plugin's folder outside the clone: plugin.py (a file) and src/anywhere_plugin (a module)."""
    assert ROOT not in tmp_path.parents
    (tmp_path / "plugin.py").write_text(PLUGIN.format(name=FILE_IMPL))
    (tmp_path / "src" / "anywhere_plugin").mkdir(parents=True)
    (tmp_path / "src" / "anywhere_plugin" / "__init__.py").write_text(PLUGIN.format(name=MODULE_IMPL))
    (tmp_path / "tmp").mkdir()
    before = _clone_state()
    yield tmp_path
    shutil.rmtree(_temp_of(tmp_path), ignore_errors=True)
    assert not _written_into_the_clone(before), "a run outside the clone wrote into the clone's results"


def _temp_of(folder: Path) -> Path:
    """The run's temp folder: short, since the forkserver's socket lives there and an AF_UNIX path has at most
    107 bytes (pytest's tmp_path under xdist, plus multiprocessing's pymp-*/listener-*, is longer)."""
    path = Path(tempfile.gettempdir()) / f"nbt-{zlib.crc32(str(folder).encode()):08x}"
    path.mkdir(exist_ok=True)
    return path


def _run(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    # the module form needs its folder on sys.path; TMPDIR shows whether anything lands in the temp folder
    env.update(PYTHONPATH=str(folder / "src"), TMPDIR=str(_temp_of(folder)))
    proc = subprocess.run([sys.executable, *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc


def _verdicts(results: Path) -> dict[str, str]:
    [record] = (results / "raw").glob("*/conformance.json")
    return {o["test_id"]: o["verdict"] for o in json.loads(record.read_text())["outcomes"].values()
            if o["verdict"] != "unjudged"}


def test_pytest_pyargs_judges_a_file_and_a_module_plugin_from_outside_the_clone(outside):
    _run(outside, "-m", "pytest", "--pyargs", "normbench.suite", "--impl", FILE_IMPL, "--impl", MODULE_IMPL,
         "--impl-path", "plugin.py:implementations", "--impl-path", "anywhere_plugin:implementations",
         "--results-dir", str(outside / "out"), *SELECT)
    assert _verdicts(outside / "out") == {f"rmsnorm[{FILE_IMPL}-forward_equivalence-float32]": "pass",
                                          f"rmsnorm[{MODULE_IMPL}-forward_equivalence-float32]": "pass"}
    assert (outside / "out" / "LEADERBOARD.md").is_file()
    assert not (outside / "normbench-results").exists()


def _listing(folder: Path) -> list[Path]:
    """Everything in the folder (dot files too), less Python's bytecode caches and the temp folder."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if "__pycache__" not in p.parts and p.relative_to(folder).parts[0] != "tmp")


def test_normbench_test_writes_nothing_with_no_record_and_to_normbench_results_by_default(outside):
    before = _listing(outside)
    proc = _run(outside, "-m", "normbench", "test", "--impl", FILE_IMPL, "--impl-path", "plugin.py:implementations",
                "--no-record", *SELECT)
    assert "1 passed" in proc.stdout and "full matrix" not in proc.stdout
    # no record, no matrix (it once went to the temp folder), no .hypothesis or .benchmarks: nothing at all
    assert _listing(outside) == before
    assert not list(_temp_of(outside).rglob("conformance-matrix.txt"))

    proc = _run(outside, "-m", "normbench", "test", "--impl", MODULE_IMPL, "--impl-path",
                "anywhere_plugin:implementations", *SELECT)
    assert proc.stdout.startswith("$ pytest --pyargs normbench.suite -p no:benchmark --impl")
    assert _verdicts(outside / "normbench-results") == {f"rmsnorm[{MODULE_IMPL}-forward_equivalence-float32]": "pass"}
    assert (outside / "normbench-results" / "conformance-matrix.txt").is_file()
