"""MaskPowerNorm of reference/powernorm.py (spec powernorm_masked): GroupScaling1D ("layer scale") over
num_groups channel groups per token, then PN with the authors' backward (dx divided by the batch ψ_B)."""

from __future__ import annotations

from torch import nn

from .powernorm import PowerNormReference


def build(num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9, alpha_bkw: float = 0.9,
          warmup: int = 2, num_groups: int = 4, gs_eps: float = 1e-5) -> nn.Module:
    return PowerNormReference(num_features, eps=eps, affine=affine, alpha_fwd=alpha_fwd, alpha_bkw=alpha_bkw,
                              warmup=warmup, backward_statistic="batch", num_groups=num_groups, gs_eps=gs_eps)
