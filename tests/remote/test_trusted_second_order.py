"""`second_order_gradients` judged in the trusted process. The check differentiates a backward: a create_graph=True
backward through the remote module keeps the first-order gradients with their graph in the plugin's process, and a
second backward through them sends the gradients of those gradients there and gets the plugin's second-order
gradients back (normbench.remote.proxy._RemoteGrad). The float64 truth, gradgradcheck's numerical Jacobians, the
tolerances and the verdict are computed here. Every mutant is caught with `judged_in: trusted process` and the
verdict, summary and counterexample it gets beside the plugin; the controls pass; a reply that cannot be true is a
protocol error naming it; a forged "not differentiable" cannot turn a failure into a pass."""

from __future__ import annotations

import pytest
import torch
from helpers import REMOTE_ENV, impl, run, specs
from mutants_contexts import FUSED, DetachedBackwardLayerNorm
from plugins import second_order_mutants
from plugins.second_order_mutants import torch_layernorm

from normbench.remote import loopback
from normbench.remote.judge import JUDGED_IN, trusted
from normbench.remote.loopback import remote_view
from normbench.remote.proxy import ChildLost, Unmirrored
from normbench.remote.server import Server
from normbench.sandbox import Limits, SandboxPool, discover_isolated

PROP = "second_order_gradients"


@pytest.fixture(scope="module")
def judged():
    registry = discover_isolated(["plugins.second_order_mutants:implementations"], families=specs(),
                                 include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs(), "ci", Limits())
    try:
        yield {name: pool.judge(registry.implementations[f"second_order.{name}"], "layernorm", PROP, "any", dtype,
                                "cpu")
               for name, (_, _, dtype) in second_order_mutants.MUTANTS.items()}
    finally:
        pool.close()


def _beside(name: str, monkeypatch: pytest.MonkeyPatch):
    """The same item judged in this process, beside the module, as every item was before the trusted judge."""
    monkeypatch.delenv(REMOTE_ENV, raising=False)
    local = {i.name: i for i in second_order_mutants.implementations()}[f"second_order.{name}"]
    return run(local, PROP, dtype=second_order_mutants.MUTANTS[name][2])


def test_second_order_gradients_is_a_trusted_check():
    # under every deployment: the plugin's side deploys the module it builds (tests/remote/test_trusted_compile.py,
    # test_trusted_export.py); an accelerator's items are judged beside the plugin
    assert trusted(PROP, "eager") and trusted(PROP, "compile") and trusted(PROP, "export")
    assert not trusted(PROP, "eager", "cuda")


@pytest.mark.parametrize(("name", "says"), [
    ("control", "second-order gradients over 2 cases: create_graph=True"),
    ("control64", "gradgradcheck: analytical and numerical second-order gradients agree for x, weight, bias"),
    ("once", "double backward raised, as declared"),
    ("once64", "double backward raised, as declared"),
])
def test_the_correct_modules_pass_in_the_trusted_process(judged, name, says):
    outcome = judged[name]
    assert outcome.verdict == "pass", outcome.summary
    assert says in outcome.summary
    assert outcome.metrics[JUDGED_IN] == "trusted process"


@pytest.mark.parametrize(("name", "verdict", "says"), [
    ("detached", "fail", "d(dX·v)/dx"),
    ("once_undeclared", "fail", "declares double_backward=False"),
    ("detached_declared", "fail", "returned wrong numbers instead of raising"),
    ("torch_declared", "error", "drop the declaration"),
    ("detached64", "fail", "gradgradcheck failed"),
])
def test_each_mutant_is_caught_in_the_trusted_process_as_beside_the_plugin(judged, monkeypatch, name, verdict,
                                                                           says):
    outcome = judged[name]
    assert outcome.verdict == verdict, outcome.summary
    assert says in outcome.summary
    assert outcome.metrics[JUDGED_IN] == "trusted process"
    beside = _beside(name, monkeypatch)
    assert (beside.verdict, beside.summary, beside.counterexample) == (
        outcome.verdict, outcome.summary, outcome.counterexample)


