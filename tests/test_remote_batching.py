"""Fewer round trips to the plugin's process, the same verdicts (normbench.remote.proxy.Speculation).

A parameter write with nothing to answer goes with the next request. A build that lists what the plugin's process
listed for the same request the last SPECULATE_AFTER times, or a deep copy once one copy listed exactly its
original's state, is mirrored at once and sent with the next request, whose reply carries the real listing. That
listing is compared bit for bit: any difference, or an error in the request sent ahead, reruns the item from its
start with every request waited for. Each rule below is shown on a module it must catch and on one it must not."""

from __future__ import annotations

import copy
import dataclasses
import multiprocessing
import time

import pytest
import torch
from helpers import impl, specs
from torch import nn

from normbench.remote import loopback
from normbench.remote import tensors as wire_tensors
from normbench.remote.proxy import SPECULATE_AFTER, ChildLost, Misspeculated, Session, Speculation
from normbench.remote.server import Server
from normbench.runner import Outcome, PlanItem, judge


def _layernorm(num_features: int, eps: float, affine: bool) -> nn.Module:
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)


def _item(implementation, prop: str, dtype: str = "float32") -> PlanItem:
    spec = specs()[implementation.family]
    p = next(p for p in spec.properties if p.name == prop)
    return PlanItem(spec, implementation, p, next(iter(p.expect)), dtype)


@pytest.fixture
def requests(monkeypatch):
    """How many requests the plugin's side served."""
    served = {"n": 0}
    handle = Server.handle

    def counted(self, conn, envelope):
        served["n"] += 1
        return handle(self, conn, envelope)

    monkeypatch.setattr(Server, "handle", counted)
    return served


def _waited_for(item: PlanItem) -> Outcome:
    """The item through the protocol with every request waited for."""
    with loopback.remote_view(item.impl, item.spec) as view:
        return judge(dataclasses.replace(item, impl=view), "ci")


def _same_outcome(a: Outcome, b: Outcome) -> bool:
    first, second = a.as_dict(), b.as_dict()
    first.pop("duration_s", None)
    second.pop("duration_s", None)
    return first == second


@pytest.mark.parametrize("prop", ["forward_equivalence", "shift_invariance"])
def test_repeated_builds_and_copies_are_not_waited_for_and_the_verdict_is_the_same(requests, prop):
    item = _item(impl("batching.layernorm", "layernorm", _layernorm), prop)
    waited = _waited_for(item)
    waited_requests, requests["n"] = requests["n"], 0
    speculation = Speculation()
    fast = loopback.judge_remotely(item, "ci", speculation)
    assert waited.verdict == "pass", waited.summary
    assert _same_outcome(waited, fast), (waited.summary, fast.summary)
    assert speculation.hits and not speculation.misses and speculation.enabled
    # the closing request of judge_remotely is one more; every build or copy taken as seen is one fewer
    assert requests["n"] - 1 == waited_requests - speculation.hits
    if prop == "shift_invariance":
        assert speculation.faithful_copies


class _Counter:
    """Builds so far, per constructor call (a check builds each configuration many times)."""

    def __init__(self) -> None:
        self.builds: dict[tuple, int] = {}

    def count(self, *args: object) -> int:
        self.builds[args] = self.builds.get(args, 0) + 1
        return self.builds[args]


class DriftingLayerNorm(nn.LayerNorm):
    """A correct LayerNorm whose unused buffer reads 0 for the first builds of each configuration and 1 after: its
    listing repeats, then changes."""

    def __init__(self, counter: _Counter, num_features: int, eps: float, affine: bool) -> None:
        super().__init__(num_features, eps=eps, elementwise_affine=affine)
        builds = counter.count(num_features, eps, affine)
        self.register_buffer("generation", torch.tensor(float(builds > SPECULATE_AFTER)))


def _drifting(counter_of_each_build: bool) -> object:
    """DriftingLayerNorm's factory: one counter for all builds (drifts), or a fresh one per build (never does)."""
    shared = _Counter()

    def factory(num_features: int, eps: float, affine: bool) -> nn.Module:
        return DriftingLayerNorm(_Counter() if counter_of_each_build else shared, num_features, eps, affine)

    return factory


def test_a_build_that_lists_otherwise_than_it_did_reruns_the_item_with_every_request_waited_for(requests):
    waited = _waited_for(_item(impl("batching.drift", "layernorm", _drifting(True)), "forward_equivalence"))
    speculation = Speculation()
    outcome = loopback.judge_remotely(_item(impl("batching.drift", "layernorm", _drifting(False)),
                                            "forward_equivalence"), "ci", speculation)
    assert speculation.misses == 1 and not speculation.enabled
    assert outcome.verdict == waited.verdict == "pass", outcome.summary
    assert outcome.summary == waited.summary
    # the control: the same module with a buffer that never changes is never judged twice
    steady = Speculation()
    loopback.judge_remotely(_item(impl("batching.steady", "layernorm", _drifting(True)), "forward_equivalence"),
                            "ci", steady)
    assert steady.hits and not steady.misses


