"""Affine parameters and eval-map folding shared by the built-in seed-family modules (not by reference/,
which keeps its own code so that a bug here cannot cancel itself out in the comparison)."""

from __future__ import annotations

import torch
from torch import nn

_F64 = torch.float64


def add_affine(module: nn.Module, shape: int | tuple[int, ...], affine: bool) -> None:
    """γ = 1 and β = 0 of `shape` as `weight` / `bias`, or both registered as None (torch's convention)."""
    if affine:
        module.weight = nn.Parameter(torch.ones(shape))
        module.bias = nn.Parameter(torch.zeros(shape))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def scale_only_eval_map(module: nn.Module, statistic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) in float64 of y = γ·x/sqrt(statistic + ε) + β: the eval map of the second-moment-only norms
    (PN*, Unified Normalization, MABN), which never subtract a mean."""
    s = torch.rsqrt(statistic.detach().to(_F64) + module.eps)
    t = torch.zeros_like(s)
    if module.weight is not None:
        s, t = s * module.weight.detach().to(_F64), module.bias.detach().to(_F64)
    return s, t
