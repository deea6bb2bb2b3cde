"""Per-token norms and a norm replacement: pRMSNorm, ScaleNorm, DyT.

Practical modules for any dtype: half inputs are reduced in float32 and the weight is applied in float32
before the cast back (the torch.nn.RMSNorm order). The math, and where the papers' code differs, is in
the references (reference/prmsnorm.py, scalenorm.py, dyt.py) and in ../shared NORMS.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from normbench.families._affine import add_affine
from normbench.implementation import Implementation

_HALF = (torch.float16, torch.bfloat16)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in _HALF else x.dtype


class PartialRMSNorm(nn.Module):
    """pRMSNorm (Zhang & Sennrich 2019): rms from the first k = ceil(p·C) features, applied to all C.

    The paper defines k with a ceiling; the authors' code uses int(p·C), one feature fewer whenever p·C is
    not an integer, and 0 (a division by sqrt(eps)) when p·C < 1.
    """

    def __init__(self, num_features: int, eps: float = 1e-8, affine: bool = True, p: float = 0.0625) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.p = p
        self.k = num_features if not 0.0 < p <= 1.0 else min(num_features, max(1, math.ceil(p * num_features)))
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def extra_repr(self) -> str:
        return f"{self.num_features}, p={self.p} (k={self.k}), eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_compute_dtype(x))
        head = xf.narrow(-1, 0, self.k)
        y = xf * torch.rsqrt(head.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype)
        return y.to(x.dtype)


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar 2019): y = g·x / max(‖x‖₂, eps), g one scalar initialized to sqrt(C)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.scale = math.sqrt(num_features)
        self.weight = nn.Parameter(torch.full((1,), self.scale)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_compute_dtype(x))
        norm = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).clamp_min(self.eps)
        g = self.weight.to(xf.dtype) if self.weight is not None else self.scale
        return (xf * (g / norm)).to(x.dtype)


class DyT(nn.Module):
    """Dynamic Tanh (Zhu et al. 2025): y = γ·tanh(α·x) + β, α one learnable scalar. Not a normalization;
    `eps` is accepted (every family declares it) and unused."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True, alpha_init: float = 0.5) -> None:
        super().__init__()
        self.num_features = num_features
        self.alpha = nn.Parameter(torch.full((1,), alpha_init))
        add_affine(self, num_features, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_compute_dtype(x))
        y = torch.tanh(self.alpha.to(xf.dtype) * xf)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype) + self.bias.to(y.dtype)
        return y.to(x.dtype)


def implementations() -> list[Implementation]:
    from normbench.reference import dyt, prmsnorm, scalenorm

    builtin, ref = ("builtin",), ("reference",)
    return [
        Implementation(name="normbench.PartialRMSNorm", family="prmsnorm", factory=PartialRMSNorm, tags=builtin),
        Implementation(name="normbench.ScaleNorm", family="scalenorm", factory=ScaleNorm, tags=builtin),
        Implementation(name="normbench.DyT", family="dyt", factory=DyT, tags=builtin),
        Implementation(name="reference.prmsnorm", family="prmsnorm", factory=prmsnorm.build, tags=ref),
        Implementation(name="reference.scalenorm", family="scalenorm", factory=scalenorm.build, tags=ref),
        Implementation(name="reference.dyt", family="dyt", factory=dyt.build, tags=ref),
    ]
