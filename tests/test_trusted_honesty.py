"""`output_not_alias` (and `no_stale_output`) judged in the trusted process: the module lives in the plugin's
process, so the facts these checks need about memory cross as data. The plugin's side reports which of the call's
tensors each output shares storage with (normbench.remote.aliases); what forward or backward writes into the input
or into dy is written into the caller's tensors. Each mutant of tests/mutants_honesty.py is still caught, now with
`judged_in: trusted process`; the correct control passes; a reply that lies or breaks the protocol gains nothing."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from helpers import impl, run, specs
from mutants_honesty import InplaceLayerNorm

from normbench.remote import loopback
from normbench.remote.aliases import record, shared_over_there, storage_overlaps
from normbench.remote.judge import JUDGED_IN, trusted
from normbench.remote.proxy import ChildLost
from normbench.remote.server import Server
from normbench.sandbox import Limits, SandboxPool, discover_isolated

ALIASING = ("control", "in_place", "scratch_input", "dy_scribble")


@pytest.fixture(scope="module")
def judged():
    registry = discover_isolated(["plugins.honesty_mutants:implementations"], families=specs(),
                                 include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs(), "ci", Limits())
    try:
        yield {name: pool.judge(registry.implementations[f"honesty.{name}"], "layernorm", "output_not_alias", "any",
                                "float32", "cpu")
               for name in ALIASING}
    finally:
        pool.close()


def test_output_not_alias_is_a_trusted_check():
    assert trusted("output_not_alias", "eager")


def test_the_correct_control_passes_in_the_trusted_process(judged):
    outcome = judged["control"]
    assert outcome["verdict"] == "pass", outcome["summary"]
    assert outcome["metrics"][JUDGED_IN] == "trusted process"


@pytest.mark.parametrize(("name", "says"), [("in_place", "shares memory with the input"),
                                            ("scratch_input", "wrote into its input"),
                                            ("dy_scribble", "backward wrote into the upstream gradient")])
def test_each_aliasing_mutant_is_caught_in_the_trusted_process(judged, name, says):
    outcome = judged[name]
    assert outcome["verdict"] == "fail", outcome["summary"]
    assert says in outcome["summary"]
    assert outcome["metrics"][JUDGED_IN] == "trusted process"


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
