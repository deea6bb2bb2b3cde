"""Masked BatchNorm over tokens: BatchNorm whose batch statistics count real (non-pad) tokens only.

Layout (B, T, C), features last; pad_mask (B, T) with True = pad (the fairseq / PowerNorm convention).
Plain BatchNorm counts pad positions in its statistics (pytorch/pytorch#70529, tensorflow#30161), so
what a sequence's real tokens get depends on how much padding the batch carries; this variant is the fix.

Train: with n = the number of real tokens, μ = Σ_real x / n, σ² = Σ_real (x−μ)² / n (biased, as torch
BatchNorm normalizes); running = (1−m)·running + m·batch, m = momentum weighing the NEW value, running_var
receiving the unbiased σ²·n/(n−1) (n the real-token count, never B·T); momentum=None is the cumulative
average 1/num_batches_tracked. Outputs at pad positions are 0: pads are not tokens, their values never enter
any computation (a NaN pad stays harmless) and they receive no gradient.
Eval (with running statistics): the fixed per-channel map γ·(x−running_mean)/sqrt(running_var+ε) + β at
every position, pads included — there is no statistic left for pads to leak into, and a map that is the same
everywhere is what folding into an adjacent Linear reproduces exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from ._affine import affine_parameters, apply_affine


class MaskedBatchNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        affine_parameters(self, num_features, affine)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, dtype=torch.float64))
            self.register_buffer("running_var", torch.ones(num_features, dtype=torch.float64))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"expected a (B, T, C) input, got shape {tuple(x.shape)}")
        x64 = x.to(torch.float64)
        if not (self.training or not self.track_running_stats):
            mean = self.running_mean.to(torch.float64)
            var = self.running_var.to(torch.float64)
            y = (x64 - mean) / torch.sqrt(var + self.eps)
            return apply_affine(self, y, -1).to(x.dtype)
        if pad_mask is None:
            real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            if pad_mask.shape != x.shape[:2]:
                raise ValueError(f"pad_mask shape {tuple(pad_mask.shape)} does not match (B, T) = "
                                 f"{tuple(x.shape[:2])}")
            real = ~pad_mask.to(torch.bool)
        keep = real.unsqueeze(-1)
        count = int(real.sum())
        if self.training and count <= 1:
            raise ValueError(f"Expected more than 1 real token per channel when training, got {count}")
        # Pads are replaced before any arithmetic, so NaN / inf pads reach neither value nor gradient.
        xr = torch.where(keep, x64, torch.zeros((), dtype=torch.float64))
        mean = xr.sum(dim=(0, 1)) / count
        centred = torch.where(keep, xr - mean, torch.zeros((), dtype=torch.float64))
        var = (centred * centred).sum(dim=(0, 1)) / count
        if self.training and self.track_running_stats:
            self._update(mean.detach(), var.detach(), count)
        y = apply_affine(self, centred / torch.sqrt(var + self.eps), -1)
        y = torch.where(keep, y, torch.zeros((), dtype=torch.float64))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1)
        new_mean = (1 - factor) * self.running_mean.to(torch.float64) + factor * mean
        new_var = (1 - factor) * self.running_var.to(torch.float64) + factor * unbiased
        self.running_mean.copy_(new_mean.to(self.running_mean.dtype))
        self.running_var.copy_(new_var.to(self.running_var.dtype))


def build(num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
          track_running_stats: bool = True) -> nn.Module:
    return MaskedBatchNormReference(num_features, eps=eps, affine=affine, momentum=momentum,
                                    track_running_stats=track_running_stats)
