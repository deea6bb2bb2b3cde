"""Unified Normalization (Yang et al., ACM MM 2022): a practical UN1d for tokens with a pad mask.

Any dtype (half inputs reduced in float32; state buffers keep the module's dtype). The algorithm, step by step,
and the conventions (real-token means, the outlier guard, dγ compensated by r as in the authors' code) are in
reference/unified.py and specs/unified.yaml. In eval it is the fixed per-channel map γ·x/sqrt(running_var + ε)
+ β, which `folding_affine` hands to `normbench.fold`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from normbench.families._affine import add_affine, scale_only_eval_map
from normbench.families._tokens import compute_dtype, gather, old_value, real_tokens, scatter
from normbench.implementation import Implementation

#: r = sqrt(var + ε)/sqrt(running_var + ε) is clipped to [1/5, 5] (authors' code)
RATIO_BOUNDS = (0.2, 5.0)


class _UnifiedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tokens: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                inv_std: torch.Tensor, ratio: torch.Tensor, module: UnifiedNorm, step: int,
                skipped: bool) -> torch.Tensor:
        z = tokens * inv_std
        ctx.save_for_backward(z, weight, inv_std, ratio)
        ctx.module, ctx.step, ctx.skipped = module, step, skipped
        return z if weight is None else torch.addcmul(bias, z, weight)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, weight, inv_std, ratio = ctx.saved_tensors
        module: UnifiedNorm = ctx.module
        step, skipped = ctx.step, ctx.skipped
        g = (dy if weight is None else dy * weight) * ratio
        gz = (g * z).mean(dim=0)
        momentum = module.momentum
        with torch.no_grad():
            ema_old = old_value(module.ema_gz, g.dtype)
            slot = step % module.window_bkw
            module.buffer_gz[slot] = (ema_old if skipped else gz).to(module.buffer_gz.dtype)
            smoothed = step > module.window_bkw and step >= module.warmup and not skipped
            mean_gz = module.buffer_gz.to(g.dtype).mean(dim=0) if smoothed else gz
            ema_new = momentum * ema_old + (1.0 - momentum) * mean_gz
            module.ema_gz.copy_(ema_new.to(module.ema_gz.dtype))
        grad_x = (g - (mean_gz if skipped else ema_new) * z) * inv_std
        grad_weight = grad_bias = None
        if weight is not None:
            grad_weight, grad_bias = (dy * z * ratio).sum(dim=0), dy.sum(dim=0)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class UnifiedNorm(nn.Module):
    """UN for (B, T, C) or (N, C) tokens; ``pad_mask`` (B, T), True = pad.

    Buffers as the authors' UN1d: running_var, ema_gz, iters, buffer_x2 (window × C), buffer_gz (window_bkw × C),
    skip_counter (outlier batches seen).
    """

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
        add_affine(self, num_features, affine)
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("ema_gz", torch.zeros(num_features))
        self.register_buffer("iters", torch.tensor(0, dtype=torch.long))
        self.register_buffer("buffer_x2", torch.zeros(window, num_features))
        self.register_buffer("buffer_gz", torch.zeros(window_bkw, num_features))
        self.register_buffer("skip_counter", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, warmup={self.warmup}, "
                f"window=({self.window}, {self.window_bkw}), ratio_warmup={self.ratio_warmup}, "
                f"outlier_filtration={self.outlier_filtration}, affine={self.weight is not None}")

    def _affine(self, z: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return z
        return torch.addcmul(self.bias.to(z.dtype), z, self.weight.to(z.dtype))

    def _is_outlier(self, window: torch.Tensor, recorded_var: torch.Tensor) -> bool:
        """AM − GM of the window above window × (variance of sqrt(x2) recorded before this batch), any channel."""
        arithmetic = window.mean(dim=0)
        geometric = window.log().mean(dim=0).exp()
        return bool(((arithmetic - geometric) > recorded_var * self.window).any())

    @torch.no_grad()
    def _statistics(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        """One step's forward statistic, gradient ratio r, step number and outlier flag; updates the state."""
        self.iters.add_(1)
        step = int(self.iters)
        acc = x2.dtype
        w = self.window
        slot = step % w
        running = old_value(self.running_var, acc)
        skipped = w == 1  # a window of one batch: no smoothing at all (authors' `skip`)
        recorded_var = self.buffer_x2.to(acc).sqrt().var() if w > 1 else None
        self.buffer_x2[slot] = x2.to(self.buffer_x2.dtype)
        if self.outlier_filtration and recorded_var is not None and step >= self.warmup and step > w \
                and self._is_outlier(self.buffer_x2.to(acc), recorded_var):
            self.buffer_x2[slot] = running.to(self.buffer_x2.dtype)
            self.skip_counter.add_(1)
            skipped = True
        if step > w and step >= self.warmup and not skipped:
            var = self.buffer_x2.to(acc).log().mean(dim=0).exp()  # geometric mean of the window
        else:
            var = x2
        if step > max(self.ratio_warmup, self.warmup) and not skipped:
            ratio = (torch.sqrt(var + self.eps) / torch.sqrt(running + self.eps)).clamp(*RATIO_BOUNDS)
        else:
            ratio = torch.ones_like(var)
        self.running_var.copy_((self.momentum * running + (1.0 - self.momentum) * var).to(self.running_var.dtype))
        return var, ratio, step, skipped

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        c = self.num_features
        if x.dim() < 2 or x.shape[-1] != c:
            raise ValueError(f"expected tokens with {c} features last, got shape {tuple(x.shape)}")
        acc = compute_dtype(x)
        flat = x.reshape(-1, c)
        if not self.training:
            z = flat.to(acc) * torch.rsqrt(self.running_var.to(acc) + self.eps)
            return self._affine(z).reshape(x.shape).to(x.dtype)
        keep = real_tokens(x, pad_mask)
        tokens = gather(flat, keep).to(acc)
        if tokens.shape[0] == 0:
            raise ValueError("Unified Normalization in train mode needs at least one real token")
        var, ratio, step, skipped = self._statistics(tokens.detach().square().mean(dim=0))
        weight = None if self.weight is None else self.weight.to(acc)
        bias = None if self.bias is None else self.bias.to(acc)
        y = _UnifiedFunction.apply(tokens, weight, bias, torch.rsqrt(var + self.eps), ratio, self, step, skipped)
        return scatter(y, keep, flat.shape[0]).reshape(x.shape).to(x.dtype)

    def folding_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t) of the eval map y = s⊙x + t over the last axis, for `normbench.fold`."""
        if self.training:
            raise ValueError("in train mode it normalizes with window statistics of each batch; call .eval() first")
        return scale_only_eval_map(self, self.running_var)


def implementations() -> list[Implementation]:
    from normbench.reference import unified

    return [
        Implementation(name="normbench.UnifiedNorm", family="unified", factory=UnifiedNorm, mask_kwarg="pad_mask",
                       tags=("builtin",), description="Unified Normalization (UN1d) over (B, T, C) tokens"),
        Implementation(name="reference.unified", family="unified", factory=unified.build, mask_kwarg="pad_mask",
                       tags=("reference",)),
    ]