class ForgetfulCopyLayerNorm(nn.LayerNorm):
    """A correct LayerNorm whose deep copies, from the second on, reset an unused buffer."""

    copies = 0

    def __init__(self, num_features: int, eps: float, affine: bool) -> None:
        super().__init__(num_features, eps=eps, elementwise_affine=affine)
        self.register_buffer("seen", torch.tensor(7.0))

    def __deepcopy__(self, memo):
        type(self).copies += 1
        twin = ForgetfulCopyLayerNorm(self.normalized_shape[0], self.eps, self.elementwise_affine)
        twin.load_state_dict(self.state_dict())
        if type(self).copies > 1:
            twin.seen.zero_()
        return twin


def test_a_copy_that_differs_from_its_original_reruns_the_item(requests):
    item = _item(impl("batching.forgetful", "layernorm", ForgetfulCopyLayerNorm), "shift_invariance")
    ForgetfulCopyLayerNorm.copies = 1  # every copy forgetful: the waited-for run sees what the rerun sees
    waited = _waited_for(item)
    ForgetfulCopyLayerNorm.copies = 0
    speculation = Speculation()
    outcome = loopback.judge_remotely(item, "ci", speculation)
    assert speculation.faithful_copies == 1 and speculation.misses == 1 and not speculation.enabled
    assert outcome.verdict == waited.verdict and outcome.summary == waited.summary


def test_a_build_sent_ahead_that_fails_over_there_reruns_the_item_and_errs_as_it_would_have():
    counter = _Counter()

    def fragile(num_features: int, eps: float, affine: bool) -> nn.Module:
        if counter.count(num_features, eps, affine) > SPECULATE_AFTER:
            raise RuntimeError("out of builds")
        return _layernorm(num_features, eps, affine)

    speculation = Speculation()
    outcome = loopback.judge_remotely(_item(impl("batching.fragile", "layernorm", fragile), "forward_equivalence"),
                                      "ci", speculation)
    assert speculation.misses == 1
    assert outcome.verdict == "error" and "out of builds" in outcome.summary, outcome.summary


def test_a_parameter_write_goes_with_the_next_request_and_arrives(requests):
    item = _item(impl("batching.layernorm", "layernorm", _layernorm), "forward_equivalence")
    with loopback.remote_view(item.impl, item.spec) as view:
        module = view.factory(6, eps=1e-5, affine=True)
        with torch.no_grad():
            module.weight.copy_(torch.arange(6.0))
        before = requests["n"]
        twin = copy.deepcopy(module)
        assert requests["n"] - before == 1  # the write and the copy in one request
        assert torch.equal(twin.weight, torch.arange(6.0))
        x = torch.randn(2, 6)
        assert torch.equal(module(x), nn.functional.layer_norm(x, (6,), torch.arange(6.0), module.bias, 1e-5))


def _session_with_reply(reply: dict, tensors=()) -> Session:
    """A session whose other end has already answered `reply` (as a hostile plugin's side could)."""
    ours, theirs = multiprocessing.Pipe()
    wire_tensors.send(theirs, reply, list(tensors))
    session = Session(ours, time.monotonic() + 5)
    session._theirs = theirs  # kept open
    return session


def test_listings_nobody_asked_for_are_a_protocol_error():
    session = _session_with_reply({"ok": {}, "before": [{"state": []}]})
    with pytest.raises(ChildLost, match="listings of builds it was not asked for"):
        session.request({"op": "verify"})


def test_a_reply_that_lists_another_handle_or_other_values_is_a_miss_and_the_true_one_is_not():
    body = {"state": [["weight", "param", True]], "paths": {"weight": "weight"}, "unmirrored": [], "training": True}
    value = torch.ones(3)
    for handle, sent, missed in ((4, value, False), (5, value, True), (4, torch.full((3,), 2.0), True)):
        session = _session_with_reply({"ok": {"x": 1}, "before": [{**body, "handle": handle}]}, [sent])
        session.defer({"op": "build"}, expect=(4, body, [value.clone()]))
        if missed:
            with pytest.raises(Misspeculated):
                session.request({"op": "verify"})
        else:
            assert session.request({"op": "verify"}) == ({"x": 1}, [])


def test_an_error_in_a_request_sent_ahead_is_a_miss_not_the_next_requests_error():
    session = _session_with_reply({"error": ["RuntimeError", "boom", ""], "before_failed": 0})
    session.defer({"op": "build"}, expect=(0, {"state": []}, []))
    with pytest.raises(Misspeculated):
        session.request({"op": "call"})
    # with nothing taken as seen, it is that request's error, as before
    session = _session_with_reply({"error": ["RuntimeError", "boom", ""], "before_failed": 0})
    session.defer({"op": "train", "mode": False})
    with pytest.raises(RuntimeError, match="boom"):
        session.request({"op": "call"})
