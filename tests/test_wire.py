"""The data-only boundary: nothing a plugin's process sends is unpickled in normbench's, and a
message that breaks the protocol costs that item alone, as an error that says what was wrong."""

from __future__ import annotations

import dataclasses
import multiprocessing

import pytest
from helpers import folder_plugins_may_write

from normbench import wire
from normbench.implementation import Implementation
from normbench.remote.judge import trusted
from normbench.sandbox import Limits, SandboxPool, discover_isolated
from normbench.spec import load_specs


def _pipe():
    return multiprocessing.get_context("spawn").Pipe()


def test_a_message_round_trips_as_plain_data_with_non_finite_numbers():
    a, b = _pipe()
    wire.send(a, ("outcome", {"verdict": "pass", "summary": "ok", "metrics": {"tol_ratio": float("inf"),
                                                                              "shape": (3, 4)}}, False))
    fields, tainted = wire.outcome(wire.receive(b))
    assert fields["metrics"] == {"tol_ratio": float("inf"), "shape": [3, 4]} and tainted is False


@pytest.mark.parametrize(("message", "problem"), [
    (["outcome", {"verdict": "conforms"}, False], "verdict 'conforms'"),
    (["outcome", {"verdict": "pass", "summary": 3}, False], "the summary is a int"),
    (["outcome", {"verdict": "pass", "metrics": [1]}, False], "the metrics is a list"),
    (["outcome", {"verdict": "pass"}, "yes"], "taint flag"),
    (["something else"], "not an outcome"),
])
def test_an_outcome_that_breaks_the_protocol_is_refused_saying_why(message, problem):
    with pytest.raises(wire.ProtocolError, match=problem):
        wire.outcome(message)


def test_garbage_and_oversized_messages_are_protocol_errors():
    a, b = _pipe()
    a.send_bytes(b"\x80\x04garbage")
    with pytest.raises(wire.ProtocolError, match="not UTF-8 JSON"):
        wire.receive(b)
    a.send_bytes(b"[" + b"1," * 1000 + b"1]")
    with pytest.raises(wire.ProtocolError, match="over the"):
        wire.receive(b, limit=100)


def test_implementation_fields_are_typed_and_capped():
    known = dataclasses.fields(Implementation)
    fields = wire.implementation_fields({"name": "a", "family": "layernorm", "dtypes": ["float32"],
                                         "description": "d" * 5000, "weight_offset": 1}, known)
    assert fields["dtypes"] == ("float32",) and len(fields["description"]) < 2100
    assert fields["weight_offset"] == 1.0
    shapes = wire.implementation_fields({"name": "a", "ranks": [2], "hidden_multiple": 8}, known)
    assert shapes["ranks"] == (2,) and shapes["hidden_multiple"] == 8
    with pytest.raises(wire.ProtocolError, match="'ranks' is not a list of integers"):
        wire.implementation_fields({"name": "a", "ranks": ["2"]}, known)
    with pytest.raises(wire.ProtocolError, match="unknown fields"):
        wire.implementation_fields({"name": "a", "evil": 1}, known)
    with pytest.raises(wire.ProtocolError, match="'bias' is not a boolean"):
        wire.implementation_fields({"name": "a", "bias": "yes"}, known)


def test_a_value_whose_unpickling_runs_code_never_runs_it_in_the_parent(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("NORMBENCH_TEST_BOUNDARY_MARKER", str(marker))
    specs = load_specs().specs
    registry = discover_isolated(["plugins.boundary:trojan"], families=specs, include_entry_points=False)
    assert not marker.exists(), marker.read_text()
    impl = registry.implementations["boundary.trojan"]
    assert impl.description == "x" and type(impl.description) is str
    pool = SandboxPool(specs, "ci", Limits())
    try:
        outcome = pool.judge(impl, "layernorm", "shift_invariance", "any", "float32", "cpu")
    finally:
        pool.close()
    assert outcome.verdict == "pass", outcome.summary
    assert not marker.exists()


# shift_invariance is judged in the trusted process, which expects a tensor message (normbench.remote);
# no_recompile_storm beside the plugin, whose process sends outcomes (every other check on the CPU, under every
# deployment, is the trusted process's now: normbench.remote.judge.trusted)
@pytest.mark.parametrize(("name", "prop", "variant", "problem"), [
    ("boundary.garbage", "shift_invariance", "eager", "not UTF-8 JSON"),
    ("boundary.huge", "shift_invariance", "eager", "over the 4 MiB limit"),
    ("boundary.wrong_verdict", "shift_invariance", "eager", "not a normbench tensor message"),
    # slow (`pytest tests -m slow`, .ci/run): each compiles with Inductor, cold, in judging processes of its own
    # (their caches are per process: normbench.judge_user), about 22 s a case
    pytest.param("boundary.garbage", "no_recompile_storm", "compile", "not UTF-8 JSON", marks=pytest.mark.slow),
    pytest.param("boundary.wrong_verdict", "no_recompile_storm", "compile", "verdict 'conforms'",
                 marks=pytest.mark.slow),
])
def test_a_forged_message_costs_its_item_and_the_next_item_is_judged(name, prop, variant, problem):
    assert trusted(prop, variant) == (prop != "no_recompile_storm")
    specs = load_specs().specs
    registry = discover_isolated([f"plugins.boundary:{name.split('.')[1]}", "plugins.hostile:control"],
                                 families=specs, include_entry_points=False)
    pool = SandboxPool(specs, "ci", Limits())
    try:
        forged = pool.judge(registry.implementations[name], "layernorm", prop, "any", "float32", "cpu", variant)
        control = pool.judge(registry.implementations["hostile.control"], "layernorm", prop, "any",
                             "float32", "cpu", variant)
    finally:
        pool.close()
    assert forged.verdict == "error" and "broke normbench's protocol" in forged.summary
    assert problem in forged.summary
    assert control.verdict == "pass", control.summary


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_what_a_plugin_started_dies_with_its_process(tmp_path):
    import time

    pids = folder_plugins_may_write() / "pids"
    # The judging process forks from a forkserver started before this test, so it does not see this test's
    # environment: the plugin file sets the marker in its own process.
    plugin = tmp_path / "sleeper_case.py"
    plugin.write_text(f"import os\nos.environ['NORMBENCH_TEST_BOUNDARY_MARKER'] = {str(pids)!r}\n"
                      "from plugins.boundary import sleeper  # noqa: E402,F401\n")
    specs = load_specs().specs
    registry = discover_isolated([f"{plugin}:sleeper"], families=specs, include_entry_points=False)
    pool = SandboxPool(specs, "ci", Limits())
    try:
        outcome = pool.judge(registry.implementations["boundary.sleeper"], "layernorm", "shift_invariance", "any",
                             "float32", "cpu")
    finally:
        pool.close()
    assert outcome.verdict == "pass", outcome.summary
    started = [int(line) for line in pids.read_text().split()]
    assert started
    # Killed with the child's process group when the child ended; waited for (not timed): init reaps them.
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in started if _alive(pid)]
