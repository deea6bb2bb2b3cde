"""What a check writes into a parameter between a call and that call's backward reaches the plugin's side first.

gradcheck (and gradgradcheck) perturb γ through ``.data``, call the module, and restore γ after the last call; the
analytical gradient is then the backward of a call made before the perturbations. Beside the plugin that graph saved
γ itself, so the backward reads the restored γ. Through the protocol the plugin's side last saw γ + eps·u; unless
the restore is carried before the backward, a float64 gradient is off by about 1e-6 relative, which the full mode's
tolerance hid and fast mode's flags (reference.rmsnorm, reference.scalenorm, normbench.FusedAddRMSNorm failed their
gradcheck items through the trusted judge and passed them beside it).
"""

from __future__ import annotations

import pytest
import torch
from helpers import REMOTE_ENV, impl, run, specs
from torch import nn
from torch.func import functional_call

from normbench.remote.judge import trusted
from normbench.remote.loopback import remote_view


class _RMSNorm(nn.Module):
    """An RMSNorm whose backward reads the saved γ (x̂ · γ): a stale γ over there changes dX."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, **_: object) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


IMPL = impl("params.rmsnorm", "rmsnorm", _RMSNorm)


def _gradients_after_a_perturbed_call(module: nn.Module, create_graph: bool) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, dtype=torch.float64, generator=gen).requires_grad_(True)
    w = (1 + 0.3 * torch.randn(8, dtype=torch.float64, generator=gen)).requires_grad_(True)
    v = torch.randn(3, 8, dtype=torch.float64, generator=gen)
    y = functional_call(module, {"weight": w}, (x,))
    saved = w.detach().clone()
    w.data.add_(1e-3)  # gradcheck's perturbation: through .data, no version bump
    functional_call(module, {"weight": w}, (x,))
    w.data.copy_(saved)  # and its restore, after its last call
    grads = torch.autograd.grad(y, (x, w), v, create_graph=create_graph)
    if not create_graph:
        return list(grads)
    w.data.add_(1e-3)
    functional_call(module, {"weight": w}, (x,))
    w.data.copy_(saved)
    return list(grads) + list(torch.autograd.grad(grads[0], (x, w), v))


@pytest.mark.parametrize("create_graph", [False, True], ids=["backward", "double_backward"])
def test_the_backward_reads_the_parameter_as_the_check_left_it(create_graph):
    beside = _gradients_after_a_perturbed_call(_RMSNorm(8).to(torch.float64), create_graph)
    with remote_view(IMPL, specs()["rmsnorm"]) as view:
        remote = _gradients_after_a_perturbed_call(view.factory(8, eps=1e-5, affine=True).to(torch.float64),
                                                   create_graph)
    for here, there in zip(beside, remote, strict=True):
        assert torch.equal(here, there), (here - there).abs().max()


@pytest.mark.parametrize("prop", ["gradcheck", "second_order_gradients"])
def test_the_float64_gradcheck_items_pass_through_the_protocol(prop, monkeypatch):
    assert trusted(prop, "eager")  # so helpers.run judges it through the loopback protocol
    monkeypatch.setenv(REMOTE_ENV, "1")
    outcome = run(IMPL, prop, dtype="float64")
    assert outcome.verdict == "pass", outcome.summary
