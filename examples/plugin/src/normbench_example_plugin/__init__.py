"""A hand-written LayerNorm and a LLaMA-order RMSNorm, registered with normbench by entry point."""

from __future__ import annotations

import torch
from torch import nn

from normbench import Implementation


class TwoPassLayerNorm(nn.Module):
    """LayerNorm computed in float32 with the two-pass variance, cast back to the input dtype."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.promote_types(x.dtype, torch.float32))  # float32 at least; float64 stays float64
        mean = h.mean(-1, keepdim=True)
        var = (h - mean).pow(2).mean(-1, keepdim=True)
        y = (h - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(h.dtype) + self.bias.to(h.dtype)
        return y.to(x.dtype)


class LlamaRMSNorm(nn.Module):
    """LLaMA's order: normalize in float32, cast to the input dtype, then multiply by the weight."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.promote_types(x.dtype, torch.float32))  # float32 at least; float64 stays float64
        y = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return y * self.weight.to(x.dtype) if self.weight is not None else y


def implementations() -> list[Implementation]:
    return [
        Implementation(name="example.TwoPassLayerNorm", family="layernorm", factory=TwoPassLayerNorm),
        Implementation(name="example.LlamaRMSNorm", family="rmsnorm", factory=LlamaRMSNorm),
    ]
