"""Unified Normalization (Yang et al., ACM MM 2022): a practical UN1d for tokens with a pad mask.

Any dtype (half inputs reduced in float32; state buffers keep the module's dtype). The algorithm, step by step,
and the conventions (real-token means, the outlier guard, dγ compensated by r as in the authors' code) are in
reference/unified.py and specs/unified.yaml. In eval it is the fixed per-channel map γ·x/sqrt(running_var + ε)
+ β, which `folding_affine` hands to `normbench.fold`.
"""

from __future__ import annotations

from typing import Any

import torch

from normbench.families._affine import add_affine
from normbench.families._offline import RATIO_BOUNDS, OfflineTokenNorm
from normbench.families._tokens import old_value
from normbench.implementation import Implementation


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


class UnifiedNorm(OfflineTokenNorm):
    """UN for (B, T, C) or (N, C) tokens; ``pad_mask`` (B, T), True = pad.

    Buffers as the authors' UN1d: running_var, ema_gz, iters, buffer_x2 (window × C), buffer_gz (window_bkw × C),
    skip_counter (outlier batches seen).
    """

    method = "Unified Normalization"
    train_statistic = "window statistics of each batch"

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

    def _train(self, tokens: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        var, ratio, step, skipped = self._statistics(tokens.detach().square().mean(dim=0))
        weight, bias = self._affine_parameters(acc)
        return _UnifiedFunction.apply(tokens, weight, bias, torch.rsqrt(var + self.eps), ratio, self, step, skipped)


def implementations() -> list[Implementation]:
    from normbench.reference import unified

    return [
        Implementation(name="normbench.UnifiedNorm", family="unified", factory=UnifiedNorm, mask_kwarg="pad_mask",
                       tags=("builtin",), description="Unified Normalization (UN1d) over (B, T, C) tokens"),
        Implementation(name="reference.unified", family="unified", factory=unified.build, mask_kwarg="pad_mask",
                       tags=("reference",)),
    ]
