"""The judge in the trusted process: the checks of `TRUSTED_CHECKS` run in the process that never
imports plugin code, on a module that lives in the plugin's process, so what the plugin does to its own process
(a tensor subclass, an edited check registry, swapped judge code, a forged outcome in the pipe) cannot make a wrong
LayerNorm conform. Each attack beside `forgers.control`, a correct LayerNorm that keeps its verdict."""

from __future__ import annotations

import pytest
import torch

from normbench.remote import tensors as wire_tensors
from normbench.remote.judge import JUDGED_IN, TRUSTED_CHECKS, TRUSTED_FALLBACK
from normbench.sandbox import Limits, SandboxPool, discover_isolated
from normbench.spec import load_specs
from normbench.wire import ProtocolError

ATTACKS = ("subclass_output", "registry_editor", "code_swapper", "pipe_forger", "harness_detector")


@pytest.fixture(scope="module")
def judged():
    specs = load_specs().specs
    registry = discover_isolated([f"plugins.forgers:{name}" for name in ("control", "unmirrored", *ATTACKS)],
                                 families=specs, include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs, "ci", Limits())
    try:
        yield {name: {prop: pool.judge(registry.implementations[f"forgers.{name}"], "layernorm", prop, "any",
                                       "float32", "cpu")
                      for prop in ("forward_equivalence", "shift_invariance")}
               for name in ("control", "unmirrored", *ATTACKS)}
    finally:
        pool.close()


def test_the_control_conforms_and_is_judged_in_the_trusted_process(judged):
    for prop, outcome in judged["control"].items():
        assert outcome.verdict == "pass", (prop, outcome.summary)
        assert outcome.metrics[JUDGED_IN] == "trusted process"


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_on_the_judge_leaves_a_wrong_layernorm_failing(judged, attack):
    outcome = judged[attack]["forward_equivalence"]
    assert outcome.verdict in ("fail", "error"), outcome.summary


def test_a_tensor_subclass_output_is_refused_by_name(judged):
    summary = judged["subclass_output"]["forward_equivalence"].summary
    assert "torch.Tensor subclass AlwaysEqual" in summary


def test_a_forged_outcome_in_the_pipe_is_a_protocol_error_not_a_verdict(judged):
    outcome = judged["pipe_forger"]["forward_equivalence"]
    assert outcome.verdict == "error" and "protocol" in outcome.summary, outcome.summary


def test_a_module_the_protocol_cannot_mirror_is_judged_beside_it_saying_why(judged):
    for outcome in judged["unmirrored"].values():
        assert outcome.verdict == "pass", outcome.summary
        assert outcome.metrics[JUDGED_IN] == "plugin process"
        assert "not a registered parameter or buffer" in outcome.metrics[TRUSTED_FALLBACK]


def test_the_checks_that_do_not_run_in_the_trusted_process_say_so(judged):
    specs = load_specs().specs
    planned = {p.check for p in specs["layernorm"].properties}
    assert planned - TRUSTED_CHECKS, "every layernorm check runs trusted: this test has nothing left to assert"
    assert TRUSTED_CHECKS <= set(__import__("normbench.checks", fromlist=["CHECKS"]).CHECKS)


# -- the tensor boundary ------------------------------------------------------------------------------------

def _roundtrip(tensors, keep_strides=False):
    import multiprocessing

    a, b = multiprocessing.Pipe()
    wire_tensors.send(a, {"x": 1}, tensors, keep_strides)
    return wire_tensors.receive(b, "test")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.bool])
def test_tensors_cross_as_plain_tensors_bit_for_bit(dtype):
    x = torch.randn(3, 5).to(dtype)
    message, (y,) = _roundtrip([x])
    assert message == {"x": 1} and type(y) is torch.Tensor and y.dtype == dtype
    assert torch.equal(x.view(torch.uint8) if dtype != torch.bool else x, y.view(torch.uint8)
                       if dtype != torch.bool else y)


def test_strides_survive_when_asked_and_the_copy_is_private():
    base = torch.arange(12.0).reshape(3, 4)
    _, (t, e) = _roundtrip([base.t(), torch.ones(4).expand(3, 4)], keep_strides=True)
    assert t.stride() == (1, 4) and torch.equal(t, base.t()) and e.stride() == (0, 1)
    _, (packed,) = _roundtrip([base.t()])
    assert packed.is_contiguous() and torch.equal(packed, base.t())
    t.add_(1)
    assert torch.equal(base, torch.arange(12.0).reshape(3, 4))


def _raw(tensors, payload=b""):
    """A tensor message as a hostile sender would write it by hand."""
    import json

    from normbench import wire

    head = json.dumps({"message": {}, "tensors": tensors}).encode()
    return wire.TENSOR_MAGIC + len(head).to_bytes(4, "little") + head + payload


def test_a_header_that_lies_about_its_bytes_is_a_protocol_error():
    import multiprocessing

    a, b = multiprocessing.Pipe()
    a.send_bytes(_raw([["float32", [4], None]], b"\0" * 8))  # 2 floats where 4 are declared
    with pytest.raises(ProtocolError, match="8 bytes left where its header declares 16"):
        wire_tensors.receive(b, "test")
    a.send_bytes(_raw([["float32", [1], None]], b"\0" * 12))
    with pytest.raises(ProtocolError, match="8 bytes after the last tensor"):
        wire_tensors.receive(b, "test")
    a.send_bytes(_raw([["object", [1], None]]))
    with pytest.raises(ProtocolError, match="dtype 'object'"):
        wire_tensors.receive(b, "test")
    a.send_bytes(b'{"message": {}, "tensors": []}')
    with pytest.raises(ProtocolError, match="not a normbench tensor message"):
        wire_tensors.receive(b, "test")


def test_a_large_tensor_travels_through_a_spill_file_that_is_gone_once_read(tmp_path):
    import multiprocessing

    a, b = multiprocessing.Pipe()
    big = torch.randn(1024, 256)  # 1 MiB: over SPILL_BYTES
    wire_tensors.send(a, {}, [big, torch.ones(3)], spill=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    _, (got, small) = wire_tensors.receive(b, "test", spill=tmp_path)
    assert torch.equal(got, big) and torch.equal(small, torch.ones(3)) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "0" * 31, 7])
def test_a_spill_file_is_only_ever_a_random_name_inside_the_receivers_own_folder(tmp_path, name):
    import multiprocessing


    a, b = multiprocessing.Pipe()
    a.send_bytes(_raw([["float32", [4], None, name]]))
    with pytest.raises(ProtocolError, match="spill file this side does not accept"):
        wire_tensors.receive(b, "test", spill=tmp_path)


def test_a_spill_file_of_the_wrong_size_is_a_protocol_error_and_is_removed(tmp_path):
    import multiprocessing


    a, b = multiprocessing.Pipe()
    (tmp_path / ("a" * 32)).write_bytes(b"\0" * 8)
    a.send_bytes(_raw([["float32", [4], None, "a" * 32]]))
    with pytest.raises(ProtocolError, match="8 bytes where its header declares 16"):
        wire_tensors.receive(b, "test", spill=tmp_path)
    assert not list(tmp_path.iterdir())
