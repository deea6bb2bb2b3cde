"""LayerNorms whose weight-gradient reduction is right or wrong in precision, for weight_gradient_reduction."""

from __future__ import annotations

import torch
from factories.norms import AffineNorm
from torch.autograd import Function

#: rows per partial sum: a Triton-style kernel sums a block of rows per program, then adds the partials.
BLOCK = 16


class _LayerNormFunction(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, accumulate_in_input_dtype):  # type: ignore[override]
        h = x.float()
        mean = h.mean(-1, keepdim=True)
        rstd = torch.rsqrt((h - mean).pow(2).mean(-1, keepdim=True) + eps)
        xhat = (h - mean) * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.accumulate_in_input_dtype = accumulate_in_input_dtype
        return (xhat * weight.float() + bias.float()).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        xhat, rstd, weight = ctx.saved_tensors
        g = dy.float() * weight.float()
        dx = rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
        terms_w = (dy.float() * xhat).reshape(-1, xhat.shape[-1])
        terms_b = dy.float().reshape(-1, xhat.shape[-1])
        if ctx.accumulate_in_input_dtype:
            # partial sums per block in float32, the partials accumulated in the parameter dtype (the bug)
            dw = torch.zeros_like(weight)
            db = torch.zeros_like(weight)
            for start in range(0, terms_w.shape[0], BLOCK):
                dw = (dw.float() + terms_w[start:start + BLOCK].sum(0)).to(weight.dtype)
                db = (db.float() + terms_b[start:start + BLOCK].sum(0)).to(weight.dtype)
        else:
            dw, db = terms_w.sum(0).to(weight.dtype), terms_b.sum(0).to(weight.dtype)
        return dx.to(dy.dtype), dw, db, None, None


class _CustomLayerNorm(AffineNorm):
    accumulate_in_input_dtype = False

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps, affine)
        self.register_buffer("ones", torch.ones(num_features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.weight is not None else self.ones
        bias = self.bias if self.bias is not None else torch.zeros_like(self.ones)
        return _LayerNormFunction.apply(x, weight, bias, self.eps, self.accumulate_in_input_dtype)


class Float32ReductionLayerNorm(_CustomLayerNorm):
    """Correct: dγ and dβ accumulated in float32 and rounded once."""


class HalfAccumulatorLayerNorm(_CustomLayerNorm):
    """Block partials of dγ / dβ accumulated in the parameter dtype (bf16 / fp16)."""

    accumulate_in_input_dtype = True
