"""Moving Average Batch Normalization (Yan et al., ICLR 2020) for tokens with a pad mask.

Any dtype (half inputs reduced in float32; buffers keep the module's dtype). The algorithm and conventions are
in reference/mabn.py and specs/mabn.yaml: a simple moving average (SMA) of the batch second moment normalizes,
the ratio r = sqrt(var + ε)/sqrt(running_var + ε) renormalizes the forward to the EMA statistic once active,
and the backward uses the SMA of the gradient statistic. Eval is the fixed map γ·x/sqrt(running_var + ε) + β.
"""

from __future__ import annotations

from typing import Any

import torch

from normbench.families._affine import add_affine
from normbench.families._offline import RATIO_BOUNDS, OfflineTokenNorm
from normbench.families._tokens import old_value
from normbench.implementation import Implementation


class _MABNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tokens: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                inv_std: torch.Tensor, ratio: torch.Tensor, module: MABN, step: int) -> torch.Tensor:
        z = tokens * inv_std
        ctx.save_for_backward(z, weight, inv_std, ratio)
        ctx.module, ctx.step = module, step
        rz = z * ratio
        return rz if weight is None else torch.addcmul(bias, rz, weight)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, weight, inv_std, ratio = ctx.saved_tensors
        module: MABN = ctx.module
        step = ctx.step
        g = (dy if weight is None else dy * weight) * ratio
        gz = (g * z).mean(dim=0)
        with torch.no_grad():
            module.buffer_gz[step % module.window] = gz.to(module.buffer_gz.dtype)
            smoothed = step > module.window and step >= module.warmup
            mean_gz = module.buffer_gz.to(g.dtype).mean(dim=0) if smoothed else gz
        grad_weight = grad_bias = None
        if weight is not None:
            grad_weight, grad_bias = (dy * z * ratio).sum(dim=0), dy.sum(dim=0)
        return (g - z * mean_gz) * inv_std, grad_weight, grad_bias, None, None, None, None


class MABN(OfflineTokenNorm):
    """MABN over (B, T, C) or (N, C) tokens; ``pad_mask`` (B, T), True = pad. Buffers as the authors' MABN2d:
    running_var, iters, buffer_x2 and buffer_gz (window × C each)."""

    method = "MABN"
    train_statistic = "moving-average batch statistics"

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
        add_affine(self, num_features, affine)
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("iters", torch.tensor(0, dtype=torch.long))
        self.register_buffer("buffer_x2", torch.zeros(window, num_features))
        self.register_buffer("buffer_gz", torch.zeros(window, num_features))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, warmup={self.warmup}, "
                f"window={self.window}, ratio_warmup={self.ratio_warmup}, affine={self.weight is not None}")

    @torch.no_grad()
    def _update_running(self, running: torch.Tensor, var: torch.Tensor) -> None:
        """running_var ← m·running_var + (1 − m)·var (m weighs the old value)."""
        self.running_var.copy_((self.momentum * running + (1.0 - self.momentum) * var).to(self.running_var.dtype))

    @torch.no_grad()
    def _statistics(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        self.iters.add_(1)
        step = int(self.iters)
        acc = x2.dtype
        self.buffer_x2[step % self.window] = x2.to(self.buffer_x2.dtype)
        smoothed = step > self.window and step >= self.warmup
        var = self.buffer_x2.to(acc).mean(dim=0) if smoothed else x2
        running = old_value(self.running_var, acc)
        if step > max(self.ratio_warmup, self.warmup):
            ratio = (torch.sqrt(var + self.eps) / torch.sqrt(running + self.eps)).clamp(*RATIO_BOUNDS)
        else:
            ratio = torch.ones_like(var)
        self._update_running(running, var)
        return var, ratio, step

    def _train(self, tokens: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        var, ratio, step = self._statistics(tokens.detach().square().mean(dim=0))
        weight, bias = self._affine_parameters(acc)
        return _MABNFunction.apply(tokens, weight, bias, torch.rsqrt(var + self.eps), ratio, self, step)


def implementations() -> list[Implementation]:
    from normbench.reference import mabn

    return [
        Implementation(name="normbench.MABN", family="mabn", factory=MABN, mask_kwarg="pad_mask", tags=("builtin",),
                       description="Moving Average Batch Normalization over (B, T, C) tokens"),
        Implementation(name="reference.mabn", family="mabn", factory=mabn.build, mask_kwarg="pad_mask",
                       tags=("reference",)),
    ]
