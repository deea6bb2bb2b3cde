"""Records only the parent writes: a seal only the run can make, checked when the run reads its
record back; no process a plugin started outlives the records; judging processes work in a scratch folder.

The suite runs judge plugins of tests/plugins/run_enders.py beside a correct control, serially and under xdist: one
leaves a detached process (double fork, its own session: out of the process group normbench kills) that would
rewrite the record after the run; one writes into its working and temporary folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from factories.suite_runs import ROOT, run_suite
from helpers import folder_plugins_may_write

from normbench.publish import write_leaderboard
from normbench.store.errors import ForgedRecord
from normbench.store.records import conformance_record, record_path
from normbench.store.seal import new_key, seal_path
from normbench.store.validate import load_record
from normbench.store.write import store_conformance, store_record


def _record(verdict: str = "pass") -> dict[str, Any]:
    outcome = {"test_id": "layernorm[x.LN-shift_invariance-float32]", "implementation": "x.LN", "family": "layernorm",
               "verdict": verdict, "summary": "", "property": "shift_invariance", "dtype": "float32"}
    return conformance_record([outcome], profile="ci")


def test_a_record_changed_after_the_run_sealed_it_is_refused_naming_the_file(tmp_path):
    key = new_key()
    path = store_conformance(tmp_path, _record(), key=key)
    assert seal_path(path).is_file()
    write_leaderboard(tmp_path, sealed={path: key})  # the control: what was sealed reads back
    load_record(path, key)
    forged = path.read_text().replace('"pass"', '"fail"')
    path.write_text(forged)
    with pytest.raises(ForgedRecord, match=f"{path}: its bytes are not those this run wrote"):
        write_leaderboard(tmp_path, sealed={path: key})
    board = (tmp_path / "LEADERBOARD.md").read_text()
    assert str(path) in board  # listed as refused, not shown
    with pytest.raises(ForgedRecord):
        load_record(path, key)


def test_a_seal_needs_the_run_s_key_and_names_the_record(tmp_path):
    key = new_key()
    path = store_conformance(tmp_path, _record(), key=key)
    # a forger without the key rewrites record and seal alike: still refused
    other = new_key()
    store_conformance(tmp_path, _record("fail"), key=other)
    with pytest.raises(ForgedRecord, match="conformance.json"):
        load_record(path, key)
    seal_path(path).unlink()
    with pytest.raises(ForgedRecord, match="its seal conformance.json.seal cannot be read"):
        load_record(path, key)


def test_a_sealed_record_that_disappears_is_refused(tmp_path):
    key = new_key()
    path = store_conformance(tmp_path, _record(), key=key)
    path.unlink()
    with pytest.raises(ForgedRecord, match="it is gone"):
        write_leaderboard(tmp_path, sealed={path: key})


def test_a_sealed_record_copied_over_another_file_does_not_verify(tmp_path):
    key = new_key()
    path = store_conformance(tmp_path, _record(), key=key)
    copy = path.with_name("claims.json")
    copy.write_bytes(path.read_bytes())
    seal_path(copy).write_bytes(seal_path(path).read_bytes())
    with pytest.raises(ForgedRecord):
        load_record(copy, key)


def test_a_write_without_a_key_drops_the_stale_seal(tmp_path):
    key = new_key()
    path = store_conformance(tmp_path, _record(), key=key)
    newer = _record("fail")
    store_record(tmp_path, newer)  # normbench merge, a benchmark session: no run key
    assert not seal_path(path).exists()
    assert record_path(tmp_path, newer) == path


_DETACHED = r"""
import os, signal, sys
os.setsid()                      # a judging process leads a session of its own
if os.fork() == 0:
    os.setsid()                  # and a plugin's helper leaves it
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        signal.pause()
    os._exit(0)
