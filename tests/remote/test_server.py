"""The plugin-side server's own helpers (normbench.remote.server), on the values that reach them."""

import pytest
import torch

from normbench.remote.server import _same


@pytest.mark.parametrize("before, after, same", [
    (torch.tensor(1.0), torch.tensor(2.0), False),  # a scalar parameter (DyT's alpha) after an optimizer step
    (torch.tensor(float("nan")), torch.tensor(float("nan")), True),  # NaN equals NaN bitwise
    (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")]), True),
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]), False),
])
def test_same_compares_every_shape_bitwise_a_scalar_too(before, after, same):
    assert _same(after, (id(after), before)) is same


def test_same_is_false_for_another_tensor_object_with_equal_values():
    held = torch.ones(3)
    assert not _same(torch.ones(3), (id(held), held))


class _RandomInit(torch.nn.Module):
    """Initializes its weight from the global RNG, as nn.Linear does."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def test_a_remote_build_takes_the_checks_seed_and_leaves_the_rng_as_it_was():
    # init_scaling seeds, then builds: a module that draws its initial weights must come out the same every time
    from normbench.implementation import Implementation
    from normbench.remote.loopback import remote_view
    from normbench.spec import load_specs

    spec = load_specs().specs["layernorm"]
    impl = Implementation(name="test.random_init", family="layernorm", factory=_RandomInit)
    with remote_view(impl, spec) as view:
        torch.manual_seed(7)
        first = view.factory(16).weight.detach().clone()
        state = torch.get_rng_state()
        other = view.factory(16).weight.detach().clone()
        assert torch.equal(torch.get_rng_state(), state)  # read, not advanced (the loopback shares this RNG)
        torch.manual_seed(7)
        again = view.factory(16).weight.detach().clone()
    assert torch.equal(first, again)
    assert torch.equal(first, other)  # the same state gives the same module
    torch.manual_seed(8)
    with remote_view(impl, spec) as view:
        assert not torch.equal(view.factory(16).weight.detach(), first)


def test_a_forward_that_leaves_grad_mode_off_is_tampering_in_the_trusted_process_too():
    # the server calls forward inside set_grad_enabled(...), whose exit would undo the plugin's switch unseen
    from normbench.remote.judge import JUDGED_IN
    from normbench.sandbox import Limits, SandboxPool, discover_isolated
    from normbench.spec import load_specs

    specs = load_specs().specs
    registry = discover_isolated(["plugins.hostile:grad_mode_off"], families=specs, include_entry_points=False)
    pool = SandboxPool(specs, "ci", Limits())
    try:
        outcome = pool.judge(registry.implementations["hostile.grad_mode_off"], "layernorm", "forward_equivalence",
                             "any", "float32", "cpu")
    finally:
        pool.close()
    assert outcome.verdict == "error"
    assert "torch state: grad mode is False, was True" in outcome.summary
    assert outcome.metrics[JUDGED_IN] == "trusted process"


@pytest.mark.parametrize("path", ["trusted process", "plugin process"])
def test_a_forward_that_leaves_inference_mode_on_is_tampering_on_either_side(monkeypatch, path):
    # train_eval_consistency calls forward under no_grad, where the plugin enters inference mode: the server's own
    # inference_mode(False) exit would undo it unseen, and grad mode (off in both) would tell nothing
    import normbench.sandbox as sandbox
    from normbench.remote.judge import JUDGED_IN
    from normbench.sandbox import Limits, SandboxPool, discover_isolated
    from normbench.spec import load_specs

    if path == "plugin process":
        monkeypatch.setattr(sandbox, "trusted", lambda *_, **__: False)
    specs = load_specs().specs
    registry = discover_isolated(["plugins.mode_leaks:inference_mode_on"], families=specs,
                                 include_entry_points=False)
    pool = SandboxPool(specs, "ci", Limits())
    try:
        outcome = pool.judge(registry.implementations["mode_leaks.inference_mode_on"], "layernorm",
                             "train_eval_consistency", "any", "float32", "cpu")
    finally:
        pool.close()
    assert outcome.metrics[JUDGED_IN] == path
    assert outcome.verdict == "error"
    # named as beside the check: inference mode on, grad mode as the check's no_grad() left it
    assert outcome.summary.endswith("torch state: inference mode is True, was False"), outcome.summary
