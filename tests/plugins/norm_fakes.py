"""Norm classes written the ways library code writes them, to show the ecosystem classifier each outcome."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class LlamaStyleRMSNorm(nn.Module):
    """Computes in float32 whatever the input, casts back, then multiplies the weight (HF Llama)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        h = hidden_states.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(dtype)


class GemmaStyleRMSNorm(nn.Module):
    """Zero-centred weight: multiplies by 1 + w, in the input's precision (float64 path)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


class FixedEpsLayerNorm(nn.Module):
    """No parameters and a hard-coded eps (OLMo's LayerNorm)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.normalized_shape = (hidden_size,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, None, None, eps=1e-5)


class RmsNamedLayerNorm(nn.Module):
    """Named LayerNorm, computes RMSNorm (T5LayerNorm, ImageGPTLayerNorm)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class UnbiasedRMSNorm(nn.Module):
    """Wrong: divides the sum of squares by C - 1, matching no declaration."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = x.pow(2).sum(-1, keepdim=True) / (x.shape[-1] - 1)
        return self.weight * x / torch.sqrt(ms + self.eps)


class ConfiguredRMSNorm(nn.Module):
    def __init__(self, config: object) -> None:
        super().__init__()


class GatedRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return x


class Fp32PinnedLayerNorm(nn.LayerNorm):
    """Computes in float32 with its parameters as they are: raises once they are cast to float16 (EsmFold2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)
