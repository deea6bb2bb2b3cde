"""Plugin processes under a user id of their own (normbench.judge_user): where the run is root, a plugin cannot
write what the run owns, signal its processes or read what only the run's user may read, and is still judged; the
control, the same plugin judged as the run's own user (NORMBENCH_JUDGE_USER=same), shows each attempt succeed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from factories.suite_runs import run_suite

from normbench.judge_user import ENVIRONMENT, FIRST_ID, VIEW, decide, prepare

ROOT_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                               reason="a user id of its own for plugin code needs a root run on Linux")


@pytest.fixture
def open_folder():
    """A folder any user may enter (tmp_path's are the run's user's only): what the plugin reaches for is closed
    to it by the files' own modes, not by a folder on the way."""
    folder = Path(tempfile.mkdtemp(prefix="normbench-overreach-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _overreach(folder: Path, monkeypatch: pytest.MonkeyPatch, same_user: bool) -> dict[str, object]:
    owned = folder / "owned.txt"
    owned.write_text("original\n")
    owned.chmod(0o644)
    secret = folder / "secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    results = folder / "results"
    results.mkdir(mode=0o755)
    victim = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    monkeypatch.setenv("OVERREACH_FILE", str(owned))
    monkeypatch.setenv("OVERREACH_PID", str(victim.pid))
    monkeypatch.setenv("OVERREACH_RESULTS", str(results))
    monkeypatch.setenv("OVERREACH_SECRET", str(secret))
    if same_user:
        monkeypatch.setenv(ENVIRONMENT, "same")
    try:
        proc = run_suite("--results-dir", str(results), "--impl-path", "plugins.overreach:implementations",
                         "--impl", "overreach.LayerNorm", "-p", "no:xdist",
                         "-k", "forward_equivalence-float32 or repeated_use")
    finally:
        alive = victim.poll() is None
        victim.kill()
        victim.wait()
    return {"proc": proc, "owned": owned.read_text(), "alive": alive,
            "forged": (results / "forged.json").exists()}


@pytest.mark.slow
@ROOT_ONLY
def test_a_plugin_under_its_own_user_id_cannot_write_signal_or_forge_and_is_still_judged(open_folder, monkeypatch):
    seen = _overreach(open_folder, monkeypatch, same_user=False)
    proc = seen["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 passed" in proc.stdout, proc.stdout[-3000:]
    assert seen["owned"] == "original\n"
    assert seen["alive"]
    assert not seen["forged"]


@pytest.mark.slow
@ROOT_ONLY
def test_the_control_judged_as_the_run_s_own_user_shows_every_attempt_succeed(open_folder, monkeypatch):
    seen = _overreach(open_folder, monkeypatch, same_user=True)
    assert "forged" in seen["owned"]
    assert not seen["alive"]
    assert seen["forged"]


# -- the decision, made from file modes alone before any plugin code runs ----------------------------------------

def test_a_run_that_is_not_root_keeps_plugin_code_under_its_own_user(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    decision = decide(("entry_point", "torch.nn.LayerNorm", "normbench.builtins:implementations"))
    assert not decision.unprivileged
    assert "not root" in decision.reason


def test_the_environment_can_keep_plugin_code_under_the_run_s_user(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT, "same")
    decision = decide(("entry_point", "torch.nn.LayerNorm", "normbench.builtins:implementations"))
    assert not decision.unprivileged and ENVIRONMENT in decision.reason


@ROOT_ONLY
def test_a_plugin_file_only_the_run_s_user_may_read_is_judged_as_that_user_and_the_reason_names_it(tmp_path):
    plugin = tmp_path / "closed_plugin.py"
    plugin.write_text("implementations = []\n")
    plugin.chmod(0o600)
    decision = decide(("path", f"{plugin}:implementations"))
    assert not decision.unprivileged
    assert str(plugin) in decision.reason and "chmod" in decision.reason and decision.stays_root
    plugin.chmod(0o644)
    readable = decide(("path", f"{plugin}:implementations"))
    assert readable.unprivileged
    # pytest's own 0700 folder on the way is opened in the child's view, not a reason to stay root
    closed = [Path(f) for f in readable.closed]
    assert any(plugin.is_relative_to(f) and not stat.S_IMODE(f.stat().st_mode) & stat.S_IXOTH for f in closed)


@ROOT_ONLY
def test_a_prepared_folder_gives_the_working_and_spill_folders_to_a_fresh_id(tmp_path):
    decision = decide(("entry_point", "torch.nn.LayerNorm", "normbench.builtins:implementations"))
    output = prepare(tmp_path / "child", decision)
    work, spill = output.parent / "cwd", output.parent / "tensors"
    owners = {work.stat().st_uid, spill.stat().st_uid}
    assert len(owners) == 1 and owners.pop() >= FIRST_ID
    assert (output.parent / VIEW).is_file()
    other = prepare(tmp_path / "other", decision)
    assert (other.parent / "cwd").stat().st_uid != work.stat().st_uid  # two children: two ids


def test_a_folder_the_run_did_not_give_away_keeps_the_child_as_it_is(tmp_path):
    output = prepare(tmp_path / "child", decide(("path", "x.py:y")).__class__(False, "test"))
    assert (output.parent / "cwd").stat().st_uid == os.geteuid()
    assert not (output.parent / VIEW).exists()
