"""PN* of reference/powernorm.py (spec powernorm_star): the authors' PowerNorm without GroupScaling - running
statistics after warm-up, approximate backward dividing by the current batch ψ_B (their code)."""

from __future__ import annotations

from torch import nn

from .powernorm import PowerNormReference


def build(num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9, alpha_bkw: float = 0.9,
          warmup: int = 2) -> nn.Module:
    return PowerNormReference(num_features, eps=eps, affine=affine, alpha_fwd=alpha_fwd, alpha_bkw=alpha_bkw,
                              warmup=warmup, backward_statistic="batch")
