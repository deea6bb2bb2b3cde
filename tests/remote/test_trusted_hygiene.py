"""`module_hygiene` and `foldability` judged in the trusted process. Foldability only builds, deep-copies and calls
the module. Module hygiene needs the plugin's module's own copy and checkpoint machinery, so it runs over there and
crosses as data: a deepcopy by handle (with what moved in a copy's relatives sent back, as a copy that shares state
with its original shows it beside the check), the module's own ``state_dict`` as plain tensors by key and its own
``load_state_dict`` of them, and the tensors ``.to(dtype)`` left as a report checked against the mirror
(normbench.remote.attributes). Every mutant is caught with `judged_in: trusted process` and the verdict and summary
it gets beside the plugin; the controls pass; a reply that lies or breaks the protocol is an error naming it."""

from __future__ import annotations

import pytest
import torch
from helpers import REMOTE_ENV, impl, run, specs
from mutants_contexts import FUSED, Float32ConstantLayerNorm
from mutants_hygiene import PlainLayerNorm
from plugins import hygiene_mutants

from normbench.remote import loopback
from normbench.remote.judge import JUDGED_IN, TRUSTED_FALLBACK, trusted
from normbench.remote.loopback import remote_view
from normbench.remote.proxy import ChildLost, Unmirrored
from normbench.remote.server import Server
from normbench.sandbox import Limits, SandboxPool, discover_isolated

HYGIENE = [(name, mode) for name, (family, _) in hygiene_mutants.MUTANTS.items()
           if name not in ("batch_stats_in_eval", "counts_live")
           for mode in (("train", "eval") if family == "batchnorm" else ("any",))]
FOLDING = [("control_bn", "eval"), ("batch_stats_in_eval", "eval")]
CASES = [(n, "module_hygiene", m) for n, m in HYGIENE] + [(n, "foldability", m) for n, m in FOLDING]


@pytest.fixture(scope="module")
def judged():
    registry = discover_isolated(["plugins.hygiene_mutants:implementations"], families=specs(),
                                 include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs(), "ci", Limits())
    try:
        yield {(name, prop, mode): pool.judge(registry.implementations[f"hygiene.{name}"],
                                              hygiene_mutants.MUTANTS[name][0], prop, mode, "float32", "cpu")
               for name, prop, mode in CASES}
    finally:
        pool.close()


def _beside(name: str, prop: str, mode: str, monkeypatch: pytest.MonkeyPatch):
    """The same item judged in this process, beside the module, as every item was before the trusted judge."""
    monkeypatch.delenv(REMOTE_ENV, raising=False)
    local = {i.name: i for i in hygiene_mutants.implementations()}[f"hygiene.{name}"]
    return run(local, prop, mode=None if mode == "any" else mode)


def test_both_are_trusted_checks():
    assert trusted("module_hygiene", "eager") and trusted("foldability", "eager")
    # under every deployment: the plugin's side deploys the module it builds (tests/remote/test_trusted_compile.py,
    # test_trusted_export.py); an accelerator's items are judged beside the plugin
    assert trusted("module_hygiene", "compile") and trusted("module_hygiene", "export")
    assert not trusted("foldability", "eager", "cuda")


@pytest.mark.parametrize(("name", "prop", "mode"), [
    ("control", "module_hygiene", "any"), ("control_bn", "module_hygiene", "train"),
    ("control_bn", "module_hygiene", "eval"), ("control_bn", "foldability", "eval")])
def test_the_correct_modules_pass_in_the_trusted_process(judged, name, prop, mode):
    outcome = judged[name, prop, mode]
    assert outcome.verdict == "pass", outcome.summary
    assert outcome.metrics[JUDGED_IN] == "trusted process"


