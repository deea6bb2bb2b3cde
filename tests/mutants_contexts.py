"""Broken (and correct) norms for the calling-context checks (how frameworks call a module): each reproduces, in a few
lines of plain torch, how a real module goes wrong when a framework calls it: a custom autograd Function that branches
on needs_input_grad, a backward that assumes dy is packed, a fixed-rank reshape, statistics stashed on the module, an
inference weight cache, a non-persistent buffer, a backward built from detached intermediates."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn
from torch.autograd.function import once_differentiable

#: what fused kernels declare: no float64 path, so no check may depend on one
FUSED = {"dtypes": ("float32", "float16", "bfloat16"), "supports_gradcheck": False}


def _stats(x: torch.Tensor, eps: float, compute: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.to(compute)
    mean = xf.mean(-1, keepdim=True)
    rstd = torch.rsqrt(((xf - mean) ** 2).mean(-1, keepdim=True) + eps)
    return (xf - mean) * rstd, rstd


def _dx(xhat: torch.Tensor, rstd: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """LayerNorm's dX from g = dy·γ (in the compute dtype): rstd·(g − mean(g) − x̂·mean(g·x̂))."""
    return rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))


class _LayerNormFn(torch.autograd.Function):
    """A fused-kernel-style LayerNorm with a hand-written backward; `bug` picks the planted defect."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, bug, owner):  # noqa: ANN001, ANN205 - autograd's signature
        xhat, rstd = _stats(x, eps)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.bug, ctx.owner, ctx.dtype = bug, owner, x.dtype
        if bug == "stash_on_self":
            owner.saved = (xhat, rstd)  # the statistics of the LAST call, not of this one
        return (xhat * weight.float() + bias.float()).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        xhat, rstd, weight = ctx.saved_tensors
        bug = ctx.bug
        if bug == "stash_on_self":
            xhat, rstd = ctx.owner.saved
        if bug == "packed_dy":
            # reads dy as if it were laid out like x (packed): the kernel indexes data_ptr + row * C + col
            dy = torch.as_strided(dy, xhat.shape, (xhat.shape[-1], 1), dy.storage_offset())
        dyf = dy.float()
        if bug == "frozen_gamma_forgotten" and not ctx.needs_input_grad[1]:
            g = dyf  # the "no dγ needed" fast path forgets that dX still goes through γ
        else:
            g = dyf * weight.float()
        dx = _dx(xhat, rstd, g).to(ctx.dtype) if ctx.needs_input_grad[0] else None
        if bug == "dx_only_with_dgamma" and not ctx.needs_input_grad[1]:
            dx = None
        dw = (dyf * xhat).reshape(-1, xhat.shape[-1]).sum(0).to(weight.dtype)
        db = dyf.reshape(-1, xhat.shape[-1]).sum(0).to(weight.dtype)
        if bug == "grad_assigned":
            # `.grad =` instead of accumulating: the second backward pass replaces the first one's dγ
            ctx.owner.weight.grad = dw
            return dx, None, db, None, None, None
        return (dx, dw if ctx.needs_input_grad[1] else None, db if ctx.needs_input_grad[2] else None,
                None, None, None)


class FusedLayerNorm(nn.Module):
    """LayerNorm through _LayerNormFn; with bug=None it is correct in every calling context (the control)."""

    bug: str | None = None

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LayerNormFn.apply(x, self.weight, self.bias, self.eps, self.bug, self)


def fused_layernorm(bug: str | None) -> type[FusedLayerNorm]:
    return type(f"FusedLayerNorm_{bug}", (FusedLayerNorm,), {"bug": bug})


# -- ranks --------------------------------------------------------------------------------------------------

class FixedRankRMSNorm(nn.Module):
    """Flattens (B, T, ...) by its first two dims, as a kernel written for (B, T, C) does: a (B, T, H, D) QK-norm
    input is normalized over H·D instead of D."""

    def __init__(self, num_features: int, eps: float | None = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = 1e-6 if eps is None else eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(shape[0] * shape[1], -1) if x.dim() >= 3 else x
        xf = rows.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y.reshape(shape) * self.weight.float()).to(x.dtype)


# -- parameter updates -------------------------------------------------------------------------------------

class InferenceCacheRMSNorm(nn.Module):
    """Caches a float32 copy of γ at the first call without grad (an inference fast path) and never refreshes it."""

    def __init__(self, num_features: int, eps: float | None = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = 1e-6 if eps is None else eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self._cached: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            w = self.weight.float()
        else:
            if self._cached is None:
                self._cached = self.weight.detach().float().clone()
            w = self._cached
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * w).to(x.dtype)


class PrivateReferenceRMSNorm(nn.Module):
    """Keeps the Parameter it was built with in a list and computes with that: a newly assigned Parameter is ignored."""

    def __init__(self, num_features: int, eps: float | None = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = 1e-6 if eps is None else eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self._kernel_args = [self.weight]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        w = self._kernel_args[0].float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * w).to(x.dtype)


# -- module hygiene ----------------------------------------------------------------------------------------

class NonPersistentStatsBatchNorm(nn.BatchNorm1d):
    """torch's BatchNorm1d with its running variance re-registered as a non-persistent buffer: checkpoints lose it."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        if self.running_var is not None:
            var = self.running_var
            del self._buffers["running_var"]
            self.register_buffer("running_var", var, persistent=False)


