"""`pytest suite` end to end: broken plugins and specs are reported, everything else is still judged,
known failures apply, a hanging implementation fails alone, results and the leaderboard are written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from factories.suite_runs import run_suite

# slow (`pytest tests -m slow`, .ci/run): every test starts `pytest suite` in a subprocess or reads such a run
pytestmark = pytest.mark.slow


def line_for(output: str, needle: str) -> str:
    lines = [line for line in output.splitlines() if needle in line]
    assert lines, f"no line with {needle!r} in:\n{output[-4000:]}"
    return lines[0]


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    results = tmp_path_factory.mktemp("results")
    specs = tmp_path_factory.mktemp("specs")
    (specs / "bad.yaml").write_text("family: bad\nsummary: [unclosed\n")
    proc = run_suite("--results-dir", str(results), "--spec-dir", str(specs),
                     "--impl-path", "plugins.broken:nan_output", "--impl-path", "plugins.broken:wrong_shape",
                     "--impl-path", "plugins.broken:raises_on_call", "--impl-path", "plugins.broken:factory_raises",
                     "--impl", "torch.nn.LayerNorm", "--impl", "broken.nan_output",
                     "--impl", "broken.wrong_shape", "--impl", "broken.factory_raises",
                     # two names that match nothing, one a typo of a built-in's: each is its own item, beside the rest
                     "--impl", "no.such.impl", "--impl", "torch.nn.LayerNrom",
                     "-k", "forward_equivalence-float32 or plugin_error or spec_error or unknown_impl")
    return proc, results


@pytest.fixture(scope="module")
def rmsnorm_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """One item of torch.nn.RMSNorm, recorded and written as JUnit XML (two tests read it)."""
    results = tmp_path_factory.mktemp("results")
    xml = results.parent / f"{results.name}-junit.xml"
    proc = run_suite("--results-dir", str(results), f"--junitxml={xml}", "--impl", "torch.nn.RMSNorm",
                     "-k", "forward_equivalence-float32")
    return proc, results, xml


def test_broken_plugins_are_reported_and_the_rest_is_judged(broken_run):
    proc, _ = broken_run
    out = proc.stdout
    assert proc.returncode == 1
    assert "PASSED suite/conformance.py::layernorm[torch.nn.LayerNorm-forward_equivalence-float32]" in out
    assert "plugin setup exploded" in out
    assert "FAILED suite/conformance.py::layernorm[broken.nan_output-forward_equivalence-float32]" in out
    assert "non-finite" in out
    assert "output shape" in out and "broken.wrong_shape" in out
    assert "this factory always fails" in out and "broken.factory_raises" in out
    assert "Traceback (most recent call last)" not in out + proc.stderr


def test_bad_spec_is_one_clear_failure(broken_run):
    proc, _ = broken_run
    line = line_for(proc.stdout, "FAILED suite/conformance.py::spec_error[bad.yaml]")
    assert "bad.yaml" in line
    assert "bad spec:" in proc.stdout and "malformed YAML" in proc.stdout
    assert "bad.yaml" in proc.stdout and "malformed YAML" in proc.stdout


def test_results_record_and_leaderboard_are_written(broken_run):
    _, results = broken_run
    records = list((results / "raw").glob("*/conformance.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["api_version"] == 1 and record["kind"] == "conformance"
    assert {"cpu", "cores", "torch"} <= set(record["machine"]) and record["created_utc"]
    good = record["outcomes"]["layernorm[torch.nn.LayerNorm-forward_equivalence-float32]"]
    assert good["verdict"] == "pass" and good["metrics"]["output.max_ulp"] >= 0
    bad = record["outcomes"]["layernorm[broken.nan_output-forward_equivalence-float32]"]
    assert bad["verdict"] == "fail" and bad["counterexample"]["input"]["shape"]
    board = (results / "LEADERBOARD.md").read_text()
    assert "torch.nn.LayerNorm" in board and "broken.nan_output" in board


def test_known_failures_apply_and_stale_entries_are_reported(tmp_path):
    known = tmp_path / "known"
    known.mkdir()
    (known / "broken.nan_output.yaml").write_text(
        "implementation: broken.nan_output\n"
        "known_failures:\n"
        "  - id: layernorm[broken.nan_output-forward_equivalence\n"
        "    reason: returns NaN on purpose\n"
        "  - id: layernorm[broken.nan_output-no_such_property\n"
        "    reason: a typo matches nothing\n")
    (known / "torch.nn.LayerNorm.yaml").write_text(
        "implementation: torch.nn.LayerNorm\n"
        "known_failures:\n"
        "  - id: layernorm[torch.nn.LayerNorm-forward_equivalence\n"
        "    reason: stale on purpose\n")
    proc = run_suite("--no-record", "--known-failures", str(known), "--impl-path", "plugins.broken:nan_output",
                     "--impl", "broken.nan_output", "--impl", "torch.nn.LayerNorm",
                     "-k", "forward_equivalence-float32")
    assert "XFAIL suite/conformance.py::layernorm[broken.nan_output-forward_equivalence-float32]" in proc.stdout
    assert "returns NaN on purpose" in proc.stdout
    assert "stale known failure" in proc.stdout and "stale on purpose" in proc.stdout
    assert "a typo matches nothing" in proc.stdout
    # built-in entries for items this narrowed run deselected were not exercised: not stale
    assert "torch.nn.BatchNorm1d-constant_rows" not in proc.stdout
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_a_hanging_implementation_fails_alone():
    # A hang is only ever detected by the item's time limit, and the same limit applies to the LayerNorm item that
    # must pass beside it: 6 s is 5x what that item takes here idle (1.2 s, its process's start included), and the
    # limit counts the item's own time (normbench.item_clock: wall time less its waits for a CPU), so a busy machine
    # slows it without turning it into a timeout (tests/test_isolation.py judges 120 correct items under the same
    # 6 s). The hang waits out the whole limit: 30 s here cost 24 s more. The assertions are on verdicts, never on
    # durations.
    proc = run_suite("--no-record", "--check-timeout", "6", "--impl-path", "plugins.broken:hangs",
                     "--impl", "broken.hangs", "--impl", "torch.nn.LayerNorm", "-k", "forward_equivalence-float32")
    assert "FAILED suite/conformance.py::layernorm[broken.hangs-forward_equivalence-float32]" in proc.stdout
    assert "timed out" in proc.stdout and "process was killed" in proc.stdout
    assert "PASSED suite/conformance.py::layernorm[torch.nn.LayerNorm-forward_equivalence-float32]" in proc.stdout


def test_unknown_impl_name_is_reported(broken_run):
    proc, _ = broken_run
    assert "--impl 'no.such.impl' matches no implementation" in proc.stdout


def test_a_mistyped_impl_suggests_the_closest_name(broken_run):
    proc, _ = broken_run
    line = next(line for line in proc.stdout.splitlines()
                if "--impl 'torch.nn.LayerNrom' matches no implementation" in line)
    assert "did you mean 'torch.nn.LayerNorm'?" in line and "`normbench list` prints all" in line
    assert "'torch.nn.BatchNorm1d'" not in line  # no longer every name


def test_parallel_run_records_every_outcome(tmp_path):
    proc = run_suite("-n", "2", "--results-dir", str(tmp_path), "--impl", "torch.nn.LayerNorm",
                     "--impl", "torch.nn.RMSNorm", "-k", "equivalence-float32")
    assert proc.returncode == 0, proc.stdout[-3000:]
    record = json.loads(next((tmp_path / "raw").glob("*/conformance.json")).read_text())
    ids = set(record["outcomes"])
    assert "layernorm[torch.nn.LayerNorm-gradient_equivalence-float32]" in ids
    assert "rmsnorm[torch.nn.RMSNorm-forward_equivalence-float32]" in ids
    assert "normbench summary" in proc.stdout


def test_a_narrowed_run_never_claims_conformance(rmsnorm_run):
    proc, results, _ = rmsnorm_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    record = json.loads(next((results / "raw").glob("*/conformance.json")).read_text())
    summary = record["implementations"]["torch.nn.RMSNorm"]
    assert summary["judged"] == 1 and summary["unjudged"] == summary["planned"] - 1 > 30
    unjudged = record["outcomes"]["rmsnorm[torch.nn.RMSNorm-shift_invariance-float32]"]
    assert unjudged["verdict"] == "unjudged" and "not selected" in unjudged["summary"]
    board = (results / "LEADERBOARD.md").read_text()
    assert "conforms (" not in board and "not judged" in board


def test_an_interrupted_run_records_every_selected_item(tmp_path):
    proc = run_suite("-x", "--results-dir", str(tmp_path), "--impl-path", "plugins.broken:nan_output",
                     "--impl", "broken.nan_output", "--impl", "torch.nn.RMSNorm", "-k", "equivalence")
    assert proc.returncode == 1
    record = json.loads(next((tmp_path / "raw").glob("*/conformance.json")).read_text())
    rms = [o for o in record["outcomes"].values() if o["implementation"] == "torch.nn.RMSNorm"
           and "equivalence" in o["property"]]
    assert rms and all(o["verdict"] == "error" and "interrupted" in o["summary"] for o in rms)
    assert record["implementations"]["torch.nn.RMSNorm"]["errors"] == len(rms)


def test_a_bad_results_dir_fails_before_judging(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_suite("--results-dir", str(blocker / "results"), "--impl", "torch.nn.RMSNorm")
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--results-dir" in proc.stderr and str(blocker) in proc.stderr
    assert "PASSED" not in proc.stdout and "passed" not in proc.stdout


def test_junitxml_carries_the_verdict_and_the_measured_error(rmsnorm_run):
    import xml.etree.ElementTree as ET

    proc, _, xml = rmsnorm_run
    assert proc.returncode == 0, proc.stdout[-2000:]
    (case,) = ET.parse(xml).getroot().iter("testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["verdict"] == "pass" and props["expect"] == "holds"
    assert 0 <= float(props["tol_ratio"]) < 1 and float(props["output.max_ulp"]) >= 0


def test_a_missing_library_is_one_skipped_item_with_the_reason(tmp_path):
    proc = run_suite("--results-dir", str(tmp_path), "--no-entry-points",
                     "--impl-path", "plugins.broken:library_missing", "--impl-path", "plugins.broken:library_broken",
                     "-k", "unavailable or forward_equivalence-float32")
    assert "SKIPPED" in proc.stdout and "No module named 'somelib'" in proc.stdout
    assert "libcuda.so.1 not found" in proc.stdout
    assert "FAILED suite/conformance.py::layernorm[broken.available-forward_equivalence-float32]" in proc.stdout
    record = json.loads(next((tmp_path / "raw").glob("*/conformance.json")).read_text())
    assert set(record["unavailable"]) == {"plugin_unavailable[somelib.FusedNorm]", "plugin_unavailable[otherlib]"}
    assert not any(k.startswith("plugin_error") for k in record["errors"])
