"""Foldability: in the module's mode, is the norm a fixed per-channel affine map n(x) = s⊙x + t, and does it
fold into the nn.Linear before it (W' = diag(s)·W, b' = s⊙b + t)?

Offline norms (BatchNorm in eval, PN*, Unified Normalization) are; anything with run-time statistics
(BatchNorm in train, LayerNorm, RMSNorm, GroupNorm, InstanceNorm) and anything non-linear (DyT) is not.
The check measures it end to end, from the outside: s and t are estimated per channel from probe batches
(`per_channel_affine`), verified on fresh batches drawn from other distributions, and folded into a Linear
whose output is exact in every dtype (small dyadic weights and integer inputs), so the folded float64
Linear and Linear → norm differ only by the norm's own rounding.

`per_channel_affine` and `fold_into_linear` are public helpers for tools that fold models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.toolkit.comparison import comparisons_trial, doubled
from normbench.checks.toolkit.probes import fresh_forward
from normbench.checks.toolkit.reductions import num_groups_of, reduction_length
from normbench.checks.toolkit.search import Trial, observation, search
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import Comparison, compare
from normbench.inputs import input_shape

__all__ = ["AffineFit", "fold_into_linear", "foldability", "per_channel_affine"]

#: Input features of the probing Linear: small, so its exact dyadic output stays within 8 significant bits.
LINEAR_IN = 6
#: Fresh verification batches: (mean, std) far from the probes' N(0, 1), so a map that depends on the batch
#: (BatchNorm in train) moves by O(1).
FRESH_DISTRIBUTIONS: tuple[tuple[float, float], ...] = ((0.0, 1.0), (3.0, 2.0))


@dataclass(frozen=True)
class AffineFit:
    """Per-channel least-squares fit y ≈ scale⊙x + shift (float64), and how well it fits the probes."""

    scale: torch.Tensor
    shift: torch.Tensor
    #: max |y − (scale⊙x + shift)| over the probes, relative to max |y|.
    residual: float

    def apply(self, x: torch.Tensor, channel_axis: int) -> torch.Tensor:
        """scale⊙x + shift in float64, broadcast along `channel_axis`."""
        shape = [1] * x.dim()
        shape[channel_axis] = -1
        x64 = x.detach().to(torch.float64).cpu()
        return x64 * self.scale.reshape(shape) + self.shift.reshape(shape)


def _channels_last(t: torch.Tensor, channel_axis: int) -> torch.Tensor:
    return t.detach().to(torch.float64).cpu().movedim(channel_axis, -1).reshape(-1, t.shape[channel_axis])


def per_channel_affine(forward: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[torch.Tensor],
                       channel_axis: int) -> AffineFit:
    """Fit n(x) ≈ s⊙x + t per channel by least squares over every position of every probe input.

    `forward` is called once per input (give it a fresh copy of a stateful module each time). A map that is
    really per-channel affine fits to rounding; any other leaves a residual of the order of its output.
    """
    if not inputs:
        raise ValueError("per_channel_affine needs at least one probe input")
    xs = torch.cat([_channels_last(x, channel_axis) for x in inputs])
    ys = torch.cat([_channels_last(forward(x), channel_axis) for x in inputs])
    mean_x, mean_y = xs.mean(dim=0), ys.mean(dim=0)
    dx, dy = xs - mean_x, ys - mean_y
    var = (dx * dx).sum(dim=0)
    scale = torch.where(var > 0, (dx * dy).sum(dim=0) / var.clamp_min(torch.finfo(torch.float64).tiny),
                        torch.zeros_like(var))
    shift = mean_y - scale * mean_x
    fitted = xs * scale + shift
    finite = torch.isfinite(ys)
    peak = float(ys[finite].abs().max()) if finite.any() else 0.0
    err = (ys - fitted).abs()
    worst = float(err.max()) if bool(finite.all()) else float("inf")
    return AffineFit(scale=scale, shift=shift, residual=worst / peak if peak > 0 else worst)


def fold_into_linear(linear: nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> nn.Linear:
    """The float64 Linear equal to norm(linear(u)) for a norm n(h) = scale⊙h + shift after it:
    W' = diag(scale)·W, b' = scale⊙b + shift."""
    w = linear.weight.detach().to(torch.float64).cpu()
    b = linear.bias.detach().to(torch.float64).cpu() if linear.bias is not None else torch.zeros(w.shape[0],
                                                                                                 dtype=torch.float64)
    folded = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
    with torch.no_grad():
        folded.weight.copy_(scale.to(torch.float64).unsqueeze(1) * w)
        folded.bias.copy_(scale.to(torch.float64) * b + shift.to(torch.float64))
    return folded


# -- the check ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FoldProbe:
    features: int
    shape: tuple[int, ...]
    seed: int
    params: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "seed": self.seed, "params": dict(self.params)}


def _rank(ctx: CheckContext) -> int:
    """(N, C) where the family takes it (the Linear then acts on C directly); else the smallest rank."""
    ranks = ctx.spec.layout.ranks
    return 2 if 2 in ranks else min(ranks)


def _probes(ctx: CheckContext) -> list[FoldProbe]:
    layout = ctx.spec.layout
    rank = _rank(ctx)
    out = []
    for i, c in enumerate(dict.fromkeys((ctx.spec.features[0], ctx.spec.features[-1]))):
        shape = input_shape(layout, batch=8, features=c, rank=rank, length=3)
        out.append(FoldProbe(c, shape, ctx.seed + i, tuple(ctx.params().items())))
    return out


def _normal(shape: tuple[int, ...], seed: int, mean: float, std: float, ctx: CheckContext) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    values = mean + std * torch.randn(shape, generator=gen, dtype=torch.float64)
    return values.to(ctx.dtype).to(ctx.device)


def _dyadic_linear(c_out: int, seed: int, ctx: CheckContext) -> nn.Linear:
    """A Linear (in the item's dtype) with weights and bias in {-4..4}/8, and integer inputs in {-3..3}: every
    output is a multiple of 1/8 below 10 in magnitude, exact in float16 and bfloat16 alike."""
    gen = torch.Generator().manual_seed(seed)
    linear = nn.Linear(LINEAR_IN, c_out)
    with torch.no_grad():
        linear.weight.copy_(torch.randint(-4, 5, (c_out, LINEAR_IN), generator=gen).to(torch.float32) / 8)
        linear.bias.copy_(torch.randint(-4, 5, (c_out,), generator=gen).to(torch.float32) / 8)
    return linear.to(device=ctx.device, dtype=ctx.dtype)


def _linear_input(ctx: CheckContext, probe: FoldProbe, seed: int) -> torch.Tensor:
    """Integer inputs u shaped so that Linear(u), features last, moved to the layout's channel axis, has the
    probe's shape."""
    axis = ctx.spec.layout.features_axis % len(probe.shape)
    tokens_shape = list(probe.shape)
    tokens_shape.pop(axis)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (*tokens_shape, LINEAR_IN), generator=gen).to(ctx.dtype).to(ctx.device)


