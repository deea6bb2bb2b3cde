"""The wheel holds everything an installed normbench runs from (issue 20): every module of normbench/ (the package
list in pyproject.toml is written by hand: normbench.preload was once missing from it), reference/ and specs/ as
normbench.reference and normbench.specs, the packaged suite with its known failures, the site's templates, and the
pytest plugin's `pytest11` entry point. Built from a copy of the sources, so the clone gets no build/ or egg-info."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _expected(tree: Path) -> set[str]:
    """The wheel's paths of the files an installed normbench needs, from the source tree."""
    files = {str(p.relative_to(tree)) for p in (tree / "normbench").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    files |= {f"normbench/reference/{p.name}" for p in (tree / "reference").glob("*.py")}
    files |= {f"normbench/specs/{p.name}" for p in (tree / "specs").iterdir() if p.suffix in (".py", ".yaml", ".json")}
    return files


def test_the_wheel_holds_every_module_data_file_and_the_pytest_entry_point(tmp_path):
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("normbench", "reference", "specs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [wheel] = (tmp_path / "wheel").glob("normbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_text = archive.read(entry_points).decode()
    missing = _expected(src) - names
    assert not missing, f"not in the wheel (pyproject.toml's packages or package-data): {sorted(missing)}"
    assert {"normbench/suite/conformance.py", "normbench/suite/known_failures/torch.nn.LayerNorm.yaml"} <= names
    # only normbench at the top level: no `reference` or `specs` package beside it
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"normbench"}
    assert "[pytest11]\nnormbench.pytest_plugin = normbench.pytest_plugin" in entry_text
