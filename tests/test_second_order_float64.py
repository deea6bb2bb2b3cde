"""second_order_gradients in float64 for a module declared double_backward=False: torch's gradgradcheck reports a
once_differentiable backward as a Jacobian mismatch instead of raising, which failed every correct first-order-only
kernel with a float64 path (the Triton example). Double backward is asked directly first."""

from __future__ import annotations

import torch
from helpers import assert_flags, assert_passes, impl
from torch import nn
from torch.autograd.function import once_differentiable


class _DetachedFn(torch.autograd.Function):
    """A LayerNorm whose backward is exact at first order but built from detached statistics: its second-order
    gradients miss the terms through them (in any dtype, float64 included)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # noqa: ANN001, ANN205
        mean = x.mean(-1, keepdim=True)
        rstd = torch.rsqrt((x - mean).pow(2).mean(-1, keepdim=True) + eps)
        xhat = (x - mean) * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return xhat * weight + bias

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        xhat, rstd, weight = ctx.saved_tensors
        g = dy * weight
        dx = (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True)) * rstd
        rows = tuple(range(dy.dim() - 1))
        return dx, (dy * xhat).sum(rows), dy.sum(rows), None


class _OnceFn(_DetachedFn):
    @staticmethod
    @once_differentiable
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        return _DetachedFn.backward(ctx, dy)


class DetachedLayerNorm(nn.Module):
    fn: type[torch.autograd.Function] = _DetachedFn

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn.apply(x, self.weight, self.bias, self.eps)


class OnceDifferentiableLayerNorm(DetachedLayerNorm):
    fn = _OnceFn


def test_a_declared_once_differentiable_float64_backward_passes_because_double_backward_raises():
    declared = impl("once64", "layernorm", OnceDifferentiableLayerNorm, double_backward=False, affine="always")
    assert "raised, as declared" in assert_passes(declared, "second_order_gradients", dtype="float64").summary


def test_a_declared_first_order_float64_backward_that_returns_wrong_numbers_is_still_flagged():
    declared = impl("detached64", "layernorm", DetachedLayerNorm, double_backward=False, affine="always")
    assert "gradgradcheck failed" in assert_flags(declared, "second_order_gradients", dtype="float64").summary