def _fold_trial(ctx: CheckContext, probe: FoldProbe) -> Trial:
    params = dict(probe.params)
    c = probe.features
    axis = ctx.spec.layout.features_axis % len(probe.shape)
    module = ctx.build(c, params)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return fresh_forward(ctx, module, x)[0]

    probes = [_normal(probe.shape, stable_seed("fold_probe", probe.seed, k), 0.0, 1.0, ctx) for k in range(2)]
    fit = per_channel_affine(norm, probes, axis)
    n = reduction_length(ctx.spec, probe.shape, num_groups_of(params))
    tol = doubled(ctx.tolerance("forward"))  # the fitted map carries the probes' rounding too
    comparisons: dict[str, Comparison] = {}
    for k, (mean, std) in enumerate(FRESH_DISTRIBUTIONS):
        x = _normal(probe.shape, stable_seed("fold_fresh", probe.seed, k), mean, std, ctx)
        comparisons[f"fresh N({mean:g}, {std:g}) vs s*x+t"] = compare(norm(x), fit.apply(x, axis), ctx.dtype, tol, n)
    linear = _dyadic_linear(c, stable_seed("fold_linear", probe.seed), ctx)
    u = _linear_input(ctx, probe, stable_seed("fold_u", probe.seed))
    with torch.no_grad():
        h = linear(u).movedim(-1, axis)
    folded = fold_into_linear(linear, fit.scale, fit.shift)
    with torch.no_grad():
        y_folded = folded(u.detach().to(torch.float64).cpu()).movedim(-1, axis)
    comparisons["Linear->norm vs folded Linear"] = compare(norm(h), y_folded, ctx.dtype, tol, n)
    counterexample = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode,
                      "fresh_distributions": [list(d) for d in FRESH_DISTRIBUTIONS], "linear_in": LINEAR_IN}
    return comparisons_trial(ctx, comparisons, counterexample, {"fit_residual": fit.residual})


@register_check("foldability", dtypes=("float32", "bfloat16"))
def foldability(ctx: CheckContext) -> Observation:
    """In the item's mode the norm is a fixed per-channel affine map s⊙x + t (estimated from probes, verified
    on fresh batches) that folds into the preceding nn.Linear: W' = diag(s)·W, b' = s⊙b + t."""
    result = search(ctx, lambda p: _fold_trial(ctx, p), _probes(ctx), None)
    return observation("a fixed per-channel affine map that folds into the preceding Linear", result)
