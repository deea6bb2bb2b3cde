"""The constructor most self-test mutants share: the suite builds a module as factory(num_features, eps=...,
affine=...), and a LayerNorm-shaped mutant keeps eps, γ = 1 and β = 0 (None without affine). A mutant subclasses
AffineNorm and writes only the forward that holds its bug."""

from __future__ import annotations

import torch
from torch import nn


class AffineNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
