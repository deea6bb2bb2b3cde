"""Triton kernels for the --triton-interpret tests (tests/test_triton_interpret.py): one wrong, one that Triton's
interpreter cannot run. Imported only where triton is installed."""

from __future__ import annotations

# Kernel arguments carry no annotations: Triton types them at launch.
# ruff: noqa: ANN001
import torch
import triton
import triton.language as tl
from torch import nn

from normbench import Implementation


@triton.jit
def _layer_norm_no_mean_fwd(X, Y, W, B, n_cols, eps, BLOCK: tl.constexpr):
    # the bug: the variance is taken about zero and the mean is never subtracted (an RMSNorm with a β)
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * n_cols + cols, (x * rstd * w + b).to(Y.dtype.element_ty), mask=mask)


class NoMeanLayerNorm(nn.Module):
    """A forward-only Triton LayerNorm that forgets to subtract the mean."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        y = torch.empty_like(rows)
        if rows.shape[0]:
            _layer_norm_no_mean_fwd[(rows.shape[0],)](rows, y, self.weight, self.bias, rows.shape[1], self.eps,
                                                      BLOCK=triton.next_power_of_2(rows.shape[1]))
        return y.view(x.shape)


@triton.autotune(configs=[triton.Config({}, num_warps=4), triton.Config({}, num_warps=8)], key=["n_cols"])
@triton.jit
def _autotuned_rms_norm_fwd(X, Y, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(Y + row * n_cols + cols, (x * rstd).to(Y.dtype.element_ty), mask=mask)


class AutotunedRMSNorm(nn.Module):
    """Correct, but autotuned over two configs: the autotuner benchmarks them through the GPU driver, and the
    interpreter has none ("0 active drivers")."""

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        y = torch.empty_like(rows)
        if rows.shape[0]:
            _autotuned_rms_norm_fwd[(rows.shape[0],)](rows, y, rows.shape[1], self.eps,
                                                      BLOCK=triton.next_power_of_2(rows.shape[1]))
        return y.view(x.shape)


def no_mean() -> Implementation:
    return Implementation(name="triton_mutant.NoMeanLayerNorm", family="layernorm", factory=NoMeanLayerNorm,
                          devices=("cuda",), affine="always", dtypes=("float32",))


def autotuned() -> Implementation:
    return Implementation(name="triton_mutant.AutotunedRMSNorm", family="rmsnorm", factory=AutotunedRMSNorm,
                          devices=("cuda",), affine="never", dtypes=("float32",))
