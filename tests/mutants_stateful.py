"""Seed-family modules broken in their state handling: each passes a single forward, only a multi-step
trajectory (stateful_trajectory) shows the difference."""

from __future__ import annotations

import torch

from normbench.families._tokens import compute_dtype, gather, old_value, real_tokens, scatter
from normbench.families.mabn import MABN
from normbench.families.powernorm import PowerNorm, _PowerNormFunction
from normbench.families.unified import UnifiedNorm


class MomentumOnNewPowerNorm(PowerNorm):
    """running_phi with α on the NEW value (torch's BatchNorm convention) instead of the old (the authors')."""

    @torch.no_grad()
    def _update_running(self, psi2: torch.Tensor, step: int) -> None:
        if step < self.warmup:
            return super()._update_running(psi2, step)
        old = old_value(self.running_phi, psi2.dtype)
        self.running_phi.copy_(((1.0 - self.alpha_fwd) * old + self.alpha_fwd * psi2).to(self.running_phi.dtype))


class _EditablePowerNorm(PowerNorm):
    """PowerNorm.forward (train) restated with two switches for the mutants below."""

    update_before_read = False
    freeze_ema_gz = False

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return super().forward(x, pad_mask)
        acc = compute_dtype(x)
        keep = real_tokens(x, pad_mask, self.time_major)
        flat = x.reshape(-1, self.num_features)
        h = gather(flat, keep).to(acc)
        self.iters.add_(1)
        step = int(self.iters)
        psi2 = h.detach().square().mean(dim=0)
        if self.update_before_read:
            self._update_running(psi2, step)
        inv_batch = torch.rsqrt(psi2 + self.eps)
        inv_fwd = inv_batch if step <= self.warmup else torch.rsqrt(old_value(self.running_phi, acc) + self.eps)
        if not self.update_before_read:
            self._update_running(psi2, step)
        ema = self.ema_gz.clone() if self.freeze_ema_gz else self.ema_gz
        weight = None if self.weight is None else self.weight.to(acc)
        bias = None if self.bias is None else self.bias.to(acc)
        y = _PowerNormFunction.apply(h, weight, bias, inv_fwd, inv_fwd, ema, self.alpha_bkw)
        return scatter(y, keep, flat.shape[0]).reshape(x.shape).to(x.dtype)


class CorrectRestatedPowerNorm(_EditablePowerNorm):
    """Control: the restatement with both switches off must pass."""


class ReadsAfterUpdatePowerNorm(_EditablePowerNorm):
    """After warm-up the forward normalizes with running_phi AFTER this step's update (it should use ψ_{t−1})."""

    update_before_read = True


class FrozenGradientStatisticPowerNorm(_EditablePowerNorm):
    """ema_gz is never updated in backward (the update lands in a throwaway copy)."""

    freeze_ema_gz = True


class IgnoresOutliersUnifiedNorm(UnifiedNorm):
    """Accepts outlier_filtration=True and never filters (the outlier batch enters the window)."""

    def _is_outlier(self, window: torch.Tensor, recorded_var: torch.Tensor) -> bool:
        return False


class WindowSlotOffByOneMABN(MABN):
    """Writes step t's statistic into slot (t + 1) mod window: the SMA averages the wrong batches once the
    window wraps."""

    @torch.no_grad()
    def _statistics(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        var, ratio, step = super()._statistics(x2)
        w = self.window
        if w > 1:
            self.buffer_x2[(step + 1) % w], self.buffer_x2[step % w] = (self.buffer_x2[step % w].clone(),
                                                                        self.buffer_x2[(step + 1) % w].clone())
        return var, ratio, step
