"""Second-order mutants with a float64 path (tests/mutants_contexts.py's compute in float32): a LayerNorm whose
backward is exact at first order but built from detached statistics, with and without once_differentiable."""

from __future__ import annotations

import torch
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
