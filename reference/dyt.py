"""Dynamic Tanh, DyT (Zhu, Chen, He, LeCun, Liu 2025, "Transformers without Normalization"):
y = γ·tanh(α·x) + β elementwise, α ONE learnable scalar (init 0.5), γ, β per channel.

Not a normalization: no statistic at all. It is judged as a norm *replacement*: what it shares with a
per-token norm (batch and pad independence, elementwise) holds, what makes a norm a norm (normalized
statistics, scale and shift invariance, an affine eval map that folds) is violated. `eps` is accepted
because every family declares it; DyT has none and ignores it.
"""

from __future__ import annotations

import torch
from torch import nn

from ._affine import affine_parameters, apply_affine


class DyTReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True, alpha_init: float = 0.5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.alpha = nn.Parameter(torch.full((1,), alpha_init, dtype=torch.float64))
        affine_parameters(self, num_features, affine)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Elementwise: padding cannot leak, so the mask is accepted and not needed.
        x64 = x.to(torch.float64)
        y = torch.tanh(self.alpha.to(torch.float64) * x64)
        return apply_affine(self, y, -1).to(x.dtype)


def build(num_features: int, eps: float = 1e-6, affine: bool = True, alpha_init: float = 0.5) -> nn.Module:
    return DyTReference(num_features, eps=eps, affine=affine, alpha_init=alpha_init)
