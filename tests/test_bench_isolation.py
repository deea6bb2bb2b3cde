"""Benchmarks timed out of the plugin's reach, end to end: correct LayerNorms that patch
time.perf_counter / perf_counter_ns / monotonic at import to hide 90% and 50% of their forward are published
untrusted (the benchmark process's own clock disagrees), a cache returning a stale output is untrusted (the output
check), and the control beside them, the same code with honest clocks, stays trusted; the benchmark process never
imports any of them. The comparisons themselves are pure functions, tested without a clock in bench/test_trust.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import folder_plugins_may_write

# slow (`pytest tests -m slow`, .ci/run): every test reads one `pytest suite/benchmarks` run in a subprocess
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHEATS = {"cheat.hides_90": "plugins.clock_hides_90:implementation",
          "cheat.hides_50": "plugins.clock_hides_50:implementation",
          "cheat.stale": "plugins.clock_forgery:stale", "cheat.control": "plugins.clock_forgery:control"}


@pytest.fixture(scope="module")
def cheats_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    log = folder_plugins_may_write() / "imports.log"
    log.touch(mode=0o666)  # every process appends, each under its own user id where the run is root
    log.chmod(0o666)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    env.update(PYTHONPATH=str(ROOT / "tests") + os.pathsep + env.get("PYTHONPATH", ""),
               NORMBENCH_TEST_IMPORT_LOG=str(log))
    args = ["--impl", "torch.nn.LayerNorm"]
    for name, path in CHEATS.items():
        args += ["--impl-path", path, "--impl", name]
    # A 256x1024 forward takes ~0.3 ms here: every block is >= 50 ms of rounds of one call, so the honest control's
    # clock agrees with the parent's far above the 70% bound even on a loaded machine, while a hider reads at most
    # its reported fraction whatever the load.
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suite/benchmarks", "-p",
                             "normbench.bench.pytest_plugin", "-q", "--results-dir", str(results), *args,
                             "--bench-shape", "256x1024", "--bench-dtype", "float32", "--bench-pass", "forward",
                             "--bench-budget", "0.1", "--bench-roofline-mib", "8", "--bench-threads", "1",
                             "--device", "cpu"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stdout, stderr = proc.communicate(timeout=600)
    record = json.loads(next((results / "raw").glob("*/benchmark-cpu.json")).read_text())
    entries = {e["implementation"]: e for e in record["results"].values()}
    importers = {int(line) for line in log.read_text().split()}
    return proc, stdout + stderr, entries, importers, results


def test_the_run_completes_and_the_benchmark_process_never_imports_a_plugin(cheats_run):
    proc, output, entries, importers, _ = cheats_run
    assert proc.returncode == 0, output[-4000:]
    assert set(CHEATS) | {"torch.nn.LayerNorm"} <= set(entries)
    assert importers and proc.pid not in importers  # imported in discovery and timing children only


@pytest.mark.parametrize("name", ["cheat.hides_90", "cheat.hides_50"])
def test_a_clock_that_hides_time_is_caught_by_the_parents_clock(cheats_run, name):
    _, output, entries, _, _ = cheats_run
    e = entries[name]
    assert "accounted for" in e["untrusted"] and not e["clock_check"]["agree"]
    assert e["clock_check"]["ratio"] < 0.6  # hiding half reads at most 50% (the parent's clock only adds)
    assert f"UNTRUSTED, not ranked: {e['id']}" in output
    # never the session's "closest to the roofline" (the stale cache reads thousands of percent)
    closest = next(line for line in output.splitlines() if "closest to the roofline" in line)
    assert "cheat.hides" not in closest and "cheat.stale" not in closest


def test_a_stale_cached_output_is_caught_by_the_output_check(cheats_run):
    _, _, entries, _, _ = cheats_run
    e = entries["cheat.stale"]
    check = e["output_check"]
    assert check["applied"] and check["failed"] == check["rounds"] > 0
    assert "differs from the float64 truth" in e["untrusted"]


@pytest.mark.parametrize("name", ["cheat.control", "torch.nn.LayerNorm"])
def test_the_controls_stay_trusted(cheats_run, name):
    _, _, entries, _, _ = cheats_run
    e = entries[name]
    assert "untrusted" not in e, e.get("untrusted")
    assert e["clock_check"]["agree"] and e["output_check"]["applied"] and e["output_check"]["failed"] == 0
    assert e["output_check"]["rounds"] == e["rounds"] and e["timed_in"] == "implementation process"


def test_the_leaderboard_marks_the_cheats_and_ranks_the_controls(cheats_run):
    _, _, entries, _, results = cheats_run
    board = (results / "LEADERBOARD.md").read_text()
    for name in ("cheat.hides_90", "cheat.hides_50", "cheat.stale"):
        assert f"UNTRUSTED: {entries[name]['untrusted'][:40]}" in board
    import csv

    with (results / "csv" / "ranking.csv").open() as fh:
        rows = {r["implementation"]: r for r in csv.DictReader(fh)}
    roof = next(h for h in next(iter(rows.values())) if h.startswith("geomean % roofline"))
    for name in ("cheat.hides_90", "cheat.hides_50", "cheat.stale"):
        assert "1 untrusted benchmark figure, not ranked" in rows[name]["conformance"] and rows[name][roof] == ""
    assert float(rows["cheat.control"][roof]) > 0 and float(rows["torch.nn.LayerNorm"][roof]) > 0