class PlainAttributeLayerNorm(nn.Module):
    """γ and β as plain tensor attributes: not Parameters, so no optimizer, .to() or state_dict sees them."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.ones(num_features)
        self.bias = torch.zeros(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class ClosureLayerNorm(nn.Module):
    """Computes through a lambda that closes over `self`: a deepcopy's lambda still reads the original's γ."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self._kernel = lambda x: F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._kernel(x)


class Float32ConstantLayerNorm(nn.Module):
    """Keeps a float32 tensor attribute (a precomputed scale) that .to(dtype) does not convert."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.unit = torch.ones(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return y * self.unit.to(y.dtype)


# -- second-order gradients --------------------------------------------------------------------------------

class _DetachedBackwardFn(torch.autograd.Function):
    """A LayerNorm whose backward is right at first order but built from detached statistics: differentiating it
    again misses every term through x̂ and rstd, silently (in any dtype, float64 included). `compute` is the dtype
    the statistics and the gradients are computed in."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, compute):  # noqa: ANN001, ANN205
        xhat, rstd = _stats(x, eps, compute)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.dtype, ctx.compute = x.dtype, compute
        return (xhat * weight.to(compute) + bias.to(compute)).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        xhat, rstd, weight = ctx.saved_tensors
        dyc = dy.to(ctx.compute)
        dx = _dx(xhat, rstd, dyc * weight.to(ctx.compute)).to(ctx.dtype)
        return dx, (dyc * xhat).reshape(-1, xhat.shape[-1]).sum(0), dyc.reshape(-1, xhat.shape[-1]).sum(0), None, None


class _OnceDifferentiableFn(_DetachedBackwardFn):
    @staticmethod
    @once_differentiable
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        return _DetachedBackwardFn.backward(ctx, dy)


class DetachedBackwardLayerNorm(nn.Module):
    """LayerNorm through _DetachedBackwardFn. With `promote` it computes as a fused kernel does, in float32 whatever
    the input's dtype (declared FUSED: no float64 path); the ...64 classes compute in the input's own dtype, a float64
    path that the float64 second-order tests judge (tests/checks/test_second_order_float64.py)."""

    fn: type[torch.autograd.Function] = _DetachedBackwardFn
    promote: bool = True

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn.apply(x, self.weight, self.bias, self.eps, torch.float32 if self.promote else x.dtype)


class OnceDifferentiableLayerNorm(DetachedBackwardLayerNorm):
    """The same backward marked once_differentiable: double backward raises (correct when declared)."""

    fn = _OnceDifferentiableFn


class DetachedBackwardLayerNorm64(DetachedBackwardLayerNorm):
    promote = False


class OnceDifferentiableLayerNorm64(OnceDifferentiableLayerNorm):
    promote = False
