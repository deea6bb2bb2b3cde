"""Norms with eps outside the square root, for `normbench repro`: each fails forward and gradient equivalence
(at eps = 1 the error is far beyond any tolerance), so the suite records counterexamples to reproduce."""

from __future__ import annotations

import torch
from torch import nn

from normbench import Implementation


class EpsOutsideLayerNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        centred = h - h.mean(-1, keepdim=True)
        y = centred / (centred.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)  # the bug: eps outside the sqrt
        if self.weight is not None:
            y = y * self.weight.float() + self.bias.float()
        return y.to(x.dtype)


class EpsOutsideRMSNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        y = h / (h.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)  # the bug: eps outside the sqrt
        return (y if self.weight is None else y * self.weight.float()).to(x.dtype)


def implementations() -> list[Implementation]:
    return [Implementation(name="repro.eps_outside_layernorm", family="layernorm", factory=EpsOutsideLayerNorm),
            Implementation(name="repro.eps_outside_rmsnorm", family="rmsnorm", factory=EpsOutsideRMSNorm)]
