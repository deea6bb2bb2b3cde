"""Deliberately broken (and deliberately correct) norm modules for the numerics, statistics and folding
checks. Each mutant reproduces one bug class of BUGS.md in a few lines of plain torch; the correct ones are
the cast orders found in the wild that must NOT be flagged."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from factories.norms import AffineNorm
from torch import nn

_HALF = (torch.float16, torch.bfloat16)


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in _HALF else x.dtype


class _TokenNorm(AffineNorm):
    """A per-token norm over the last dimension with LayerNorm's (weight, bias) parameters."""

    def affine(self, y: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            y = y * self.weight.to(y.dtype) + self.bias.to(y.dtype)
        return y


# -- LayerNorm mutants -------------------------------------------------------------------------------

class OnePassLayerNorm(_TokenNorm):
    """var = E[x²] − E[x]² (pytorch#51102, #40302): cancels for mean ≫ spread; can go negative → NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_acc(x))
        mean = xf.mean(-1, keepdim=True)
        var = (xf * xf).mean(-1, keepdim=True) - mean * mean
        return self.affine((xf - mean) / torch.sqrt(var + self.eps)).to(x.dtype)


def _sequential_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ over the last dim, one element at a time, every partial sum rounded to x's dtype (a kernel that
    accumulates in bf16; torch's own reductions accumulate in float32 and would hide the bug)."""
    acc = torch.zeros_like(x[..., :1])
    for i in range(x.shape[-1]):
        acc = acc + x[..., i:i + 1]
    return acc


class Bf16SumLayerNorm(_TokenNorm):
    """Mean and variance summed in the input dtype (bf16 accumulation; executorch#18772)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        mean = _sequential_sum(x) / c
        centred = x - mean
        var = _sequential_sum(centred * centred) / c
        return self.affine(centred / torch.sqrt(var + self.eps)).to(x.dtype)


class EpsOutsideLayerNorm(_TokenNorm):
    """(x − μ)/(σ + ε): ε added to the standard deviation (Annotated Transformer, CNTK; gpt-neox#1337)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_acc(x))
        mean = xf.mean(-1, keepdim=True)
        std = (xf - mean).pow(2).mean(-1, keepdim=True).sqrt()
        return self.affine((xf - mean) / (std + self.eps)).to(x.dtype)


class NoEpsLayerNorm(_TokenNorm):
    """(x − μ)/σ with no ε at all: 0/0 = NaN on constant rows, and NaN gradients (pytorch_geometric#2559)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_acc(x))
        mean = xf.mean(-1, keepdim=True)
        std = (xf - mean).pow(2).mean(-1, keepdim=True).sqrt()
        return self.affine((xf - mean) / std).to(x.dtype)


class UnbiasedLayerNorm(_TokenNorm):
    """Unbiased variance (torch.std's default, divide by C − 1): outputs have variance (C−1)/C."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_acc(x))
        mean = xf.mean(-1, keepdim=True)
        var = xf.var(-1, keepdim=True, unbiased=True)
        return self.affine((xf - mean) / torch.sqrt(var + self.eps)).to(x.dtype)


# -- RMSNorm variants --------------------------------------------------------------------------------

class _RMS(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True, zero_centred: bool = False) -> None:
        super().__init__()
        self.eps = eps
        init = torch.zeros(num_features) if zero_centred else torch.ones(num_features)
        self.weight = nn.Parameter(init) if affine else None


class HalfSquareRMSNorm(_RMS):
    """Squares in float16 before upcasting (fixed in pytorch PR #133085): x² overflows for |x| ≥ 256."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = (x * x).to(_acc(x)).mean(-1, keepdim=True)
        y = x.to(_acc(x)) * torch.rsqrt(ms + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype)
        return y.to(x.dtype)


class Float32OutputRMSNorm(_RMS):
    """Returns float32 whatever the input dtype (forgets the final cast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * self.weight.float() if self.weight is not None else y


class LlamaRMSNorm(_RMS):
    """HF LLaMA's order (correct): normalize in float32, cast to the input dtype, then multiply γ.
    With float32 γ and a half input it returns float32 (transformers#25421)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.weight * y if self.weight is not None else y


class GemmaRMSNorm(_RMS):
    """Gemma's order (correct): γ stored zero-centred, multiply by (1 + w) in float32, then cast."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__(num_features, eps, affine, zero_centred=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * (1.0 + self.weight.float())
        return y.to(x.dtype)


# -- BatchNorm mutant --------------------------------------------------------------------------------

class BatchStatsInEvalBatchNorm(nn.BatchNorm1d):
    """Normalizes with the batch statistics in eval too (ignores the running ones), so eval is not a fixed
    per-channel map and cannot be folded."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
