"""Fused add + norm modules broken on purpose, each in a way shipped kernels were (BUGS.md, last row)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from factories.norms import AffineNorm
from torch import nn


class _FusedBase(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def norm(self, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        h = h.float() if h.dtype != torch.float64 else h
        y = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(dtype)
        return y * self.weight.to(dtype) if self.weight is not None else y


class UnfusedAddRMSNorm(_FusedBase):
    """Correct: the plain composition h = x + r (in the input dtype), then RMSNorm(h)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.norm(x, x.dtype)
        h = x + residual
        return self.norm(h, x.dtype), h


class NormIgnoresResidual(_FusedBase):
    """Normalizes x instead of x + r (the residual is only added to the returned stream)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.norm(x, x.dtype)
        return self.norm(x, x.dtype), x + residual


class ReturnsOldResidual(_FusedBase):
    """Hands back the residual argument instead of the updated stream x + r."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.norm(x, x.dtype)
        return self.norm(x + residual, x.dtype), residual.clone()


class Float32Residual(_FusedBase):
    """Keeps the float32 sum as the residual: wrong dtype for half inputs (the next add upcasts the model)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        h = x.float() + (0 if residual is None else residual.float())
        y = self.norm(h, x.dtype)
        return y if residual is None else (y, h)


class DoubleRoundedResidual(_FusedBase):
    """Rounds the residual through bfloat16 before the input dtype: not bitwise x + r in float32 / float16."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.norm(x, x.dtype)
        h = x.float() + residual.float()
        return self.norm(h, x.dtype), h.to(torch.bfloat16).to(x.dtype)


class InPlaceResidual(_FusedBase):
    """vLLM's custom-op convention leaking through a module: the residual argument is updated in place and
    returned (the caller's tensor changes under it, and the output aliases it)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.norm(x, x.dtype)
        with torch.no_grad():
            residual.add_(x)
        return self.norm(residual, x.dtype), residual


class DetachedResidualOutput(_FusedBase):
    """The returned residual is detached: the gradient flowing back through the residual stream is lost."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.norm(x, x.dtype)
        h = x + residual
        return self.norm(h, x.dtype), h.detach()


class NoNormGradientIntoResidual(_FusedBase):
    """The norm's gradient reaches x but not r (the residual input is treated as a constant)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return self.norm(x, x.dtype)
        return self.norm(x + residual.detach(), x.dtype), x + residual


class ReturnsOnlyNormed(_FusedBase):
    """Declares a residual keyword but returns only the normalized tensor."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        return self.norm(x if residual is None else x + residual, x.dtype)


class FusedAddLayerNormNoBias(AffineNorm):
    """LayerNorm variant whose fused path forgets β (the unfused path has it)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        h = x + residual
        return F.layer_norm(h, (h.shape[-1],), self.weight, None, self.eps), h