# -- a plugin's side that lies, through the loopback ---------------------------------------------------------

class _WrongShapeSecondOrder(Server):
    """Sends the first second-order gradient it has (with respect to x: dy needs none here) in the wrong shape."""

    def _op_grad_backward(self, message, received):
        reply, out = super()._op_grad_backward(message, received)
        first = next(i for i, g in enumerate(out) if g is not None)
        return reply, [*out[:first], torch.zeros(3), *out[first + 1:]]


class _SaysNothingOfTheGraph(Server):
    """Answers a create_graph=True backward without saying which gradient is differentiable."""

    def _op_backward(self, message, received):
        reply, out = super()._op_backward(message, received)
        return {k: v for k, v in reply.items() if k != "grad_differentiable"}, out


@pytest.mark.parametrize(("server", "says"), [
    (_WrongShapeSecondOrder, "a second-order gradient of shape (3,) for a tensor of shape"),
    (_SaysNothingOfTheGraph, "does not say, per gradient, whether it is differentiable"),
])
def test_a_reply_that_cannot_be_true_is_a_protocol_error(monkeypatch, server, says):
    monkeypatch.setenv(REMOTE_ENV, "1")
    monkeypatch.setattr(loopback, "Server", server)
    with pytest.raises(ChildLost) as lost:
        run(impl("torch", "layernorm", torch_layernorm), PROP)
    assert lost.value.status == "protocol"
    assert says in lost.value.detail


class _DeniesTheGraph(Server):
    """Says no first-order gradient is differentiable: double backward then raises here, as a once_differentiable
    backward's does."""

    def _op_backward(self, message, received):
        reply, out = super()._op_backward(message, received)
        if "grad_differentiable" in reply:
            reply = {**reply, "grad_differentiable": [False] * len(reply["grad_differentiable"])}
        return reply, out


def test_a_forged_not_differentiable_turns_no_failure_into_a_pass(monkeypatch):
    monkeypatch.setenv(REMOTE_ENV, "1")
    monkeypatch.setattr(loopback, "Server", _DeniesTheGraph)
    # wrong second-order numbers, declared differentiable twice: now "raised", still a failure
    detached = run(impl("detached", "layernorm", DetachedBackwardLayerNorm, **FUSED), PROP)
    assert detached.verdict == "fail" and "declares double_backward=False" in detached.summary
    # and a correct module is failed, not passed, by its own side's lie
    correct = run(impl("torch", "layernorm", torch_layernorm), PROP)
    assert correct.verdict == "fail" and "double backward raised" in correct.summary


def test_second_order_gradients_cross_as_the_plugin_computes_them_and_third_order_is_unmirrored():
    with remote_view(impl("torch", "layernorm", torch_layernorm), specs()["layernorm"]) as view:
        module = view.build(5, {"eps": 1e-5, "affine": True})
        local = torch.nn.LayerNorm(5)
        with torch.no_grad():
            for t in (module.weight, module.bias, local.weight, local.bias):
                t.copy_(torch.linspace(-1.0, 2.0, 5))
        x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
        dy, v = torch.randn(3, 5), torch.randn(3, 5)
        got, want = [], []
        for m, out in ((module, got), (local, want)):
            xi = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(m(xi), xi, dy, create_graph=True)
            out.extend(torch.autograd.grad((g * v).sum(), [xi, m.weight, m.bias], allow_unused=True))
        assert got[2] is None and want[2] is None  # dX does not depend on β
        for a, b in zip(got[:2], want[:2], strict=True):
            assert type(a) is torch.Tensor and torch.allclose(a, b, atol=1e-6), (a, b)
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(module(xi), xi, dy, create_graph=True)
        with pytest.raises(Unmirrored, match="third-order gradient"):
            torch.autograd.grad((g * v).sum(), xi, create_graph=True)
