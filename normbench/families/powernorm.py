"""PowerNorm (Shen et al., ICML 2020): PN-V, PN (paper backward), PN* and MaskPowerNorm with GroupScaling.

Practical modules for any dtype (half inputs are reduced in float32; state buffers keep the module's dtype).
The math, every convention and where the authors' code and the paper differ are in reference/powernorm.py
and in the specs; in short, with ψ_B² the per-channel mean of x² over the real tokens of the batch:

  PowerNormV      train x/sqrt(ψ_B² + ε) with the exact gradient; eval x/sqrt(running_phi + ε).
  PowerNorm       train: batch ψ_B while t ≤ warmup, then the running ψ of the previous step (so train and
                  eval agree); approximate backward a = g − (1−α_bkw)·ema_gz·z, dx = a/sqrt(ψ² + ε) with
                  ψ² = what the forward used (paper) or the batch ψ_B² (authors' code: PN*, MaskPowerNorm).
  MaskPowerNorm   GroupScaling1D per token first (not foldable), authors' backward; time-major (T, B, C)
                  input as in fairseq, pad_mask (B, T) True = pad.

Pads: statistics, ema_gz and the gradients see real tokens only; train outputs at pads are 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from normbench.families._affine import add_affine, scale_only_eval_map
from normbench.families._tokens import compute_dtype, gather, old_value, real_tokens, scatter
from normbench.implementation import Implementation


def _check_features(x: torch.Tensor, c: int) -> None:
    if x.dim() < 2 or x.shape[-1] != c:
        raise ValueError(f"expected tokens with {c} features last, got shape {tuple(x.shape)}")


class _PowerNormFunction(torch.autograd.Function):
    """y = γ·(h·inv_fwd) + β; backward: the PowerNorm approximate gradient, updating ema_gz in place."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                inv_fwd: torch.Tensor, inv_bkw: torch.Tensor, ema_gz: torch.Tensor, alpha_bkw: float) -> torch.Tensor:
        z = h * inv_fwd
        ctx.save_for_backward(z, weight, inv_bkw)
        ctx.ema_gz, ctx.alpha_bkw = ema_gz, alpha_bkw
        return z if weight is None else torch.addcmul(bias, z, weight)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, weight, inv_bkw = ctx.saved_tensors
        g = dy if weight is None else dy * weight
        ema = ctx.ema_gz.to(g.dtype)
        a = g - (1.0 - ctx.alpha_bkw) * ema * z
        if z.shape[0]:
            ctx.ema_gz.copy_((ema + (a * z).mean(dim=0)).to(ctx.ema_gz.dtype))
        grad_weight = grad_bias = None
        if weight is not None:
            grad_weight, grad_bias = (dy * z).sum(dim=0), dy.sum(dim=0)
        return a * inv_bkw, grad_weight, grad_bias, None, None, None, None


class _PowerNormBase(nn.Module):
    """Affine parameters, the running ψ² and the eval map shared by every PowerNorm module below."""

    #: fairseq-style (T, B, C) input with a (B, T) mask
    time_major = False
    num_groups = 0

    def __init__(self, num_features: int, eps: float, affine: bool, alpha_fwd: float) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.alpha_fwd = alpha_fwd
        add_affine(self, num_features, affine)
        self.register_buffer("running_phi", torch.ones(num_features))

    def _layer_scale(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def _affine(self, z: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return z
        return torch.addcmul(self.bias.to(z.dtype), z, self.weight.to(z.dtype))

    def _eval(self, x: torch.Tensor) -> torch.Tensor:
        acc = compute_dtype(x)
        flat = x.reshape(-1, self.num_features).to(acc)
        z = self._layer_scale(flat) * torch.rsqrt(self.running_phi.to(acc) + self.eps)
        return self._affine(z).reshape(x.shape).to(x.dtype)

    @torch.no_grad()
    def _update_running(self, psi2: torch.Tensor, step: int) -> None:
        """running_phi ← α·running_phi + (1 − α)·ψ_B² (α weighs the old value)."""
        old = old_value(self.running_phi, psi2.dtype)
        self.running_phi.copy_((self.alpha_fwd * old + (1.0 - self.alpha_fwd) * psi2).to(self.running_phi.dtype))

    def folding_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t) of the eval map y = s⊙x + t over the last axis, for `normbench.fold`."""
        if self.training:
            raise ValueError("in train mode it normalizes with batch (or evolving running) statistics; "
                             "call .eval() first")
        if self.num_groups:
            raise ValueError("PowerNorm with layer scale (GroupScaling1D) divides every token by its own group "
                             "rms at run time: no fixed per-channel map exists (PN* without it folds)")
        return scale_only_eval_map(self, self.running_phi)


class PowerNormV(_PowerNormBase):
    """PN-V: the batch quadratic mean in train (exact autograd), the running one in eval."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9) -> None:
        super().__init__(num_features, eps, affine, alpha_fwd)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, alpha_fwd={self.alpha_fwd}, affine={self.weight is not None}"

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_features(x, self.num_features)
        if not self.training:
            return self._eval(x)
        keep = real_tokens(x, pad_mask, self.time_major)
        flat = x.reshape(-1, self.num_features)
        tokens = gather(flat, keep).to(compute_dtype(x))
        if tokens.shape[0] == 0:
            raise ValueError("PowerNorm in train mode needs at least one real token")
        psi2 = tokens.square().mean(dim=0)
        self._update_running(psi2.detach(), 0)
        y = self._affine(tokens * torch.rsqrt(psi2 + self.eps))
        return scatter(y, keep, flat.shape[0]).reshape(x.shape).to(x.dtype)


class PowerNorm(_PowerNormBase):
    """PN with running statistics after `warmup` steps and the approximate backward.

    ``backward_uses_batch``: divide dx by the current batch ψ_B (authors' code) instead of the statistic the
    forward used (the paper's ψ_{t−1}).
    """

    backward_uses_batch = False

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9,
                 alpha_bkw: float = 0.9, warmup: int = 2) -> None:
        super().__init__(num_features, eps, affine, alpha_fwd)
        self.alpha_bkw = alpha_bkw
        self.warmup = warmup
        self.register_buffer("ema_gz", torch.zeros(num_features))
        self.register_buffer("iters", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, alpha_fwd={self.alpha_fwd}, alpha_bkw={self.alpha_bkw}, "
                f"warmup={self.warmup}, affine={self.weight is not None}")

    @torch.no_grad()
    def _update_running(self, psi2: torch.Tensor, step: int) -> None:
        # The authors' warm-up: a cumulative average of ψ_B² (strictly before `warmup`), then the EMA.
        if step < self.warmup:
            old = old_value(self.running_phi, psi2.dtype)
            self.running_phi.copy_((old * ((step - 1) / step) + psi2 / step).to(self.running_phi.dtype))
        super()._update_running(psi2, step)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_features(x, self.num_features)
        if not self.training:
            return self._eval(x)
        acc = compute_dtype(x)
        keep = real_tokens(x, pad_mask, self.time_major)
        flat = x.reshape(-1, self.num_features)
        h = self._layer_scale(gather(flat, keep).to(acc))
        if h.shape[0] == 0:
            raise ValueError("PowerNorm in train mode needs at least one real token")
        self.iters.add_(1)
        step = int(self.iters)
        psi2 = h.detach().square().mean(dim=0)
        inv_batch = torch.rsqrt(psi2 + self.eps)
        inv_fwd = inv_batch if step <= self.warmup else torch.rsqrt(old_value(self.running_phi, acc) + self.eps)
        inv_bkw = inv_batch if self.backward_uses_batch else inv_fwd
        self._update_running(psi2, step)
        weight = None if self.weight is None else self.weight.to(acc)
        bias = None if self.bias is None else self.bias.to(acc)
        y = _PowerNormFunction.apply(h, weight, bias, inv_fwd, inv_bkw, self.ema_gz, self.alpha_bkw)
        return scatter(y, keep, flat.shape[0]).reshape(x.shape).to(x.dtype)


