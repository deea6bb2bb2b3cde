"""RMSNorm (Zhang & Sennrich 2019), torch convention: y = γ·x / sqrt(mean(x²) + eps).

eps_mode "clamp" is the F.normalize convention (x-transformers' RMSNorm): y = γ·√C·x / max(‖x‖₂, eps), the
same map wherever ‖x‖₂ > eps, and 0 (not NaN) on an all-zero row.
"""

from __future__ import annotations

import math

import torch
from torch import nn

EPS_MODES = ("add", "clamp")


class RMSNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True, eps_mode: str = "add") -> None:
        super().__init__()
        if eps_mode not in EPS_MODES:
            raise ValueError(f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
        self.num_features = num_features
        self.eps = eps
        self.eps_mode = eps_mode
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, dtype=torch.float64))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x64 = x.to(torch.float64)
        if self.eps_mode == "add":
            y = x64 / torch.sqrt((x64 * x64).mean(dim=-1, keepdim=True) + self.eps)
        else:
            norm = torch.linalg.vector_norm(x64, dim=-1, keepdim=True)
            y = math.sqrt(x64.shape[-1]) * x64 / torch.clamp(norm, min=self.eps)
        if self.weight is not None:
            y = y * self.weight.to(torch.float64)
        return y.to(x.dtype)


def build(num_features: int, eps: float = 1e-6, affine: bool = True, eps_mode: str = "add") -> nn.Module:
    return RMSNormReference(num_features, eps=eps, affine=affine, eps_mode=eps_mode)
