"""Fused add + norm modules in eager PyTorch: the residual contract of vLLM's ``fused_add_rms_norm`` and
TransformerEngine / apex's fused residual LayerNorm, as a correct example for the ``fused_residual`` check.

``forward(x, residual=r)`` computes h = x + r in float32 (at least), returns ``(norm(h), h in the input dtype)``;
without a residual it is the plain norm. The RMSNorm follows vLLM's order (normalize in float32, cast to the
input dtype, then multiply by the weight: the LLaMA order, NORMS.md "cast orders").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normbench.families._affine import add_affine
from normbench.implementation import Implementation


def _accumulate(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


class FusedAddRMSNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = x.to(_accumulate(x))
        if residual is not None:
            h = h + residual.to(h.dtype)
        y = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        if self.weight is not None:
            y = y * self.weight.to(x.dtype)
        return y if residual is None else (y, h.to(x.dtype))


class FusedAddLayerNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        add_affine(self, num_features, affine)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = x.to(_accumulate(x))
        if residual is not None:
            h = h + residual.to(h.dtype)
        weight = None if self.weight is None else self.weight.to(h.dtype)
        bias = None if self.bias is None else self.bias.to(h.dtype)
        y = F.layer_norm(h, (h.shape[-1],), weight, bias, self.eps).to(x.dtype)
        return y if residual is None else (y, h.to(x.dtype))


def implementations() -> list[Implementation]:
    return [
        Implementation(name="normbench.FusedAddRMSNorm", family="rmsnorm", factory=FusedAddRMSNorm,
                       residual_kwarg="residual", tags=("builtin", "fused-residual"),
                       description="h = x + residual, RMSNorm(h) in vLLM's order; returns (normed, h)"),
        Implementation(name="normbench.FusedAddLayerNorm", family="layernorm", factory=FusedAddLayerNorm,
                       residual_kwarg="residual", tags=("builtin", "fused-residual"),
                       description="h = x + residual, LayerNorm(h) in float32; returns (normed, h)"),
    ]
