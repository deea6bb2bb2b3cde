"""Moving Average Batch Normalization (Yan et al., ICLR 2020, "Towards Stabilizing Batch Statistics in Backward
Propagation of Batch Normalization") in float64, after the authors' MABN2d (megvii-model/MABN), second moment
only (the paper pairs it with weight-centred convolutions, which remove the mean instead).

Boundary as the PowerNorm family: tokens (B, T, C) or (N, C), features last; pad_mask of shape x.shape[:-1],
True = pad; statistics over real tokens (pads replaced by 0 first; the authors' module takes images and has no
mask); train outputs at pads are 0, pads get no gradient; eval is the fixed map everywhere.

Eval (foldable): y = γ·x/sqrt(running_var + ε) + β.

Train, step t (`iters` incremented first), S = window (the authors' buffer_size = real_B / B):
  x2 = Σ_real x² / n_real;  buffer_x2[t mod S] = x2;
  var = x2 if t ≤ S or t < warmup, else the mean of buffer_x2 (simple moving average, SMA);
  z = x/sqrt(var + ε);  r = sqrt(var + ε)/sqrt(running_var_{t−1} + ε), 1 while t ≤ max(ratio_warmup, warmup)
  (the authors hard-code 1000), clipped to [1/5, 5] after;  y = γ·r·z + β  — so once r is active the forward
  is y = γ·x/sqrt(running_var_{t−1} + ε) + β: EMA statistics in forward, as in eval (batch renormalization);
  running_var ← m·running_var + (1 − m)·var (m = momentum weighs the OLD value; paper 0.98).
Backward (custom), g = dy·γ·r, gz = Σ_real g·z / n_real:
  buffer_gz[t mod S] = gz;  mean_gz = gz if t ≤ S or t < warmup, else the mean of buffer_gz (SMA);
  dx = (g − z·mean_gz)/sqrt(var + ε);  dγ = Σ dy·r·z;  dβ = Σ dy.
While t ≤ S (or t < warmup) and r = 1 this is exactly the gradient of x/sqrt(x2 + ε).
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


class _MovingAverageBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                real: torch.Tensor, var: torch.Tensor, r: torch.Tensor, module: MABNReference,
                t: int) -> torch.Tensor:
        keep = real.unsqueeze(-1)
        z = torch.where(keep, x / torch.sqrt(var + module.eps), torch.zeros((), dtype=_F64))
        rz = r * z
        y = rz if weight is None else rz * weight + bias
        ctx.save_for_backward(z, weight, real, var, r)
        ctx.module, ctx.t = module, t
        return torch.where(keep, y, torch.zeros((), dtype=_F64))

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, weight, real, var, r = ctx.saved_tensors
        module: MABNReference = ctx.module
        t = ctx.t
        keep = real.unsqueeze(-1)
        n = int(real.sum())
        dy = torch.where(keep, dy, torch.zeros((), dtype=_F64))
        g = (dy if weight is None else dy * weight) * r
        gz = (g * z).sum(dim=0) / n
        s = module.window
        with torch.no_grad():
            module.buffer_gz[t % s].copy_(gz.to(module.buffer_gz.dtype))
            mean_gz = gz if (t <= s or t < module.warmup) else module.buffer_gz.to(_F64).mean(dim=0)
        dx = torch.where(keep, (g - z * mean_gz) / torch.sqrt(var + module.eps), torch.zeros((), dtype=_F64))
        d_weight = (dy * r * z).sum(dim=0) if weight is not None else None
        d_bias = dy.sum(dim=0) if weight is not None else None
        return dx, d_weight, d_bias, None, None, None, None, None


class MABNReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float = 0.98,
                 warmup: int = 3, window: int = 2, ratio_warmup: int = 3) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.warmup = warmup
        self.window = window
        self.ratio_warmup = ratio_warmup
        affine_parameters(self, num_features, affine)
        self.register_buffer("running_var", torch.ones(num_features, dtype=_F64))
        self.register_buffer("iters", torch.tensor(0, dtype=torch.long))
        self.register_buffer("buffer_x2", torch.zeros(window, num_features, dtype=_F64))
        self.register_buffer("buffer_gz", torch.zeros(window, num_features, dtype=_F64))

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
            raise ValueError("MABN in train mode needs at least one real token")
        clean = torch.where(real.unsqueeze(-1), tokens, torch.zeros((), dtype=_F64))
        with torch.no_grad():
            self.iters += 1
            t = int(self.iters)
            s = self.window
            x2 = (clean * clean).sum(dim=0).detach() / n
            self.buffer_x2[t % s].copy_(x2.to(self.buffer_x2.dtype))
            var = x2 if (t <= s or t < self.warmup) else self.buffer_x2.to(_F64).mean(dim=0)
            running = self.running_var.to(_F64).clone()
            r = torch.sqrt(var + self.eps) / torch.sqrt(running + self.eps)
            if t <= max(self.ratio_warmup, self.warmup):
                r = torch.ones_like(r)
            else:
                r = r.clamp(1.0 / RATIO_CLIP, RATIO_CLIP)
            m = self.momentum
            self.running_var.copy_((m * running + (1.0 - m) * var).to(self.running_var.dtype))
        y = _MovingAverageBackward.apply(clean, self.weight, self.bias, real, var, r, self, t)
        return y.reshape(x.shape).to(x.dtype)


def build(num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float = 0.98, warmup: int = 3,
          window: int = 2, ratio_warmup: int = 3) -> nn.Module:
    return MABNReference(num_features, eps=eps, affine=affine, momentum=momentum, warmup=warmup, window=window,
                         ratio_warmup=ratio_warmup)
