"""Partial RMSNorm, pRMSNorm (Zhang & Sennrich 2019, section 4): the rms is estimated from the first
k = ceil(p·C) features only, and all C features are divided by it.

    rms = sqrt(mean(x[..., :k]²) + eps),  y = γ·x / rms

k: the paper defines the partial set as the first ⌈p·n⌉ units; the authors' code takes int(p·C) (floor),
which differs whenever p·C is not an integer (C = 769, p = 1/16: 49 here, 48 there) and gives k = 0, a
division by sqrt(eps), for p·C < 1. We follow the paper (ceil, so k ≥ 1 for any p > 0). p outside (0, 1]
means "all features" (plain RMSNorm), as in the authors' code. eps sits inside the square root, the torch
RMSNorm convention (the authors' code adds it to the rms outside the root; see NORMS.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def partial_size(num_features: int, p: float) -> int:
    """k = ceil(p·C), clamped to [1, C]; p outside (0, 1] means every feature."""
    if not 0.0 < p <= 1.0:
        return num_features
    return min(num_features, max(1, math.ceil(p * num_features)))


class PartialRMSNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-8, affine: bool = True, p: float = 0.0625) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.p = p
        self.k = partial_size(num_features, p)
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, dtype=torch.float64))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Per-token statistic: padding cannot leak, so the mask is accepted and not needed.
        x64 = x.to(torch.float64)
        head = x64[..., : self.k]
        rms = torch.sqrt((head * head).mean(dim=-1, keepdim=True) + self.eps)
        y = x64 / rms
        if self.weight is not None:
            y = y * self.weight.to(torch.float64)
        return y.to(x.dtype)


def build(num_features: int, eps: float = 1e-8, affine: bool = True, p: float = 0.0625) -> nn.Module:
    return PartialRMSNormReference(num_features, eps=eps, affine=affine, p=p)
