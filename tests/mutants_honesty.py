"""Deliberately broken (and a few deliberately correct) norm modules for the layout and honesty checks.
Each mutant reproduces one bug class from BUGS.md in a few lines of plain torch; every one is a correct
LayerNorm / GroupNorm except for the one thing it gets wrong."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn
from torch.autograd import Function


class _LayerNormBase(nn.Module):
    """A LayerNorm with the spec's constructor; subclasses change how forward gets there."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.num_features,), self.weight, self.bias, self.eps)

    def affine(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.weight is None else y * self.weight + self.bias


def contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


# -- layout ---------------------------------------------------------------------------------------------

class StorageOrderLayerNorm(_LayerNormBase):
    """Reads the input's storage as if it were packed row-major from its storage offset: what a kernel
    that takes data_ptr() without checking strides does (TransformerEngine#1017, apex#411)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.as_strided(x, x.shape, contiguous_strides(x.shape), x.storage_offset()))


class InnerStrideOnlyLayerNorm(_LayerNormBase):
    """Copies to contiguous only when the innermost stride is not 1, then reads rows as packed: correct for
    transposed and strided inputs, wrong when rows are padded or stored out of order (q = qkv[..., :C],
    time-major storage)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.stride(-1) != 1:
            x = x.contiguous()
        packed = torch.as_strided(x, x.shape, contiguous_strides(x.shape), x.storage_offset())
        return self.norm(packed)


class _ContiguousGradLayerNorm(Function):
    """LayerNorm whose backward reads grad_output's storage as packed (a kernel handed dy.data_ptr())."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias)
        ctx.eps = eps
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias = ctx.saved_tensors
        packed = torch.as_strided(dy, dy.shape, contiguous_strides(dy.shape), dy.storage_offset())
        with torch.enable_grad():
            xs, ws, bs = (t.detach().requires_grad_(True) for t in (x, weight, bias))
            y = F.layer_norm(xs, (xs.shape[-1],), ws, bs, ctx.eps)
            dx, dw, db = torch.autograd.grad(y, (xs, ws, bs), packed)
        return dx, dw, db, None


class ContiguousGradLayerNorm(_LayerNormBase):
    """Forward right for every layout; backward wrong for a non-contiguous upstream gradient."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps, affine=True)  # the Function needs both tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ContiguousGradLayerNorm.apply(x, self.weight, self.bias, self.eps)


class ChannelsLastGroupNorm(nn.GroupNorm):
    """GroupNorm that handles every layout except channels_last, whose storage it reads as NCHW (the
    class of pytorch#62594: a fast path taken on a memory-format flag, computing on the wrong layout)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, num_groups: int = 4) -> None:
        super().__init__(num_groups, num_features, eps=eps, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            x = torch.as_strided(x, x.shape, contiguous_strides(x.shape), x.storage_offset())
        return super().forward(x)


# -- empty batches --------------------------------------------------------------------------------------

class MaxScaledLayerNorm(_LayerNormBase):
    """Pre-scales by the global max|x| "for stability": torch's max() raises on an empty tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.abs().max().clamp_min(1e-6)
        return self.norm(x / scale)


class FlatEarlyExitLayerNorm(_LayerNormBase):
    """Early exit for empty input that returns a flat empty tensor (the wrong shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x.new_empty(0)
        return self.norm(x)


class DetachedEarlyExitLayerNorm(_LayerNormBase):
    """Early exit that returns a fresh empty tensor, cut from the graph: backward through it fails
    (flash-attention#1620)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return torch.empty_like(x)
        return self.norm(x)


class UpcastEarlyExitLayerNorm(_LayerNormBase):
    """Early exit that returns the float32 upcast of a half input: right in float32, wrong dtype in
    bfloat16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x.float()
        return self.norm(x)


class _GradMaxScale(Function):
    """Identity whose backward clips the upstream gradient by its max (raises on an empty tensor)."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> torch.Tensor:
        return dy.clamp(max=dy.max())


class EmptyBackwardLayerNorm(_LayerNormBase):
    """Forward fine on an empty batch; backward raises."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GradMaxScale.apply(self.norm(x))


# -- determinism ----------------------------------------------------------------------------------------

class PermutedSumLayerNorm(_LayerNormBase):
    """Sums the features in a random order each call (an unordered parallel reduction): results differ in
    the last bits from call to call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = torch.randperm(x.shape[-1], device=x.device)
        shuffled = x.index_select(-1, order)
        mean = shuffled.sum(-1, keepdim=True) / x.shape[-1]
        centred = x - mean
        var = centred.index_select(-1, order).pow(2).sum(-1, keepdim=True) / x.shape[-1]
        return self.affine(centred * torch.rsqrt(var + self.eps))


class NoisyLayerNorm(_LayerNormBase):
    """Adds noise of a few ulp (well inside every tolerance, so only a bitwise check sees it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        return y + 1e-7 * y.abs() * torch.randn_like(y)


class _RacyWeightGrad(Function):
    """y = x̂ ⊙ γ whose dγ sums the rows in a random order (Liger#950: a dγ reduction order that depends
    on scheduling)."""

    @staticmethod
    def forward(ctx: Any, xhat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(xhat, weight)
        return xhat * weight

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xhat, weight = ctx.saved_tensors
        rows = (dy * xhat).reshape(-1, xhat.shape[-1])
        order = torch.randperm(rows.shape[0], device=rows.device)
        return dy * weight, rows.index_select(0, order).sum(0)


class RacyWeightGradLayerNorm(_LayerNormBase):
    """Forward and dX deterministic; dγ not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xhat = F.layer_norm(x, (self.num_features,), None, None, self.eps)
        if self.weight is None:
            return xhat
        return _RacyWeightGrad.apply(xhat, self.weight) + self.bias


# -- batch invariance -----------------------------------------------------------------------------------

class BatchSwitchLayerNorm(_LayerNormBase):
    """Switches kernels at 256 rows: x·rsqrt(var+ε) below, x / sqrt(var+ε) from 256 up; both correctly
    rounded, but they differ in the last bit (vllm#48271)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        centred = x - mean
        var = centred.pow(2).mean(-1, keepdim=True)
        rows = x.numel() // max(x.shape[-1], 1)
        y = centred / torch.sqrt(var + self.eps) if rows >= 256 else centred * torch.rsqrt(var + self.eps)
        return self.affine(y)


# -- stale outputs --------------------------------------------------------------------------------------

class DataPtrCacheLayerNorm(_LayerNormBase):
    """Caches its output keyed on where the input lives: an in-place update of x returns the old output."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps, affine)
        self._cache: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.data_ptr(), tuple(x.shape))
        if key not in self._cache:
            self._cache[key] = self.norm(x)
        return self._cache[key]


class IdCacheLayerNorm(_LayerNormBase):
    """Caches its output keyed on id(x)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps, affine)
        self._cache: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if id(x) not in self._cache:
            self._cache[id(x)] = self.norm(x)
        return self._cache[id(x)]


class VersionCacheLayerNorm(_LayerNormBase):
    """Correct: the cache key includes the tensor's version counter, which every in-place op bumps."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps, affine)
        self._cache: dict[tuple[int, int, tuple[int, ...]], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.data_ptr(), x._version, tuple(x.shape))
        if key not in self._cache:
            self._cache[key] = self.norm(x)
        return self._cache[key]


class StaticOutputLayerNorm(_LayerNormBase):
    """Writes every output into one persistent buffer and returns it (a CUDA-graph style static output):
    the second call overwrites what the first returned."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps, affine)
        self._out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        if self._out is None or self._out.shape != y.shape or self._out.dtype != y.dtype:
            self._out = torch.empty_like(y)
        with torch.no_grad():
            self._out.copy_(y)
        return self._out


# -- aliasing -------------------------------------------------------------------------------------------

class InplaceLayerNorm(_LayerNormBase):
    """Normalizes its input in place and returns it (x.sub_(mean).div_(std))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + self.eps)
        x.sub_(mean).div_(std)
        if self.weight is not None:
            x.mul_(self.weight).add_(self.bias)
        return x


class ScratchInputLayerNorm(_LayerNormBase):
    """Returns a correct new tensor, but uses its input as scratch space on the way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        with torch.no_grad():
            x.sub_(x.mean(-1, keepdim=True))  # "centred in place to save a buffer"
        return y


class _GradScribble(Function):
    """Identity whose backward scales the caller's upstream gradient in place before using it."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> torch.Tensor:
        dy.mul_(2.0)
        return dy * 0.5


class GradOutputScribbleLayerNorm(_LayerNormBase):
    """Forward and gradients right; backward writes into the upstream gradient it was handed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GradScribble.apply(self.norm(x))
