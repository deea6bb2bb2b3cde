"""A run that always ends: a judging process that stops or kills its forkserver
costs one error item and the forkserver is replaced; one that kills its xdist worker costs its own implementation
only (the items the lost worker took along are judged by the controller); an interrupted run keeps the stored
outcomes of the items it never ran. The plugins are tests/plugins/run_enders.py, each beside a correct control."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from factories.suite_runs import run_suite

from normbench.judge_user import ENVIRONMENT
from normbench.sandbox import Limits, SandboxPool, discover_isolated
from normbench.spec import load_specs

PROPERTIES = "float32 and (shift_invariance or scale_invariance)"
FOUR_PROPERTIES = "float32 and (shift_invariance or scale_invariance or forward_equivalence or batch_independence)"


def _paths(*names: str) -> list[str]:
    args = []
    for name in names:
        module, _, attr = name.rpartition(".")
        args += ["--impl-path", f"plugins.{module}:{attr}", "--impl", name]
    return args


def _record(results: Path) -> dict[str, Any]:
    return json.loads(next(results.glob("raw/*/conformance.json")).read_text())


def _outcomes(record: dict[str, Any], impl: str) -> list[dict[str, Any]]:
    return [o for o in record["outcomes"].values() if o.get("implementation") == impl and o["verdict"] != "unjudged"]


@pytest.fixture(scope="module", autouse=True)
def _as_the_run_s_own_user():
    """Where the run is root a plugin's process has a user id of its own and cannot signal its forkserver or worker
    at all (tests/test_judge_user.py); what follows is what holds where it keeps the run's user."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENVIRONMENT, "same")
        yield


@pytest.mark.parametrize("attack,what", [("stops_forkserver", "stopped by signal SIGSTOP"),
                                         ("kills_forkserver", "killed by signal SIGKILL")])
def test_a_child_that_harms_its_forkserver_costs_one_item_and_the_next_is_judged(attack, what):
    specs = load_specs().specs
    registry = discover_isolated([f"plugins.run_enders:{attack}", "plugins.run_enders:control"], families=specs,
                                 include_entry_points=False)
    pool = SandboxPool(specs, "ci", Limits(item_timeout=60))
    try:
        harmed = pool.judge(registry.implementations[f"run_enders.{attack}"], "layernorm", "shift_invariance",
                            "any", "float32", "cpu")
        # checked before the next item: with a stopped forkserver that would wait for ever
        assert harmed.verdict == "error" and what in harmed.summary, harmed.summary
        assert "forkserver" in harmed.summary
        after = pool.judge(registry.implementations["run_enders.control"], "layernorm", "shift_invariance", "any",
                           "float32", "cpu")
    finally:
        pool.close()
    assert after.verdict == "pass", after.summary


@pytest.fixture(scope="module", params=["serial", "xdist"])
def forkserver_run(request, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    parallel = ["-n", "2"] if request.param == "xdist" else ["-p", "no:xdist"]
    proc = run_suite(*parallel, "--results-dir", str(results), "-k", PROPERTIES,
                     *_paths("run_enders.stops_forkserver", "run_enders.kills_forkserver", "run_enders.control"),
                     timeout=600)
    return proc, _record(results)


@pytest.mark.slow
def test_a_run_whose_forkserver_is_stopped_or_killed_ends_with_each_attacker_an_error(forkserver_run):
    proc, record = forkserver_run
    assert proc.returncode == 1, proc.stdout[-3000:]
    for attack, what in (("stops_forkserver", "stopped by signal SIGSTOP"), ("kills_forkserver", "killed by")):
        outcomes = _outcomes(record, f"run_enders.{attack}")
        assert outcomes and all(o["verdict"] == "error" for o in outcomes), outcomes
        assert all("forkserver" in o["summary"] and what in o["summary"] for o in outcomes), outcomes[0]["summary"]
    control = _outcomes(record, "run_enders.control")
    assert len(control) == 2 and {o["verdict"] for o in control} == {"pass"}, control


@pytest.mark.slow
def test_a_child_that_kills_its_xdist_worker_costs_its_own_implementation_only(tmp_path):
    results = tmp_path / "results"
    # xdist sends each worker two of the killer's four items first (its initial batch) and the sibling's four only
    # as items complete; with no restart allowed, the first lost worker stops the run, and the sibling's items,
    # queued behind the killer's, are never sent anywhere.
    proc = run_suite("-n", "2", "--max-worker-restart", "0", "--results-dir", str(results), "-k", FOUR_PROPERTIES,
                     *_paths("run_enders.kills_worker", "run_enders.sibling"), timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    record = _record(results)
    killer = _outcomes(record, "run_enders.kills_worker")
    assert killer and all(o["verdict"] == "error" for o in killer), killer
    assert any("crashed while running" in o["summary"] for o in killer)
    sibling = _outcomes(record, "run_enders.sibling")
    assert len(sibling) == 4 and {o["verdict"] for o in sibling} == {"pass"}, [o["summary"] for o in sibling]
    assert "judged 4 items in the controller that a lost xdist worker never reported" in proc.stdout
    assert "INTERNALERROR" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_an_interrupted_run_keeps_the_stored_outcomes_of_the_items_it_never_ran(tmp_path):
    results = tmp_path / "results"
    first = run_suite("-p", "no:xdist", "--results-dir", str(results), "-k", PROPERTIES,
                      *_paths("run_enders.control"))
    assert first.returncode == 0, first.stdout[-3000:]
    stored = {o["test_id"]: o for o in _outcomes(_record(results), "run_enders.control")}
    assert len(stored) == 2
    # hostile.segfault is planned first (by name): -x stops the run on its first item, before the control
    second = run_suite("-p", "no:xdist", "-x", "--results-dir", str(results), "-k", PROPERTIES,
                       *_paths("hostile.segfault", "run_enders.control"))
    assert second.returncode == 1 and "stopping after 1 failures" in second.stdout, second.stdout[-3000:]
    record = _record(results)
    control = {o["test_id"]: o for o in _outcomes(record, "run_enders.control")}
    assert {t: o["verdict"] for t, o in control.items()} == {t: "pass" for t in stored}
    assert all(o["recorded_utc"] == stored[t]["recorded_utc"] and "interrupted" in o["stale"]
               for t, o in control.items())
    segfault = _outcomes(record, "hostile.segfault")
    assert any("SIGSEGV" in o["summary"] for o in segfault)  # what the interrupted run did judge is stored
    assert any("interrupted" in o["summary"] for o in segfault)  # and an item it never ran, with nothing stored
    assert "stale" not in json.dumps(segfault)
