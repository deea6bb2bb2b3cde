"""PN-V of reference/powernorm.py (spec powernorm_v): batch ψ_B² with the exact gradient in train, the running
ψ² (α_fwd weighs the old value) in eval."""

from __future__ import annotations

from torch import nn

from .powernorm import PowerNormReference


def build(num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9) -> nn.Module:
    return PowerNormReference(num_features, eps=eps, affine=affine, alpha_fwd=alpha_fwd, running_forward=False)
