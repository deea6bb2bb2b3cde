"""`output_not_alias` and `no_stale_output` judged in the trusted process: the module lives in the plugin's
process, so the facts these checks need about memory cross as data. The plugin's side reports which of the call's
tensors each output shares storage with (normbench.remote.aliases); what forward or backward writes into the input
or into dy is written into the caller's tensors; an input passed again is the same tensor over there, written in
place, and an earlier output overwritten later is overwritten here too (normbench.remote.identity). Each mutant of
tests/mutants_honesty.py is still caught, now with `judged_in: trusted process`; the correct control (and the cache
that watches the version counter) passes; a reply that lies or breaks the protocol gains nothing."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from helpers import impl, run, specs
from mutants_honesty import InplaceLayerNorm

from normbench.remote import loopback
from normbench.remote.aliases import record, shared_over_there, storage_overlaps
from normbench.remote.identity import KeptTensors
from normbench.remote.judge import JUDGED_IN, trusted
from normbench.remote.proxy import ChildLost
from normbench.remote.server import Server
from normbench.sandbox import Limits, SandboxPool, discover_isolated

ALIASING = ("control", "in_place", "scratch_input", "dy_scribble")
STALE = ("control", "version_cache", "data_ptr_cache", "id_cache", "static_output", "in_place")


@pytest.fixture(scope="module")
def judged():
    registry = discover_isolated(["plugins.honesty_mutants:implementations"], families=specs(),
                                 include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs(), "ci", Limits())
    try:
        yield {(prop, name): pool.judge(registry.implementations[f"honesty.{name}"], "layernorm", prop, "any",
                                        "float32", "cpu")
               for prop, names in (("output_not_alias", ALIASING), ("no_stale_output", STALE)) for name in names}
    finally:
        pool.close()


def test_both_are_trusted_checks():
    assert trusted("output_not_alias", "eager") and trusted("no_stale_output", "eager")


@pytest.mark.parametrize(("prop", "name"), [("output_not_alias", "control"), ("no_stale_output", "control"),
                                            ("no_stale_output", "version_cache")])
def test_the_correct_modules_pass_in_the_trusted_process(judged, prop, name):
    outcome = judged[prop, name]
    assert outcome.verdict == "pass", outcome.summary
    assert outcome.metrics[JUDGED_IN] == "trusted process"


@pytest.mark.parametrize(("name", "says"), [("in_place", "shares memory with the input"),
                                            ("scratch_input", "wrote into its input"),
                                            ("dy_scribble", "backward wrote into the upstream gradient")])
def test_each_aliasing_mutant_is_caught_in_the_trusted_process(judged, name, says):
    outcome = judged["output_not_alias", name]
    assert outcome.verdict == "fail", outcome.summary
    assert says in outcome.summary
    assert outcome.metrics[JUDGED_IN] == "trusted process"


@pytest.mark.parametrize(("name", "says"), [
    ("data_ptr_cache", "does not match the same module on a fresh tensor with the new values (stale?)"),
    ("id_cache", "does not match the same module on a fresh tensor with the new values (stale?)"),
    ("static_output", "the output of the first call was overwritten by the call after"),
    ("in_place", "the output of the first call changed when the input was updated"),
])
def test_each_stale_output_mutant_is_caught_in_the_trusted_process(judged, name, says):
    # a fresh copy of x per call would have let the two caches and the static buffer pass
    outcome = judged["no_stale_output", name]
    assert outcome.verdict == "fail", outcome.summary
    assert says in outcome.summary
    assert outcome.metrics[JUDGED_IN] == "trusted process"


# -- the report, and a plugin's side that lies about it ------------------------------------------------------

def test_a_received_output_shares_memory_only_with_what_the_report_names():
    x, other = torch.randn(3), torch.randn(3)
    y = torch.randn(3)  # a copy: nothing here can show what it was over there
    assert not storage_overlaps(y, x)
    record(y, [x])
    assert shared_over_there(y, x) and not shared_over_there(y, other)
    alive = weakref.ref(x)
    del x  # a weak reference: the note keeps no input alive
    gc.collect()
    assert alive() is None and not shared_over_there(y, other)


class _Deny(Server):
    """A plugin's side whose report says no output shares anything, whatever the module did."""

    def _op_call(self, message, received):
        reply, tensors = super()._op_call(message, received)
        return {**reply, "aliases": [[[], []] for _ in reply["aliases"]]}, tensors


