"""LayerNorm (Ba et al. 2016), torch conventions: biased variance, eps inside the square root."""

from __future__ import annotations

import torch
from torch import nn

from ._affine import affine_parameters, apply_affine


class LayerNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        affine_parameters(self, num_features, affine)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Per-token statistics: padding cannot leak, so the mask is accepted and not needed.
        x64 = x.to(torch.float64)
        mean = x64.mean(dim=-1, keepdim=True)
        centred = x64 - mean
        var = (centred * centred).mean(dim=-1, keepdim=True)
        y = centred / torch.sqrt(var + self.eps)
        return apply_affine(self, y, -1).to(x.dtype)


def build(num_features: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    return LayerNormReference(num_features, eps=eps, affine=affine)
