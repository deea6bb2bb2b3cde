"""RMSNorm (Zhang & Sennrich 2019), torch convention: y = γ·x / sqrt(mean(x²) + eps)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, dtype=torch.float64))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x64 = x.to(torch.float64)
        rms = torch.sqrt((x64 * x64).mean(dim=-1, keepdim=True) + self.eps)
        y = x64 / rms
        if self.weight is not None:
            y = y * self.weight.to(torch.float64)
        return y.to(x.dtype)


def build(num_features: int, eps: float = 1e-6, affine: bool = True) -> nn.Module:
    return RMSNormReference(num_features, eps=eps, affine=affine)
