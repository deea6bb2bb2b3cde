"""PowerNorm (Shen et al., ICML 2020, "PowerNorm: Rethinking Batch Normalization in Transformers") in float64.

One module covers the four PowerNorm specs; thin modules name each variant (powernorm_v.py, powernorm_star.py,
powernorm_masked.py) and this one's `build` is the paper's PN (spec `powernorm`).

Conventions at the boundary (every PowerNorm spec): tokens (B, T, C) or (N, C), features last; pad_mask of
shape x.shape[:-1] (so (B, T) for tokens), True = pad. The authors' fairseq module takes (T, B, C); the suite
adapts it with Implementation(token_layout="TBC"). Statistics are per channel over the *real* tokens of the
batch: pads are replaced by 0 before any arithmetic, so a NaN pad can reach neither a value nor a gradient.
Train outputs at pads are 0 and pads get no gradient; eval is the fixed per-channel map at every position.

  ψ_B² = Σ_real x² / n_real                                  (per channel, no centring)

PN-V (`running_forward=False`): train y = γ·x/sqrt(ψ_B² + ε) + β with the exact gradient (autograd through
ψ_B); running_phi ← α_fwd·running_phi + (1 − α_fwd)·ψ_B² (α weighs the OLD value, as in the authors' code)
is kept for eval: y = γ·x/sqrt(running_phi + ε) + β.

PN (`running_forward=True`), per step t (the counter `iters` is incremented first, as in the authors' code):
  forward  z = x/sqrt(ψ_B² + ε) while t ≤ warmup, else z = x/sqrt(running_phi_{t−1} + ε) (the value before
           this step's update, so that train and eval normalize alike); y = γ·z + β.
  running  if t < warmup (strictly, as the code): running_phi ← running_phi·(t−1)/t + ψ_B²/t (cumulative
           average); then always running_phi ← α_fwd·running_phi + (1 − α_fwd)·ψ_B².
  backward (approximate: the gradient cannot flow through all past batches) with g = dy·γ:
           a = g − (1 − α_bkw)·ema_gz·z;  ema_gz ← ema_gz + Σ_real a·z / n_real;  dx = a/sqrt(ψ² + ε);
           dγ = Σ dy·z;  dβ = Σ dy.
           ψ² in dx: `backward_statistic="batch"` divides by the current batch ψ_B² even after warm-up (the
           authors' code; specs powernorm_star and powernorm_masked); "previous" divides by the statistic the
           forward used, running_phi_{t−1} after warm-up (the paper's Algorithm 1; spec powernorm).
           The mean that updates ema_gz runs over the real tokens only. The authors' code averages over every
           position, pads included, so its gradient statistic depends on how much padding a batch carries;
           normbench's PowerNorm specs demand pack-versus-pad equivalence, and that needs the real-token mean.
           (ν = (1 − α_bkw)·ema_gz is the paper's ν; the update above is its ν_t = ν(1 − (1−α)Γ) + (1−α)Λ.)
  ema_gz changes in backward, not forward: a step without backward leaves it alone.

MaskPowerNorm (`num_groups > 0`): GroupScaling1D ("layer scale") first, in train and eval: C is split into
G contiguous groups and every token's group is divided by sqrt(mean(x²) + gs_eps); differentiated exactly
(autograd), then PN as above. It is a per-token computation at run time, so PowerNorm with layer scale is not
a fixed per-channel map in eval and does not fold into a Linear; PN* (without it) does.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ._affine import affine_parameters, apply_affine

_F64 = torch.float64


def real_token_mask(x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """(N,) bool over the flattened tokens of x (…, C): True = real token."""
    lead = x.shape[:-1]
    if pad_mask is None:
        return torch.ones(lead, dtype=torch.bool).reshape(-1)
    if tuple(pad_mask.shape) != tuple(lead):
        raise ValueError(f"pad_mask shape {tuple(pad_mask.shape)} does not match the token shape {tuple(lead)}")
    return ~pad_mask.to(torch.bool).cpu().reshape(-1)


def group_scale(tokens: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """GroupScaling1D: every token's G contiguous channel groups divided by sqrt(mean(x²) + eps)."""
    n, c = tokens.shape
    if c % groups:
        raise ValueError(f"GroupScaling needs num_features divisible by num_groups, got {c} and {groups}")
    grouped = tokens.reshape(n, groups, c // groups)
    ms = (grouped * grouped).mean(dim=-1, keepdim=True)
    return (grouped / torch.sqrt(ms + eps)).reshape(n, c)


class _ApproximateBackward(torch.autograd.Function):
    """z = h/sqrt(fwd_stat + ε), y = γ·z + β at real tokens (0 at pads); the PN backward of the module doc."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                real: torch.Tensor, fwd_stat: torch.Tensor, bkw_stat: torch.Tensor,
                module: PowerNormReference) -> torch.Tensor:
        keep = real.unsqueeze(-1)
        z = torch.where(keep, h / torch.sqrt(fwd_stat + module.eps), torch.zeros((), dtype=_F64))
        y = z if weight is None else z * weight + bias
        ctx.save_for_backward(z, weight, real, bkw_stat)
        ctx.module = module
        return torch.where(keep, y, torch.zeros((), dtype=_F64))

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, weight, real, bkw_stat = ctx.saved_tensors
        module: PowerNormReference = ctx.module
        keep = real.unsqueeze(-1)
        n = int(real.sum())
        dy = torch.where(keep, dy, torch.zeros((), dtype=_F64))
        g = dy if weight is None else dy * weight
        ema = module.ema_gz.to(_F64)
        a = g - (1.0 - module.alpha_bkw) * ema * z
        with torch.no_grad():
            module.ema_gz.copy_((ema + (a * z).sum(dim=0) / n).to(module.ema_gz.dtype))
        dx = torch.where(keep, a / torch.sqrt(bkw_stat + module.eps), torch.zeros((), dtype=_F64))
        d_weight = (dy * z).sum(dim=0) if weight is not None else None
        d_bias = dy.sum(dim=0) if weight is not None else None
        return dx, d_weight, d_bias, None, None, None, None


class PowerNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9,
                 alpha_bkw: float = 0.9, warmup: int = 2, *, running_forward: bool = True,
                 backward_statistic: Literal["batch", "previous"] = "batch", num_groups: int = 0,
                 gs_eps: float = 1e-5) -> None:
        super().__init__()
        if backward_statistic not in ("batch", "previous"):
            raise ValueError(f"backward_statistic must be 'batch' or 'previous', got {backward_statistic!r}")
        if num_groups and num_features % num_groups:
            raise ValueError(f"num_features {num_features} is not divisible by num_groups {num_groups}")
        self.num_features = num_features
        self.eps = eps
        self.alpha_fwd = alpha_fwd
        self.alpha_bkw = alpha_bkw
        self.warmup = warmup
        self.running_forward = running_forward
        self.backward_statistic = backward_statistic
        self.num_groups = num_groups
        self.gs_eps = gs_eps
        affine_parameters(self, num_features, affine)
        self.register_buffer("running_phi", torch.ones(num_features, dtype=_F64))
        if running_forward:
            self.register_buffer("ema_gz", torch.zeros(num_features, dtype=_F64))
            self.register_buffer("iters", torch.tensor(0, dtype=torch.long))

    def _layer_scale(self, tokens: torch.Tensor) -> torch.Tensor:
        return group_scale(tokens, self.num_groups, self.gs_eps) if self.num_groups else tokens

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        c = self.num_features
        if x.dim() < 2 or x.shape[-1] != c:
            raise ValueError(f"expected (..., {c}) tokens, got shape {tuple(x.shape)}")
        tokens = x.to(_F64).reshape(-1, c)
        if not self.training:
            h = self._layer_scale(tokens)
            y = h / torch.sqrt(self.running_phi.to(_F64) + self.eps)
            return apply_affine(self, y, -1).reshape(x.shape).to(x.dtype)
        real = real_token_mask(x, pad_mask)
        n = int(real.sum())
        if n == 0:
            raise ValueError("PowerNorm in train mode needs at least one real token")
        keep = real.unsqueeze(-1)
        h = self._layer_scale(torch.where(keep, tokens, torch.zeros((), dtype=_F64)))  # GS(0) = 0 at pads
        psi2 = (h * h).sum(dim=0) / n
        if not self.running_forward:  # PN-V: batch statistic, exact gradient
            self._ema_update(psi2.detach())
            y = apply_affine(self, h / torch.sqrt(psi2 + self.eps), -1)
            return torch.where(keep, y, torch.zeros((), dtype=_F64)).reshape(x.shape).to(x.dtype)
        with torch.no_grad():
            self.iters += 1
        t = int(self.iters)
        previous = self.running_phi.detach().to(_F64).clone()
        batch = psi2.detach()
        fwd_stat = batch if t <= self.warmup else previous
        bkw_stat = batch if self.backward_statistic == "batch" else fwd_stat
        with torch.no_grad():
            if t < self.warmup:
                self.running_phi.copy_((previous * (t - 1) / t + batch / t).to(self.running_phi.dtype))
            self._ema_update(batch)
        y = _ApproximateBackward.apply(h, self.weight, self.bias, real, fwd_stat, bkw_stat, self)
        return y.reshape(x.shape).to(x.dtype)

    @torch.no_grad()
    def _ema_update(self, batch: torch.Tensor) -> None:
        old = self.running_phi.to(_F64)
        self.running_phi.copy_((self.alpha_fwd * old + (1.0 - self.alpha_fwd) * batch).to(self.running_phi.dtype))


def build(num_features: int, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9, alpha_bkw: float = 0.9,
          warmup: int = 2) -> nn.Module:
    """The paper's PN (spec powernorm): running statistics after warm-up, dx divided by ψ_{t−1}."""
    return PowerNormReference(num_features, eps=eps, affine=affine, alpha_fwd=alpha_fwd, alpha_bkw=alpha_bkw,
                              warmup=warmup, backward_statistic="previous")