os.wait()
signal.pause()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_CHILD_SUBREAPER are Linux's")
def test_processes_outside_the_session_are_found_and_ended_and_the_rest_is_left_alone():
    # Run in a subprocess that makes itself the subreaper, as the pytest process of a run does.
    script = f"""
import subprocess, sys
from normbench.strays import become_subreaper, end_plugin_processes, plugin_processes
assert become_subreaper()
ours = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
plugin = subprocess.Popen([sys.executable, "-c", {_DETACHED!r}], stdout=subprocess.PIPE, text=True)
helper = int(plugin.stdout.readline())
found = plugin_processes()
assert helper in found and plugin.pid in found and ours.pid not in found, (found, helper, plugin.pid, ours.pid)
killed = end_plugin_processes()
assert set(killed) >= {{helper, plugin.pid}}, killed
assert plugin_processes() == [] and ours.poll() is None
ours.kill()
print("ok", helper)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not _alive(int(done.stdout.split()[-1]))


# -- the suite, serially and under xdist ---------------------------------------------------------------------

_IMPLS = ("control", "leaves_a_writer", "writes_where_it_runs")


@pytest.fixture(scope="module", params=["serial", "xdist"])
def run_enders_run(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    results, pidfile = folder / "results", folder_plugins_may_write() / "survivor.pid"
    args = ["-n", "2"] if request.param == "xdist" else ["-p", "no:xdist"]
    for name in _IMPLS:
        args += ["--impl-path", f"plugins.run_enders:{name}", "--impl", f"run_enders.{name}"]
    saved = os.environ.get("NORMBENCH_TEST_SURVIVOR")
    os.environ["NORMBENCH_TEST_SURVIVOR"] = str(pidfile)
    try:
        proc = run_suite(*args, "--results-dir", str(results), "-k", "float32 and (shift_invariance or "
                         "scale_invariance)", timeout=600)
    finally:
        if saved is None:
            os.environ.pop("NORMBENCH_TEST_SURVIVOR")
        else:
            os.environ["NORMBENCH_TEST_SURVIVOR"] = saved
    survivor = int(pidfile.read_text()) if pidfile.exists() else None
    yield proc, results, survivor
    if survivor is not None and _alive(survivor):
        os.kill(survivor, signal.SIGKILL)
    (ROOT / "written-by-plugin.txt").unlink(missing_ok=True)


def _outcomes(results: Path, impl: str) -> list[dict[str, Any]]:
    record = json.loads(next(results.glob("raw/*/conformance.json")).read_text())
    return [o for o in record["outcomes"].values() if o.get("implementation") == impl]


@pytest.mark.slow
def test_no_process_a_plugin_started_outlives_the_run(run_enders_run):
    proc, _, survivor = run_enders_run
    assert survivor is not None, proc.stdout[-3000:]  # the plugin did start its writer
    assert not _alive(survivor), f"the plugin's detached process {survivor} outlived the run"


@pytest.mark.slow
def test_judging_processes_work_in_a_scratch_folder_that_goes_with_the_run(run_enders_run):
    proc, results, _ = run_enders_run
    printed = [o["captured_output"] for o in _outcomes(results, "run_enders.writes_where_it_runs")
               if "captured_output" in o]
    assert printed, proc.stdout[-3000:]
    cwd, tmp = printed[0].split()[0].removeprefix("cwd="), printed[0].split()[1].removeprefix("tmp=")
    assert Path(cwd) != ROOT and cwd == tmp
    assert not Path(cwd).exists()  # removed with the run's scratch folder, with what the plugin wrote there
    assert not (ROOT / "written-by-plugin.txt").exists()
    assert not list(results.rglob("written-by-plugin*"))


@pytest.mark.slow
def test_the_record_is_sealed_and_the_control_keeps_its_verdict(run_enders_run):
    proc, results, _ = run_enders_run
    record = next(results.glob("raw/*/conformance.json"))
    assert seal_path(record).is_file()
    assert "refused a record" not in proc.stdout
    verdicts = {o["verdict"] for o in _outcomes(results, "run_enders.control")} - {"unjudged"}
    assert verdicts == {"pass"}, proc.stdout[-3000:]
