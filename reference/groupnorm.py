"""GroupNorm (Wu & He 2018): C split into num_groups contiguous groups, statistics per sample per group
(biased variance), affine per channel."""

from __future__ import annotations

import torch
from torch import nn

from ._affine import affine_parameters, apply_affine


class GroupNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, num_groups: int = 4) -> None:
        super().__init__()
        if num_features % num_groups:
            raise ValueError(f"num_features={num_features} is not divisible by num_groups={num_groups}")
        self.num_features = num_features
        self.num_groups = num_groups
        self.eps = eps
        affine_parameters(self, num_features, affine)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x64 = x.to(torch.float64)
        n = x64.shape[0]
        # The group size spelled out, not -1: reshape cannot infer it for an empty batch (n = 0).
        grouped = x64.reshape(n, self.num_groups, x64.shape[1:].numel() // self.num_groups)
        mean = grouped.mean(dim=-1, keepdim=True)
        centred = grouped - mean
        var = (centred * centred).mean(dim=-1, keepdim=True)
        y = (centred / torch.sqrt(var + self.eps)).reshape(x64.shape)
        return apply_affine(self, y, 1).to(x.dtype)


def build(num_features: int, eps: float = 1e-5, affine: bool = True, num_groups: int = 4) -> nn.Module:
    return GroupNormReference(num_features, eps=eps, affine=affine, num_groups=num_groups)
