"""A conformance run's forkserver starts from the pytest entry point, before normbench.pytest_plugin imports torch
(normbench_forkserver), so the two imports overlap; configure keeps it only when the run judges with its preload."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from factories.suite_runs import run_suite
from helpers import judge_probe

from normbench.sandbox import Limits
from normbench_forkserver import guess_applies, names_the_suite


@pytest.mark.parametrize(("args", "named"), [
    (["suite"], True),
    (["-n", "2", "/somewhere/normbench/suite", "-q"], True),
    (["suite/conformance.py::layernorm"], True),
    (["--pyargs", "normbench.suite", "--impl", "torch.nn.LayerNorm"], True),
    (["--pyargs", "normbench.suite.conformance"], True),
    (["tests"], False),
    (["normbench.suite"], False),  # a module name without --pyargs is a path, and there is none
    # an option's value that reads as such a path is a wrong guess, which configure ends (below)
    (["tests/test_suite_runner.py", "-k", "suite"], True),
    ([], False),
])
def test_the_command_line_names_the_suite(args, named):
    assert names_the_suite(args) is named


def test_the_suite_package_is_named_as_it_is_installed():
    import normbench.suite
    import normbench_forkserver

    assert normbench_forkserver.SUITE_PACKAGE == normbench.suite.__name__


def test_a_deployment_variant_is_left_to_configure():
    assert guess_applies(["suite"])
    assert not guess_applies(["suite", "--variant", "compile"])
    assert not guess_applies(["suite", "--variant=export"])


def test_the_switch_leaves_the_start_to_configure(monkeypatch):
    import normbench_forkserver

    monkeypatch.setenv(normbench_forkserver.EARLY_SWITCH, "0")
    try:
        assert not normbench_forkserver.start_early(["suite"])
        assert normbench_forkserver.early_preload() is None
    finally:
        normbench_forkserver.discard_early()


def test_the_start_imports_no_torch_and_a_wrong_guess_is_ended():
    script = textwrap.dedent("""
        import os, sys
        import normbench_forkserver as f
        from multiprocessing import forkserver
        assert f.start_early(["suite"])
        pid = forkserver._forkserver._forkserver_pid
        print("torch" in sys.modules, "normbench" in sys.modules, f.early_preload() == [*f.FORKSERVER_PRELOAD,
              f.FROZEN_HEAP])
        f.discard_early()
        print(f.early_preload(), forkserver._forkserver._forkserver_pid)
        try:
            os.kill(pid, 0)
            print("alive")
        except ProcessLookupError:
            print("ended")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "False", "True", "None", "None", "ended"], out.stdout


def test_a_judging_process_uses_the_hypothesis_folder_the_run_chose(tmp_path, monkeypatch):
    # under the run's own user id: a child under an id of its own keeps hypothesis' folder in its own (judge_user)
    monkeypatch.setenv("NORMBENCH_JUDGE_USER", "same")
    chosen = tmp_path / "hypothesis-home"
    outcome = judge_probe("plugins.hypothesis_probe:implementation", "probe.hypothesis",
                          Limits(hypothesis_home=str(chosen)))
    found = re.search(r"hypothesis home: (\S+)", outcome.summary)
    assert found, outcome.summary
    assert found.group(1) == str(chosen), outcome.summary


@pytest.mark.slow
@pytest.mark.parametrize("addopts", ["", "--variant compile"])
def test_what_configure_chose_reaches_a_forkserver_started_before_it(addopts, monkeypatch):
    # `pytest suite` starts the forkserver from the entry point; options it cannot see there (PYTEST_ADDOPTS) are
    # configure's: a compile warm-up replaces that forkserver, and --no-record's scratch hypothesis folder is the
    # judging processes' (under the run's own user id: one of its own keeps hypothesis in its own folder)
    monkeypatch.setenv("PYTEST_ADDOPTS", addopts)
    monkeypatch.setenv("NORMBENCH_JUDGE_USER", "same")
    proc = run_suite("-p", "no:xdist", "--no-record", "--no-entry-points", "--impl-path",
                     "plugins.hypothesis_probe:implementation", "-k", "dtype_preservation and float32")
    found = re.findall(r"hypothesis home: (\S+) compile warmed: (\w+)", proc.stdout)
    assert found, proc.stdout[-3000:] + proc.stderr[-3000:]
    for home, warmed in found:
        assert Path(home).name.startswith("normbench-hypothesis-"), home
        assert warmed == str(bool(addopts)), proc.stdout[-3000:]
