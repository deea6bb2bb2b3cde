"""A run whose judged files (references, specs, known failures) change under it writes no record.

The plugin below edits a known-failures file given with --known-failures, from its own judging process, while
its items run: the parent sees the change when it re-hashes at the end, refuses the records, names the file, and
the run fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from factories.suite_runs import run_suite

from normbench.integrity import changes, digest, judged_paths
from normbench.judge_user import ENVIRONMENT


def test_the_digest_sees_a_changed_removed_and_added_file(tmp_path):
    (tmp_path / "a.yaml").write_text("a: 1\n")
    (tmp_path / "b.yaml").write_text("b: 1\n")
    before = digest([tmp_path])
    (tmp_path / "a.yaml").write_text("a: 2\n")
    (tmp_path / "b.yaml").unlink()
    (tmp_path / "c.yaml").write_text("c: 1\n")
    found = changes(before, digest([tmp_path]))
    assert any("a.yaml was changed" in c for c in found) and any("b.yaml was removed" in c for c in found)
    assert any("c.yaml was added" in c for c in found)
    assert changes(before, before) == []


def test_the_references_and_specs_are_among_the_judged_files():
    names = {Path(p).name for p in digest(judged_paths())}
    assert {"layernorm.py", "layernorm.yaml", "schema.json"} <= names


@pytest.mark.slow
def test_a_plugin_that_edits_what_normbench_reads_gets_no_record(tmp_path, monkeypatch):
    # the hash check is what stands where plugin code keeps the run's user; where it has its own id, the next test
    monkeypatch.setenv(ENVIRONMENT, "same")
    proc, target, out = _edited_run(tmp_path)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "refused to write this run's records" in proc.stdout and "editor.yaml was changed" in proc.stdout
    assert not list(out.rglob("conformance.json"))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                    reason="a user id of its own for plugin code needs a root run on Linux")
def test_under_its_own_user_id_the_edit_is_refused_by_the_os_and_the_run_keeps_its_records(tmp_path):
    proc, target, out = _edited_run(tmp_path)
    assert "edited" not in target.read_text()
    assert "PermissionError" in proc.stdout, proc.stdout[-2000:]  # its item: the plugin's own error
    assert "refused to write this run's records" not in proc.stdout
    assert list(out.rglob("conformance.json"))


def _edited_run(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    known = tmp_path / "known"
    known.mkdir()
    target = known / "editor.yaml"
    target.write_text("implementation: editor.LayerNorm\nknown_failures: []\n")
    plugin = tmp_path / "editor.py"
    plugin.write_text(f'''
import torch
from normbench import Implementation

class Editor(torch.nn.LayerNorm):
    def forward(self, x):
        with open({str(target)!r}, "a") as fh:
            fh.write("# edited from the judging process\\n")
        return super().forward(x)

editor = Implementation(name="editor.LayerNorm", family="layernorm",
                        factory=lambda c, eps, affine: Editor(c, eps=eps, elementwise_affine=affine))
''')
    out = tmp_path / "out"
    proc = run_suite("--impl-path", f"{plugin}:editor", "--impl", "editor.LayerNorm", "--known-failures", str(known),
                     "-k", "shift_invariance", "--results-dir", str(out))
    return proc, target, out
