"""Masked BatchNorm over tokens: batch statistics from real (non-pad) tokens only.

Plain BatchNorm counts pad positions (pytorch/pytorch#70529): a sequence's output then depends on how much
padding its batch carries, and pack-versus-pad gives different numbers. This module is the practical fix
the PowerNorm paper builds on (their MaskPowerNorm selects the real tokens before computing statistics).

Layout (B, T, C), features last; ``pad_mask`` (B, T), True = pad. torch conventions otherwise: normalize
with the biased variance, running_var receives the unbiased one (from the real-token count), momentum
weighs the new value, momentum=None is the cumulative average. Train: outputs at pads are 0 and pads get no
gradient. Eval: the fixed per-channel affine map at every position (so it folds into an adjacent Linear,
see `folding_affine`). Half inputs are reduced in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from normbench.families._affine import add_affine
from normbench.implementation import Implementation


class MaskedBatchNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        add_affine(self, num_features, affine)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.weight is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _affine(self, y: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return y
        return y * self.weight.to(y.dtype) + self.bias.to(y.dtype)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.num_features:
            raise ValueError(f"expected (B, T, {self.num_features}) input, got {tuple(x.shape)}")
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        xf = x.to(acc)
        if not self.training and self.track_running_stats:
            rstd = torch.rsqrt(self.running_var.to(acc) + self.eps)
            return self._affine((xf - self.running_mean.to(acc)) * rstd).to(x.dtype)
        if pad_mask is None:
            keep = torch.ones(*x.shape[:2], 1, dtype=torch.bool, device=x.device)
        else:
            if pad_mask.shape != x.shape[:2]:
                raise ValueError(f"pad_mask shape {tuple(pad_mask.shape)} does not match (B, T) = "
                                 f"{tuple(x.shape[:2])}")
            keep = ~pad_mask.to(device=x.device, dtype=torch.bool).unsqueeze(-1)
        count = int(keep.sum())
        if self.training and count <= 1:
            raise ValueError(f"Expected more than 1 real token per channel when training, got {count}")
        zero = torch.zeros((), dtype=acc, device=x.device)
        # Replace pads before any arithmetic: a NaN pad times a zero weight is still NaN.
        xr = torch.where(keep, xf, zero)
        mean = xr.sum(dim=(0, 1)) / count
        centred = torch.where(keep, xr - mean, zero)  # two-pass variance: no E[x²]−E[x]² cancellation
        var = (centred * centred).sum(dim=(0, 1)) / count
        if self.training and self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), count)
        y = self._affine(centred * torch.rsqrt(var + self.eps))
        return torch.where(keep, y, zero).to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / (count - 1))
        rm, rv = self.running_mean, self.running_var
        rm.copy_(((1 - factor) * rm.to(mean.dtype) + factor * mean).to(rm.dtype))
        rv.copy_(((1 - factor) * rv.to(var.dtype) + factor * unbiased).to(rv.dtype))

    def folding_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t) of the eval map y = s⊙x + t over the last axis, for `normbench.fold`."""
        if self.training:
            raise ValueError("in train mode it normalizes with batch statistics; call .eval() first")
        if not self.track_running_stats:
            raise ValueError("track_running_stats=False: eval also normalizes with batch statistics")
        s = torch.rsqrt(self.running_var.to(torch.float64) + self.eps)
        t = -self.running_mean.to(torch.float64) * s
        if self.weight is not None:
            s, t = s * self.weight.to(torch.float64), t * self.weight.to(torch.float64) + self.bias.to(torch.float64)
        return s, t


def _masked_batchnorm(num_features: int, eps: float, affine: bool, momentum: float | None,
                      track_running_stats: bool) -> nn.Module:
    return MaskedBatchNorm(num_features, eps=eps, affine=affine, momentum=momentum,
                           track_running_stats=track_running_stats)


def implementations() -> list[Implementation]:
    from normbench.reference import batchnorm_masked

    return [
        Implementation(name="normbench.MaskedBatchNorm", family="batchnorm_masked", factory=_masked_batchnorm,
                       mask_kwarg="pad_mask", tags=("builtin",),
                       description="BatchNorm over (B, T, C) tokens with statistics from real tokens only"),
        Implementation(name="reference.batchnorm_masked", family="batchnorm_masked",
                       factory=batchnorm_masked.build, mask_kwarg="pad_mask", tags=("reference",)),
    ]
