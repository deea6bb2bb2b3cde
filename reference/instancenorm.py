"""InstanceNorm: statistics per sample per channel over the spatial axes (biased variance); torch defaults
affine=False and no running statistics, so eval also uses instance statistics."""

from __future__ import annotations

import torch
from torch import nn

from ._affine import affine_parameters, apply_affine


class InstanceNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        affine_parameters(self, num_features, affine)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x64 = x.to(torch.float64)
        axes = list(range(2, x.dim()))
        mean = x64.mean(dim=axes, keepdim=True)
        centred = x64 - mean
        var = (centred * centred).mean(dim=axes, keepdim=True)
        y = centred / torch.sqrt(var + self.eps)
        return apply_affine(self, y, 1).to(x.dtype)


def build(num_features: int, eps: float = 1e-5, affine: bool = False) -> nn.Module:
    return InstanceNormReference(num_features, eps=eps, affine=affine)