class PowerNormStar(PowerNorm):
    """PN*: the authors' PowerNorm without GroupScaling (dx divided by the batch ψ_B)."""

    backward_uses_batch = True


class MaskPowerNorm(PowerNormStar):
    """The authors' MaskPowerNorm: GroupScaling1D over `num_groups` channel groups per token, then PN*.

    Takes fairseq's time-major (T, B, C) with pad_mask (B, T), True = pad (Implementation token_layout="TBC").
    """

    time_major = True

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9,
                 alpha_bkw: float = 0.9, warmup: int = 2, num_groups: int = 4, gs_eps: float = 1e-5) -> None:
        if num_groups < 1 or num_features % num_groups:
            raise ValueError(f"num_features {num_features} is not divisible by num_groups {num_groups}")
        super().__init__(num_features, eps, affine, alpha_fwd, alpha_bkw, warmup)
        self.num_groups = num_groups
        self.gs_eps = gs_eps

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_groups={self.num_groups}, gs_eps={self.gs_eps}"

    def _layer_scale(self, tokens: torch.Tensor) -> torch.Tensor:
        n, c = tokens.shape
        grouped = tokens.reshape(n, self.num_groups, c // self.num_groups)
        inv = torch.rsqrt(grouped.square().mean(dim=-1, keepdim=True) + self.gs_eps)
        return (grouped * inv).reshape(n, c)


def implementations() -> list[Implementation]:
    from normbench.reference import powernorm, powernorm_masked, powernorm_star, powernorm_v

    builtin, ref = ("builtin",), ("reference",)
    return [
        Implementation(name="normbench.PowerNormV", family="powernorm_v", factory=PowerNormV, mask_kwarg="pad_mask",
                       tags=builtin, description="PN-V: batch quadratic mean over real tokens; running one in eval"),
        Implementation(name="normbench.PowerNorm", family="powernorm", factory=PowerNorm, mask_kwarg="pad_mask",
                       tags=builtin, description="PN (paper): running statistics after warm-up, approximate "
                                                 "backward dividing by the forward's statistic"),
        Implementation(name="normbench.PowerNormStar", family="powernorm_star", factory=PowerNormStar,
                       mask_kwarg="pad_mask", tags=builtin,
                       description="PN*: the authors' PowerNorm without GroupScaling"),
        Implementation(name="normbench.MaskPowerNorm", family="powernorm_masked", factory=MaskPowerNorm,
                       mask_kwarg="pad_mask", token_layout="TBC", tags=builtin,
                       description="the authors' MaskPowerNorm (GroupScaling + PN), fairseq (T, B, C) layout"),
        Implementation(name="reference.powernorm_v", family="powernorm_v", factory=powernorm_v.build,
                       mask_kwarg="pad_mask", tags=ref),
        Implementation(name="reference.powernorm", family="powernorm", factory=powernorm.build,
                       mask_kwarg="pad_mask", tags=ref),
        Implementation(name="reference.powernorm_star", family="powernorm_star", factory=powernorm_star.build,
                       mask_kwarg="pad_mask", tags=ref),
        Implementation(name="reference.powernorm_masked", family="powernorm_masked", factory=powernorm_masked.build,
                       mask_kwarg="pad_mask", tags=ref),
    ]
