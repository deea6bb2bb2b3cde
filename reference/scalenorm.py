"""ScaleNorm (Nguyen & Salazar 2019, "Transformers without Tears"): y = g·x / max(‖x‖₂, eps) per token,
with ONE learned scalar g initialized to sqrt(C).

The max (not a sum) is the paper's and the authors' code's choice: a token with norm above eps is scaled
exactly to norm g. Without affine, g is the constant sqrt(C), so the output has mean square 1 (an RMSNorm
without eps) and the second-moment statistics hold exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ScaleNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.scale = math.sqrt(num_features)
        if affine:
            self.weight = nn.Parameter(torch.full((1,), self.scale, dtype=torch.float64))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Per-token statistic: padding cannot leak, so the mask is accepted and not needed.
        x64 = x.to(torch.float64)
        norm = torch.linalg.vector_norm(x64, dim=-1, keepdim=True)
        g = self.weight.to(torch.float64) if self.weight is not None else self.scale
        return (g * x64 / torch.clamp(norm, min=self.eps)).to(x.dtype)


def build(num_features: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    return ScaleNormReference(num_features, eps=eps, affine=affine)