@pytest.mark.parametrize(("name", "prop", "mode", "says"), [
    ("closure", "module_hygiene", "any", "deepcopy: after a change to the copy's weight"),
    ("fp32_const", "module_hygiene", "any", ".to(dtype): unit is still float32 after .to(bfloat16)"),
    ("ignores_load", "module_hygiene", "any", "state_dict round trip: the output differs"),
    ("nonpersistent", "module_hygiene", "train", "state 'running_var' is not in the state_dict"),
    ("nonpersistent", "module_hygiene", "eval", "state 'running_var' is not in the state_dict"),
    ("self_copy", "module_hygiene", "train", "deepcopy: calling the copy changed the original's state 'running_mean'"),
    ("self_copy", "module_hygiene", "eval", "deepcopy: a change to the copy's weight changed the original's output"),
    ("drops_mean", "module_hygiene", "train", "state 'running_mean' is not in the state_dict"),
    ("drops_mean", "module_hygiene", "eval", "state 'running_mean' is not in the state_dict"),
    ("batch_stats_in_eval", "foldability", "eval", "fresh N(0, 1) vs s*x+t"),
])
def test_each_mutant_is_caught_in_the_trusted_process_as_beside_the_plugin(judged, monkeypatch, name, prop, mode,
                                                                           says):
    outcome = judged[name, prop, mode]
    assert outcome.verdict == "fail", outcome.summary
    assert says in outcome.summary
    assert outcome.metrics[JUDGED_IN] == "trusted process"
    beside = _beside(name, prop, mode, monkeypatch)
    assert (beside.verdict, beside.summary, beside.counterexample) == (
        outcome.verdict, outcome.summary, outcome.counterexample)


def test_a_module_the_protocol_cannot_mirror_is_judged_beside_it_saying_why(judged):
    outcome = judged["plain", "module_hygiene", "any"]
    assert outcome.verdict == "fail" and "weight is not a registered Parameter" in outcome.summary
    assert outcome.metrics[JUDGED_IN] == "plugin process"
    assert "not a registered parameter or buffer" in outcome.metrics[TRUSTED_FALLBACK]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_statistic_the_protocol_cannot_mirror_is_judged_beside_it_saying_why(judged, monkeypatch, mode):
    # a plain running_var is not converted by .to(dtype): the trusted side would believe its mirror's, so it refuses
    outcome = judged["plain_stats", "module_hygiene", mode]
    assert outcome.metrics[JUDGED_IN] == "plugin process"
    assert "its running_var is not a registered parameter or buffer" in outcome.metrics[TRUSTED_FALLBACK]
    assert outcome.verdict == "fail" and "state 'running_var' is not in the state_dict" in outcome.summary
    beside = _beside("plain_stats", "module_hygiene", mode, monkeypatch)
    assert (beside.verdict, beside.summary) == (outcome.verdict, outcome.summary)


def test_a_plugin_that_swaps_the_code_of_the_scan_is_tampering_not_a_pass(judged):
    # the scan of what .to(dtype) left runs over there: with its code swapped it reports fp32_const's float32
    # constant away, and the module would pass; the fingerprint keeps every normbench function's code object
    outcome = judged["swaps_scan", "module_hygiene", "any"]
    assert outcome.metrics[JUDGED_IN] == "trusted process"
    assert outcome.verdict == "error", outcome.summary
    assert "normbench.remote.attributes.tensor_attributes had its code swapped" in outcome.summary


def test_a_plugin_that_hides_its_registered_tensors_from_the_scan_is_an_error_naming_it(judged):
    outcome = judged["hides_weight", "module_hygiene", "any"]
    assert outcome.verdict == "error", outcome.summary
    assert "broke normbench's protocol" in outcome.summary
    assert "an attributes reply that leaves out weight, bias, which the module lists" in outcome.summary


# -- a plugin's side that lies, through the loopback ---------------------------------------------------------

class _ForgesAnEntry(Server):
    """Says a state_dict entry is the module's γ but sends other values."""

    def _op_state_dict(self, message, received):
        reply, values = super()._op_state_dict(message, received)
        return reply, [values[0] + 1, *values[1:]]


class _MisreportsADtype(Server):
    """Says γ is float64 after .to(bfloat16)."""

    def _op_attributes(self, message, received):
        reply, out = super()._op_attributes(message, received)
        return {"attributes": [[*a[:2], "float64", a[3]] if a[3] == "weight" else a
                               for a in reply["attributes"]]}, out