class _NamesAStranger(Server):
    """A plugin's side whose report names an input the call did not have."""

    def _op_call(self, message, received):
        reply, tensors = super()._op_call(message, received)
        return {**reply, "aliases": [[[7], []] for _ in reply["aliases"]]}, tensors


def test_a_report_that_denies_a_real_alias_still_leaves_the_in_place_module_failing(monkeypatch):
    # To pass it would also have to send its input back unwritten and its output as a distinct value: to behave,
    # in everything the trusted process sees, as a module that does not alias (normbench.remote.aliases).
    monkeypatch.setenv("NORMBENCH_SELFTEST_REMOTE", "1")
    monkeypatch.setattr(loopback, "Server", _Deny)
    outcome = run(impl("in-place", "layernorm", InplaceLayerNorm), "output_not_alias")
    assert outcome.verdict == "fail"
    assert "wrote into its input" in outcome.summary


def test_a_report_naming_a_tensor_the_call_did_not_have_is_a_protocol_error(monkeypatch):
    monkeypatch.setenv("NORMBENCH_SELFTEST_REMOTE", "1")
    monkeypatch.setattr(loopback, "Server", _NamesAStranger)
    with pytest.raises(ChildLost) as lost:
        run(impl("in-place", "layernorm", InplaceLayerNorm), "output_not_alias")
    assert lost.value.status == "protocol"
    assert "aliases name an input the call did not have" in lost.value.detail


class _ChangesAStranger(Server):
    """A plugin's side that says a kept tensor changed which the trusted side never gave it."""

    def _op_call(self, message, received):
        reply, tensors = super()._op_call(message, received)
        return {**reply, "kept_changed": [*reply["kept_changed"], 10_000]}, [*tensors, torch.zeros(1)]


class _ReshapesAnOutput(Server):
    """A plugin's side that says the first call's output changed into a tensor of another shape."""

    def _op_call(self, message, received):
        reply, tensors = super()._op_call(message, received)
        if int(message["outputs_from"]) > 0:
            return {**reply, "kept_changed": [*reply["kept_changed"], 1]}, [*tensors, torch.zeros(2, 2, 2)]
        return reply, tensors


@pytest.mark.parametrize(("server", "says"), [
    (_ChangesAStranger, "changes a kept tensor 10000 it was never given"),
    (_ReshapesAnOutput, "into torch.float32, [2, 2, 2]"),
])
def test_a_change_to_a_kept_tensor_that_cannot_be_is_a_protocol_error(monkeypatch, server, says):
    from mutants_honesty import IdCacheLayerNorm

    monkeypatch.setenv("NORMBENCH_SELFTEST_REMOTE", "1")
    monkeypatch.setattr(loopback, "Server", server)
    with pytest.raises(ChildLost) as lost:
        run(impl("id-cache", "layernorm", IdCacheLayerNorm), "no_stale_output")
    assert lost.value.status == "protocol"
    assert says in lost.value.detail


# -- the trusted side's handles ------------------------------------------------------------------------------

def test_an_input_passed_again_goes_by_its_handle_with_only_what_was_written_since():
    kept = KeptTensors()
    x = torch.randn(4)
    first, sent = kept.input(x)
    assert first.get("new") and sent
    kept.settle([x])
    assert kept.input(x) == ({"h": first["h"]}, False)  # unchanged: no bytes
    x.add_(1.0)  # an in-place op: the version moves over there too
    assert kept.input(x) == ({"h": first["h"], "write": "bump"}, True)
    kept.settle([x])
    x.data[0] = 5.0  # through .data (gradcheck's perturbations): no version moves
    assert kept.input(x) == ({"h": first["h"], "write": "data"}, True)
    other, _ = kept.input(x.clone())
    assert other["h"] != first["h"]  # equal values, another tensor: another handle


def test_a_freed_input_is_forgotten_over_there_with_the_next_request():
    kept = KeptTensors()
    x = torch.randn(4)
    spec, _ = kept.input(x)
    del x
    gc.collect()
    assert kept.take_forgotten() == [spec["h"]] and kept.take_forgotten() == []
