"""Deliberately broken norm modules for masked_backward and nonfinite_containment.
Each mutant reproduces one bug class of BUGS.md ("masks in backward and unusual padding", "non-finite
containment") in a few lines of plain torch; its finite, right-padded behaviour is correct, so only the context
shows it. Masked modules take (B, T, C) tokens and a (B, T) pad mask, True = pad."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normbench.families.masked_batchnorm import MaskedBatchNorm


def _affine(module: nn.Module, num_features: int, affine: bool, bias: bool = True) -> None:
    module.weight = nn.Parameter(torch.ones(num_features)) if affine else None
    module.bias = nn.Parameter(torch.zeros(num_features)) if affine and bias else None


def _apply(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if module.weight is not None:
        y = y * module.weight
    if getattr(module, "bias", None) is not None:
        y = y + module.bias
    return y


# -- masks in backward and unusual padding: PowerNorm-V (spec powernorm_v) ------------------------------------

class _PowerNormV(nn.Module):
    """PN-V: ψ² = mean of x² over the real tokens; y = γ·x/sqrt(ψ² + ε) + β, 0 at pads; the EMA for eval."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9) -> None:
        super().__init__()
        self.eps, self.alpha_fwd = eps, alpha_fwd
        _affine(self, num_features, affine)
        self.register_buffer("running_phi", torch.ones(num_features))

    def statistic(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        xr = torch.where(keep, x, torch.zeros((), dtype=x.dtype))
        return (xr * xr).sum((0, 1)) / keep.sum()

    def normalized(self, x: torch.Tensor, keep: torch.Tensor, psi2: torch.Tensor) -> torch.Tensor:
        xr = torch.where(keep, x, torch.zeros((), dtype=x.dtype))
        return xr * torch.rsqrt(psi2 + self.eps)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return _apply(self, x * torch.rsqrt(self.running_phi + self.eps))
        pad = torch.zeros(x.shape[:-1], dtype=torch.bool) if pad_mask is None else pad_mask
        keep = ~pad.to(x.device).reshape(*x.shape[:-1], 1)
        psi2 = self.statistic(x, keep)
        with torch.no_grad():
            self.running_phi.mul_(self.alpha_fwd).add_((1 - self.alpha_fwd) * psi2.detach())
        y = _apply(self, self.normalized(x, keep, psi2))
        return torch.where(keep, y, torch.zeros((), dtype=y.dtype))


class MulMaskPowerNormV(_PowerNormV):
    """Mutant: the statistic as (x·mask)²: a NaN or inf pad times 0 is NaN, and ψ² takes it to every token."""

    def statistic(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        m = keep.to(x.dtype)
        return ((x * m) ** 2).sum((0, 1)) / m.sum()

    def normalized(self, x: torch.Tensor, keep: torch.Tensor, psi2: torch.Tensor) -> torch.Tensor:
        return x * keep.to(x.dtype) * torch.rsqrt(psi2 + self.eps)


class ForwardOnlyWherePowerNormV(_PowerNormV):
    """Mutant: pads replaced by where() for the statistic, but z = x/sqrt(ψ² + ε) from the raw x and the output
    zeroed at pads afterwards. The forward is right; autograd saves the raw x (NaN at pads) for the backward,
    so dγ = Σ dy·z holds 0·NaN, and dψ² (hence dX at every real token) too."""

    def normalized(self, x: torch.Tensor, keep: torch.Tensor, psi2: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(psi2 + self.eps)


class PerSequencePowerNormV(_PowerNormV):
    """Mutant: ψ² combined from per-sequence means weighted by their counts (as a sequence-parallel reduction
    would): exact, except that a sequence that is all padding has 0/0 = NaN, and 0·NaN is still NaN."""

    def statistic(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        xr = torch.where(keep, x, torch.zeros((), dtype=x.dtype))
        counts = keep.sum(1)  # (B, 1)
        per_sequence = (xr * xr).sum(1) / counts
        return (counts * per_sequence).sum(0) / counts.sum()


# -- masks in backward and unusual padding: masked BatchNorm (spec batchnorm_masked) --------------------------

class LengthsMaskedBatchNorm(MaskedBatchNorm):
    """Mutant: the mask converted to lengths (arange(T) < lengths): right for right padding only; with left pads
    or gaps the wrong positions count as real."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if pad_mask is not None:
            lengths = (~pad_mask).sum(1, keepdim=True)
            pad_mask = torch.arange(pad_mask.shape[1], device=pad_mask.device) >= lengths
        return super().forward(x, pad_mask)


class PadGradientBiasBatchNorm(MaskedBatchNorm):
    """Mutant: outputs 0 at pads, but dβ sums the upstream gradient over every position, pads included (a
    backward kernel reducing dy without the mask). pack_pad_equivalence cannot see it (dy is 0 at its pads)."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = super().forward(x, pad_mask)
        if pad_mask is None or self.bias is None or not self.training:
            return y
        ghost = self.bias - self.bias.detach()  # 0 in value, dβ in gradient
        return y + torch.where(pad_mask.unsqueeze(-1), ghost, torch.zeros_like(ghost))


# -- non-finite containment ---------------------------------------------------------------------------------

class AmaxGuardRMSNorm(nn.Module):
    """Mutant: an overflow guard that pre-scales by the amax of the whole tensor, s = max|x| over the batch:
    exact RMSNorm for finite inputs (y = γ·(x/s)/sqrt(mean((x/s)²) + ε/s²)); one inf makes x/s 0 or NaN for all."""

    def __init__(self, num_features: int, eps: float | None = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = 1e-6 if eps is None else eps
        _affine(self, num_features, affine, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.detach().abs().amax().clamp_min(1e-30)
        xs = x / s
        return _apply(self, xs * torch.rsqrt(xs.pow(2).mean(-1, keepdim=True) + self.eps / s**2))


class AllFiniteOrZeroLayerNorm(nn.Module):
    """Mutant: a global isfinite guard (nan_to_num of the batch): any non-finite element and the whole batch is
    replaced by zeros, so every row outputs β and gets dX = 0."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps, self.c = eps, num_features
        _affine(self, num_features, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isfinite(x).all(), x, torch.zeros_like(x))
        return F.layer_norm(x, (self.c,), self.weight, self.bias, self.eps)


class SharedFloorInstanceNorm(nn.Module):
    """Mutant: a per-sample InstanceNorm whose variance floor comes from the batch (a reduction shared across
    samples): var ≥ 1e-3·mean(var over the batch); a NaN sample makes the floor NaN for every sample."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        var = torch.maximum(var, 1e-3 * var.mean())
        return (x - mean) * torch.rsqrt(var + self.eps)
