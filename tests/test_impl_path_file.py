"""`--impl-path path/to/plugin.py:attr` and `python -m normbench`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from normbench import ImplementationError
from normbench.registry import discover, load_path

PLUGIN = textwrap.dedent("""
    from torch import nn
    from normbench import Implementation

    def implementations():
        return [Implementation(name="{name}", family="layernorm",
                               factory=lambda num_features, eps, affine: nn.LayerNorm(num_features, eps, affine))]
""")


def _write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / name
    file.write_text(body)
    return file


def test_a_file_path_is_imported_by_location(tmp_path):
    file = _write(tmp_path, "plugin.py", PLUGIN.format(name="file.LayerNorm"))
    [impl] = load_path(f"{file}:implementations")
    assert impl.name == "file.LayerNorm"
    assert impl.source == f"--impl-path {file}:implementations"
    assert impl.build(8, {"eps": 1e-5, "affine": True}).weight.shape == (8,)


def test_two_files_with_the_same_name_do_not_collide(tmp_path):
    # Both are plugin.py: imported under one module name, the second would silently return the first's objects.
    first = _write(tmp_path / "a", "plugin.py", PLUGIN.format(name="a.LayerNorm"))
    second = _write(tmp_path / "b", "plugin.py", PLUGIN.format(name="b.LayerNorm"))
    assert [i.name for i in load_path(f"{first}:implementations")] == ["a.LayerNorm"]
    assert [i.name for i in load_path(f"{second}:implementations")] == ["b.LayerNorm"]


def test_a_file_next_to_a_folder_named_normbench_does_not_shadow_the_package(tmp_path, monkeypatch):
    # The pitfall of the issue: a plugin folder beside a clone called `normbench` shadowed the installed package
    # when that folder was on sys.path. A file path is imported by location; sys.path is left as it was.
    (tmp_path / "normbench").mkdir()
    file = _write(tmp_path, "plugin.py", PLUGIN.format(name="beside.LayerNorm"))
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    [impl] = load_path("plugin.py:implementations")
    assert impl.name == "beside.LayerNorm" and sys.path == before
    assert file.exists()


@pytest.mark.parametrize("body, path_suffix, message", [
    (None, "missing.py:implementations", "no such file"),
    ("raise RuntimeError('top-level boom')\n", "boom.py:implementations", "top-level boom"),
    (PLUGIN.format(name="x.LayerNorm"), "ok.py:nothing_here", "has no attribute 'nothing_here'"),
    (PLUGIN.format(name="x.LayerNorm"), "ok.py", "expected the form"),
])
def test_bad_file_paths_name_the_file_and_the_cause(tmp_path, body, path_suffix, message):
    if body is not None:
        _write(tmp_path, path_suffix.split(":")[0], body)
    with pytest.raises(ImplementationError, match=message):
        load_path(f"{tmp_path}/{path_suffix}")


def test_a_broken_file_is_one_plugin_error_and_leaves_no_half_imported_module(tmp_path):
    file = _write(tmp_path, "broken_at_import.py", "raise ImportError('needs a library that is absent')\n")
    registry = discover([f"{file}:implementations"], include_entry_points=False)
    assert not registry.implementations
    [error] = registry.errors
    assert "needs a library that is absent" in str(error) and str(file) in str(error)
    assert not [m for m in sys.modules if m.startswith("_normbench_impl_path_broken_at_import")]


def test_python_dash_m_normbench_runs_the_cli(tmp_path):
    file = _write(tmp_path, "plugin.py", PLUGIN.format(name="via_main.LayerNorm"))
    done = subprocess.run([sys.executable, "-m", "normbench", "list", "--impl-path", f"{file}:implementations"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "via_main.LayerNorm" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "normbench", "no-such-verb"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