class _NamesAStrangerModule(Server):
    """Reports changes of a related module it never built."""

    def _op_call(self, message, received):
        reply, out = super()._op_call(message, received)
        return {**reply, "relatives": [[999, {"listing": None, "changed": []}]]}, out


class _SmugglesMetadata(Server):
    """Puts something other than plain versions into the state_dict's metadata."""

    def _op_state_dict(self, message, received):
        reply, values = super()._op_state_dict(message, received)
        return {**reply, "metadata": {"": {"version": {"nested": [1, 2]}}}}, values


@pytest.mark.parametrize(("server", "says"), [
    (_ForgesAnEntry, "a state_dict entry 'weight' said to be 'weight' but not holding its value"),
    (_MisreportsADtype, "an attributes reply that says 'weight' is float64 while it lists it as torch.bfloat16"),
    (_NamesAStrangerModule, "changes of a module 999 this item never built"),
    (_SmugglesMetadata, "a state_dict whose metadata is not plain names and values"),
])
def test_a_reply_that_cannot_be_true_is_a_protocol_error(monkeypatch, server, says):
    monkeypatch.setenv(REMOTE_ENV, "1")
    monkeypatch.setattr(loopback, "Server", server)
    with pytest.raises(ChildLost) as lost:
        run(impl("fp32-const", "layernorm", Float32ConstantLayerNorm, **FUSED), "module_hygiene")
    assert lost.value.status == "protocol"
    assert says in lost.value.detail


class _ExtraStateLayerNorm(PlainLayerNorm):
    """Keeps a Python dict in its state_dict (get_extra_state): no tensor, so nothing the protocol carries."""

    def get_extra_state(self) -> dict[str, int]:
        return {"steps": 3}

    def set_extra_state(self, state: dict[str, int]) -> None:
        pass


def test_a_state_dict_entry_that_is_not_a_tensor_is_unmirrored_not_approximated():
    with remote_view(impl("extra", "layernorm", _ExtraStateLayerNorm), specs()["layernorm"]) as view:
        module = view.build(4, {"eps": 1e-5, "affine": True})
        with pytest.raises(Unmirrored, match="its state_dict holds _extra_state, not tensors"):
            module.state_dict()


def test_the_module_s_own_state_dict_and_load_state_dict_run_over_there():
    with remote_view(impl("plain", "layernorm", PlainLayerNorm), specs()["layernorm"]) as view:
        module, other = view.build(4, {"eps": 1e-5, "affine": True}), view.build(4, {"eps": 1e-5, "affine": True})
        with torch.no_grad():
            module.weight.mul_(3.0)  # a check's write: sent before the state_dict is taken
        kept = module.state_dict(keep_vars=True)
        assert kept["weight"] is module.weight and kept._metadata[""]["version"] == torch.nn.LayerNorm._version
        state = module.state_dict()
        assert torch.equal(state["weight"], module.weight) and state["weight"] is not module.weight
        result = other.load_state_dict(state)
        assert result.missing_keys == [] and result.unexpected_keys == []
        assert torch.equal(other.weight, module.weight)
        with pytest.raises(RuntimeError, match="Unexpected key"):
            other.load_state_dict({**state, "stranger": torch.zeros(1)})


def test_an_item_leaves_no_module_behind_over_there_its_copies_included():
    # beside the check an item's modules and their deep copies die with it; over there, before, every copy stayed
    # until the judging process ended (1, 6, 11 live modules at the start of three items in a row)
    registry = discover_isolated(["plugins.hygiene_mutants:implementations"], families=specs(),
                                 include_entry_points=False)
    pool = SandboxPool(specs(), "ci", Limits())
    try:
        outputs = [pool.judge(registry.implementations["hygiene.counts_live"], "layernorm", "module_hygiene", "any",
                              "float32", "cpu") for _ in range(3)]
    finally:
        pool.close()
    for outcome in outputs:
        assert outcome.verdict == "pass", outcome.summary
        assert outcome.metrics[JUDGED_IN] == "trusted process"
        assert outcome.extra["captured_output"].split()[:2] == ["live:", "1"], outcome.extra["captured_output"][:200]
