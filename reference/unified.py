"""Unified Normalization (Yang et al., ACM MM 2022, "Unified Normalization for Accelerating and Stabilizing
Transformers") in float64, after the authors' UN1d (hikvision-research/Unified-Normalization).

Boundary: tokens (B, T, C) or (N, C), features last; pad_mask of shape x.shape[:-1], True = pad. Statistics
per channel over the real tokens (pads are replaced by 0 before any arithmetic); train outputs at pads are 0
and pads get no gradient; eval is the fixed map at every position.

Eval (offline, foldable): y = γ·x/sqrt(running_var + ε) + β.

Train, step t (the counter `iters` is incremented first), W = window, W_b = window_bkw:
  x2 = Σ_real x² / n_real (per channel).
  Outlier filtration (outlier_filtration=True, W > 1, t ≥ warmup and t > W): the recorded threshold is the
    unbiased variance of sqrt(buffer_x2) over ALL W×C entries of the window *before* this batch enters it (the
    authors' code pools channels: torch.var of the whole buffer); then buffer_x2[t mod W] = x2, and if for any
    channel (arithmetic mean − geometric mean of the window) > W × threshold the batch is an outlier:
    buffer_x2[t mod W] = running_var, skip_counter += 1, and the step uses the current batch statistic in
    forward and backward. The `t > W` guard is normbench's: the authors' code relies on warmup ≫ W, and with a
    small warm-up would compare against a window still holding its zero initialisation (log 0 = −inf);
    whenever warmup > W the two agree.
  W = 1 behaves as every batch being skipped (the authors' `skip = fp_buffer_size <= 1`) without counting it.
  Forward statistic: var = x2 if t ≤ W or t < warmup or skipped, else the geometric mean of the window.
  r = sqrt(var + ε)/sqrt(running_var_{t−1} + ε), clipped to [1/5, 5] once t > max(ratio_warmup, warmup)
    (the authors hard-code ratio_warmup = 1000), and 1 before that or on a skipped step.
  y = γ·z + β with z = x/sqrt(var + ε); running_var ← m·running_var + (1 − m)·var (m weighs the OLD value).
Backward (custom), with g = dy·γ·r and gz = Σ_real g·z / n_real:
  buffer_gz[t mod W_b] = ema_gz if skipped else gz;
  mean_gz = gz if t ≤ W_b or t < warmup or skipped, else the mean of buffer_gz;
  ema_gz ← m·ema_gz + (1 − m)·mean_gz;
  dx = (g − c·z)/sqrt(var + ε) with c = mean_gz on a skipped step, the new ema_gz otherwise;
  dγ = Σ dy·r·z (the authors' code compensates γ's gradient by r as well), dβ = Σ dy.
  The means run over real tokens only (the authors' code averages over pads too; see reference/powernorm.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._affine import affine_parameters, apply_affine
from .powernorm import real_token_mask

_F64 = torch.float64
#: r is clipped to [1/RATIO_CLIP, RATIO_CLIP] (authors' code: 5).
RATIO_CLIP = 5.0


class _UnifiedBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                real: torch.Tensor, var: torch.Tensor, r: torch.Tensor, module: UnifiedNormReference, t: int,
                skipped: bool) -> torch.Tensor:
        keep = real.unsqueeze(-1)
        z = torch.where(keep, x / torch.sqrt(var + module.eps), torch.zeros((), dtype=_F64))
        y = z if weight is None else z * weight + bias
        ctx.save_for_backward(z, weight, real, var, r)
        ctx.module, ctx.t, ctx.skipped = module, t, skipped
        return torch.where(keep, y, torch.zeros((), dtype=_F64))

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, weight, real, var, r = ctx.saved_tensors
        module: UnifiedNormReference = ctx.module
        t, skipped = ctx.t, ctx.skipped
        keep = real.unsqueeze(-1)
        n = int(real.sum())
        dy = torch.where(keep, dy, torch.zeros((), dtype=_F64))
        g = (dy if weight is None else dy * weight) * r
        gz = (g * z).sum(dim=0) / n
        wb, m = module.window_bkw, module.momentum
        ema_old = module.ema_gz.to(_F64)
        with torch.no_grad():
            slot = gz if not skipped else ema_old
            module.buffer_gz[t % wb].copy_(slot.to(module.buffer_gz.dtype))
            mean_gz = gz if (t <= wb or t < module.warmup or skipped) else module.buffer_gz.to(_F64).mean(dim=0)
            ema_new = m * ema_old + (1.0 - m) * mean_gz
            module.ema_gz.copy_(ema_new.to(module.ema_gz.dtype))
        c = mean_gz if skipped else ema_new
        dx = torch.where(keep, (g - c * z) / torch.sqrt(var + module.eps), torch.zeros((), dtype=_F64))
        d_weight = (dy * r * z).sum(dim=0) if weight is not None else None
        d_bias = dy.sum(dim=0) if weight is not None else None
        return dx, d_weight, d_bias, None, None, None, None, None, None


class UnifiedNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float = 0.9,
                 warmup: int = 3, window: int = 2, window_bkw: int = 2, ratio_warmup: int = 3,
                 outlier_filtration: bool = False) -> None:
        super().__init__()
        if window < 1 or window_bkw < 1:
            raise ValueError(f"window sizes must be >= 1, got {window} and {window_bkw}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.warmup = warmup
        self.window = window
        self.window_bkw = window_bkw
        self.ratio_warmup = ratio_warmup
        self.outlier_filtration = outlier_filtration
        affine_parameters(self, num_features, affine)
        self.register_buffer("running_var", torch.ones(num_features, dtype=_F64))
        self.register_buffer("ema_gz", torch.zeros(num_features, dtype=_F64))
        self.register_buffer("iters", torch.tensor(0, dtype=torch.long))
        self.register_buffer("buffer_x2", torch.zeros(window, num_features, dtype=_F64))
        self.register_buffer("buffer_gz", torch.zeros(window_bkw, num_features, dtype=_F64))
        self.register_buffer("skip_counter", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        c = self.num_features
        if x.dim() < 2 or x.shape[-1] != c:
            raise ValueError(f"expected (..., {c}) tokens, got shape {tuple(x.shape)}")
        tokens = x.to(_F64).reshape(-1, c)
        if not self.training:
            y = tokens / torch.sqrt(self.running_var.to(_F64) + self.eps)
            return apply_affine(self, y, -1).reshape(x.shape).to(x.dtype)
        real = real_token_mask(x, pad_mask)
        n = int(real.sum())
        if n == 0:
            raise ValueError("Unified Normalization in train mode needs at least one real token")
        clean = torch.where(real.unsqueeze(-1), tokens, torch.zeros((), dtype=_F64))
        with torch.no_grad():
            self.iters += 1
            t = int(self.iters)
            w = self.window
            x2 = (clean * clean).sum(dim=0).detach() / n
            running = self.running_var.to(_F64).clone()
            skipped = w <= 1
            threshold = torch.var(torch.sqrt(self.buffer_x2.to(_F64))) * w if w > 1 else None
            self.buffer_x2[t % w].copy_(x2.to(self.buffer_x2.dtype))
            window = self.buffer_x2.to(_F64)
            if self.outlier_filtration and threshold is not None and t >= self.warmup and t > w:
                arithmetic = window.mean(dim=0)
                geometric = torch.exp(torch.log(window).mean(dim=0))
                if bool((arithmetic - geometric > threshold).any()):
                    self.buffer_x2[t % w].copy_(running.to(self.buffer_x2.dtype))
                    self.skip_counter += 1
                    skipped = True
            if t <= w or t < self.warmup or skipped:
                var = x2
            else:
                var = torch.exp(torch.log(self.buffer_x2.to(_F64)).mean(dim=0))
            r = torch.sqrt(var + self.eps) / torch.sqrt(running + self.eps)
            if t <= max(self.ratio_warmup, self.warmup) or skipped:
                r = torch.ones_like(r)
            else:
                r = r.clamp(1.0 / RATIO_CLIP, RATIO_CLIP)
            m = self.momentum
            self.running_var.copy_((m * running + (1.0 - m) * var).to(self.running_var.dtype))
        y = _UnifiedBackward.apply(clean, self.weight, self.bias, real, var, r, self, t, skipped)
        return y.reshape(x.shape).to(x.dtype)


def build(num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float = 0.9, warmup: int = 3,
          window: int = 2, window_bkw: int = 2, ratio_warmup: int = 3, outlier_filtration: bool = False) -> nn.Module:
    return UnifiedNormReference(num_features, eps=eps, affine=affine, momentum=momentum, warmup=warmup,
                                window=window, window_bkw=window_bkw, ratio_warmup=ratio_warmup,
                                outlier_filtration=outlier_filtration)
