"""Invariance and equivariance properties: shift, eps-aware scale, batch permutation, batch independence,
and independence from what the padding holds.

Each check compares two outputs of the *same* implementation with the same module state (the module is
deep-copied before every forward, so a train-mode buffer update cannot leak from one call into the next).
Two outputs that are each within the spec's bound of the float64 truth differ by at most twice that bound,
so the spec tolerance is doubled. Shift and scale add an allowance for what any correct kernel loses to
rounding in the input dtype: x + c and a·x are rounded, and centring values of magnitude |x + c| costs
about eps·|x + c| relative to the spread σ of each statistic group. (The ε/σ² error of NORMS.md is not
rounding: the scale check removes it exactly by scaling ε with the input.) A transform whose allowance
would swallow a real violation is not measured (see MEASURABLE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.toolkit.comparison import comparisons_trial, doubled
from normbench.checks.toolkit.probes import (
    Probe,
    counterexample,
    feature_probes,
    fresh_forward,
    probe_strategy,
    tokens_view,
)
from normbench.checks.toolkit.reductions import num_groups_of, reduction_length, rounding_condition
from normbench.checks.toolkit.search import Trial, observation, search
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import Comparison, compare, dtype_eps
from normbench.inputs import Case, input_shape, make_input, pad_mask
from normbench.spec import Tolerance

#: The rounding allowance is SAFETY·eps(dtype)·κ·S (κ: worst |value|/σ over the statistic groups,
#: S: output scale). Perturbing every input by a relative eps/2 moves a normalized output by at most
#: |γ|·eps·κ·(1 + |x̂|); |x̂| stays below ~4 for these inputs and S = max|f(x)| is of the order of
#: max|γ|·max|x̂| ≥ |γ|; 8 leaves room for the kernel's own rounding at that magnitude.
SAFETY = 8.0
#: A transform is measured only while its allowance stays below this fraction of the output scale: beyond
#: it a genuine violation (an RMSNorm shifted by 3σ moves by O(S)) could no longer exceed the tolerance
#: clearly. In float32 every default transform is measurable; in bfloat16 most are not.
MEASURABLE = 0.05
#: Shift constants, in units of the input's scale (1 for the fixed domains): small, negative, large.
SHIFTS: tuple[float, ...] = (3.0, -10.0, 100.0)
#: Scale factors over decades (brief: 1e-2, 10, 1e3); powers of ten are not exact in binary, which the
#: rounding allowance covers.
SCALES: tuple[float, ...] = (1e-2, 10.0, 1e3)
#: A large ε besides the spec default: ε-placement bugs (gpt-neox#1337, ε added to σ not σ²) move the
#: output by about ε·a/σ, so a large ε makes them stand out in every dtype.
LARGE_EPS = 1.0
#: What the pads are filled with, besides zeros: garbage, +inf, NaN (pytorch#70529, tensorflow#30161).
PAD_FILLS: tuple[str, ...] = ("garbage", "+inf", "nan")


def representable(values: torch.Tensor, dtype: torch.dtype) -> bool:
    """True when casting float64 `values` to `dtype` rounds each by at most eps/2 relative (no overflow,
    no flush into the subnormal range), so the rounding allowance is valid."""
    cast = values.to(dtype).to(torch.float64)
    if not bool(torch.isfinite(cast).all()):
        return False
    nonzero = values != 0
    rel = ((cast - values).abs()[nonzero] / values.abs()[nonzero])
    return rel.numel() == 0 or float(rel.max().item()) <= dtype_eps(dtype)


# -- shift invariance -----------------------------------------------------------------------------------

def _shift_trial(ctx: CheckContext, probe: Probe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    base, _ = fresh_forward(ctx, module, x)
    x64 = x.to(torch.float64)
    n = reduction_length(ctx.spec, tuple(x.shape), num_groups_of(params))
    eps = dtype_eps(ctx.dtype)
    comparisons: dict[str, Comparison] = {}
    skipped: list[str] = []
    for constant in SHIFTS:
        shift = constant * probe.case.scale
        shifted = x64 + shift
        label = f"shift={shift:+g}"
        kappa = rounding_condition(ctx.spec, shifted, params)
        allowance = SAFETY * kappa
        if allowance * eps > MEASURABLE or not representable(shifted, ctx.dtype):
            skipped.append(f"{label} (rounding allowance {allowance * eps:.3g}·S)")
            continue
        y, _ = fresh_forward(ctx, module, shifted.to(ctx.dtype))
        comparisons[label] = compare(y, base, ctx.dtype, doubled(ctx.tolerance("forward"), allowance), n)
    return comparisons_trial(ctx, comparisons, counterexample(ctx, probe, shifts=list(SHIFTS)), skipped=skipped)


@register_check("shift_invariance")
def shift_invariance(ctx: CheckContext) -> Observation:
    """f(x + c) equals f(x) for constants c (same module state); rounding of x + c allowed for."""
    result = search(ctx, lambda p: _shift_trial(ctx, p), feature_probes(ctx), probe_strategy(ctx))
    return observation("f(x + c) == f(x)", result)


# -- scale invariance (eps-aware) -----------------------------------------------------------------------

def _copy_parameters(src: nn.Module, dst: nn.Module) -> None:
    """Give `dst` every parameter value of `src` (the factory may draw some at random); buffers are already
    equal (seeded randomization), and ε may live in a buffer, so buffers are not copied."""
    theirs = dict(dst.named_parameters())
    with torch.no_grad():
        for name, value in src.named_parameters():
            if name in theirs and theirs[name].shape == value.shape:
                theirs[name].copy_(value)


def _scale_trial(ctx: CheckContext, probe: Probe) -> Trial:
    params = dict(probe.params)
    power = float(ctx.options.get("eps_power", 2))
    if params.get("eps_mode") == "clamp":  # eps bounds the norm itself (F.normalize), not its square
        power = 1.0
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    seed = stable_seed(ctx.seed, "scale", probe.case.seed)
    module = ctx.build(c, params, seed=seed)
    base, _ = fresh_forward(ctx, module, x)
    x64 = x.to(torch.float64)
    n = reduction_length(ctx.spec, tuple(x.shape), num_groups_of(params))
    eps = dtype_eps(ctx.dtype)
    allowance = SAFETY * rounding_condition(ctx.spec, x64, params)
    comparisons: dict[str, Comparison] = {}
    skipped: list[str] = []
    for a in SCALES:
        label = f"a={a:g}"
        scaled = a * x64
        if allowance * eps > MEASURABLE or not representable(scaled, ctx.dtype):
            skipped.append(f"{label} (rounding allowance {allowance * eps:.3g}·S or a·x not representable)")
            continue
        scaled_params = {**params, "eps": params["eps"] * a ** power}
        other = ctx.build(c, scaled_params, seed=seed)
        _copy_parameters(module, other)
        y, _ = fresh_forward(ctx, other, scaled.to(ctx.dtype))
        comparisons[label] = compare(y, base, ctx.dtype, doubled(ctx.tolerance("forward"), allowance), n)
    extra = {"eps": params["eps"], "eps_power": power}
    return comparisons_trial(ctx, comparisons, counterexample(ctx, probe, scales=list(SCALES), eps_power=power),
                             extra, skipped)


@register_check("scale_invariance")
def scale_invariance(ctx: CheckContext) -> Observation:
    """f_ε(x) equals f_{ε·a^p}(a·x) for scales a over decades (p = options.eps_power, default 2)."""
    probes = feature_probes(ctx)
    first = probes[0]
    probes.append(Probe(first.case, tuple(ctx.params(eps=LARGE_EPS).items())))
    result = search(ctx, lambda p: _scale_trial(ctx, p), probes, probe_strategy(ctx))
    return observation("f_eps(x) == f_{eps·a^p}(a·x)", result)


# -- permutation equivariance over the batch axis --------------------------------------------------------

def _state_comparisons(ctx: CheckContext, got: nn.Module, want: nn.Module, n: int,
                       tol: Tolerance) -> dict[str, Comparison]:
    """Compare the spec's state buffers of two modules (integers exactly)."""
    out: dict[str, Comparison] = {}
    for name in ctx.spec.state:
        a, b = ctx.impl.state_tensor(got, name), ctx.impl.state_tensor(want, name)
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            continue
        if b.is_floating_point():
            out[name] = compare(a, b, ctx.dtype, tol, n)
        else:
            out[name] = compare(a.to(torch.float64), b.to(torch.float64), ctx.dtype, Tolerance(0, 0, 0), 1)
    return out


def _permutation(batch: int, seed: int) -> torch.Tensor:
    """A seeded permutation of the batch that moves something whenever batch > 1."""
    perm = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
    if batch > 1 and bool((perm == torch.arange(batch)).all()):
        perm = perm.roll(1)
    return perm


def _permutation_trial(ctx: CheckContext, probe: Probe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    perm = _permutation(x.shape[0], stable_seed("perm", probe.case.seed))
    y, after = fresh_forward(ctx, module, x)
    y_perm, after_perm = fresh_forward(ctx, module, x[perm].contiguous())
    n = reduction_length(ctx.spec, tuple(x.shape), num_groups_of(params))
    tol = doubled(ctx.tolerance("forward"))
    comparisons = {"output": compare(y_perm, y[perm], ctx.dtype, tol, n)}
    # BatchNorm train: the updated running statistics must not depend on the order of the rows either.
    comparisons.update(_state_comparisons(ctx, after_perm, after, n, tol))
    return comparisons_trial(ctx, comparisons, counterexample(ctx, probe, permutation=perm.tolist()))


@register_check("permutation_equivariance")
def permutation_equivariance(ctx: CheckContext) -> Observation:
    """f(x[perm]) equals f(x)[perm] over the batch axis; updated state buffers equal too."""
    result = search(ctx, lambda p: _permutation_trial(ctx, p), feature_probes(ctx), probe_strategy(ctx))
    return observation("f(x[perm]) == f(x)[perm]", result)


# -- batch independence ---------------------------------------------------------------------------------

def _other_rows(x: torch.Tensor, rows: int, seed: int, scale: float) -> torch.Tensor:
    """Replacement rows from a clearly different distribution (mean 5, std 3, in units of the input's
    scale), so batch statistics move by a lot when they are used."""
    gen = torch.Generator().manual_seed(seed)
    shape = (rows, *x.shape[1:])
    values = scale * (5.0 + 3.0 * torch.randn(shape, generator=gen, dtype=torch.float64))
    return values.to(x.dtype).to(x.device)


def _batch_trial(ctx: CheckContext, probe: Probe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    batch = x.shape[0]
    keep = max(1, batch // 2)
    other = _other_rows(x, max(1, batch - keep), stable_seed("other_rows", probe.case.seed), probe.case.scale)
    y, _ = fresh_forward(ctx, module, x)
    mixed = torch.cat([x[:keep], other])
    y_mixed, _ = fresh_forward(ctx, module, mixed)
    n = reduction_length(ctx.spec, tuple(x.shape), num_groups_of(params))
    comparisons = {f"rows[:{keep}]": compare(y_mixed[:keep], y[:keep], ctx.dtype,
                                             doubled(ctx.tolerance("forward")), n)}
    return comparisons_trial(ctx, comparisons, counterexample(ctx, probe, kept_rows=keep,
                                                              replaced_rows=int(other.shape[0])))


@register_check("batch_independence")
def batch_independence(ctx: CheckContext) -> Observation:
    """A row's output does not change when the other rows of the batch change."""
    result = search(ctx, lambda p: _batch_trial(ctx, p), feature_probes(ctx), probe_strategy(ctx))
    return observation("rows independent of the rest of the batch", result)


# -- independence from the padding ----------------------------------------------------------------------

@dataclass(frozen=True)
class PadProbe:
    """A padded sequence input: shape (B, T, C) for features-last layouts, (N, C, L) for channel-first."""

    case: Case
    mask_seed: int
    params: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.case.as_dict(), "mask_seed": self.mask_seed, "params": dict(self.params)}


def _sequence_rank(ctx: CheckContext) -> int:
    if 3 not in ctx.spec.layout.ranks:
        raise Skip(f"family {ctx.spec.family!r} takes no rank-3 (sequence) input, so it has no padding")
    return 3


def _pad_probes(ctx: CheckContext) -> list[PadProbe]:
    rank = _sequence_rank(ctx)
    params = tuple(ctx.params().items())
    out = []
    for i, c in enumerate(ctx.spec.features):
        shape = input_shape(ctx.spec.layout, batch=3, features=c, rank=rank, length=6)
        out.append(PadProbe(Case(shape, "normal", seed=ctx.seed + i), ctx.seed + 100 + i, params))
    return out


def _pad_strategy(ctx: CheckContext) -> st.SearchStrategy[PadProbe]:
    rank = _sequence_rank(ctx)
    params = tuple(ctx.params().items())
    per_token = ctx.spec.layout.reduce == "token"

    def build(batch: int, length: int, c: int, seed: int) -> PadProbe:
        shape = input_shape(ctx.spec.layout, batch=batch, features=c, rank=rank, length=length)
        return PadProbe(Case(shape, "normal", seed=seed), seed + 1, params)

    # Batch statistics need several real values per channel; sequences need two positions to hold a pad.
    return st.builds(build, st.integers(1 if per_token else 2, 5), st.integers(2, 8),
                     st.sampled_from(ctx.spec.features), st.integers(0, 2**16))


def _filled(ctx: CheckContext, x64: torch.Tensor, mask: torch.Tensor, fill: str, seed: int) -> torch.Tensor:
    out = x64.clone()
    tokens = tokens_view(ctx, out)
    pads = int(mask.sum().item())
    c = tokens.shape[-1]
    if fill == "zeros":
        values = torch.zeros(pads, c, dtype=torch.float64)
    elif fill == "garbage":
        # Large and random, but representable in float16 (max 65504).
        big = min(1e4, torch.finfo(ctx.dtype).max / 8)
        values = big * torch.randn(pads, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    elif fill == "+inf":
        values = torch.full((pads, c), math.inf, dtype=torch.float64)
    elif fill == "nan":
        values = torch.full((pads, c), math.nan, dtype=torch.float64)
    else:
        raise ValueError(f"unknown pad fill {fill!r}")
    tokens[mask] = values
    return out.to(ctx.dtype).to(ctx.device)


def _pad_trial(ctx: CheckContext, probe: PadProbe) -> Trial:
    params = dict(probe.params)
    x64 = make_input(probe.case, torch.float64, "cpu", ctx.spec.layout)
    c = x64.shape[ctx.spec.layout.features_axis]
    batch, length = tokens_view(ctx, x64).shape[:2]
    mask = pad_mask(batch, length, probe.mask_seed)
    real = ~mask
    module = ctx.build(c, params)
    n = reduction_length(ctx.spec, tuple(x64.shape), num_groups_of(params))
    tol = doubled(ctx.tolerance("forward"))
    base, _ = fresh_forward(ctx, module, _filled(ctx, x64, mask, "zeros", 0), mask)
    base_real = tokens_view(ctx, base)[real]
    cex = counterexample(ctx, probe, pad_fraction=float(mask.float().mean().item()))
    nonfinite = int((~torch.isfinite(base_real)).sum().item())
    if nonfinite:
        # Every input is finite here: a non-finite output at a real token is a violation by itself.
        return Trial(ok=False, summary=f"pads=zeros: {nonfinite} non-finite output(s) at real tokens",
                     metrics={"measured": 1, "tol_ratio": math.inf, "nonfinite": nonfinite}, counterexample=cex)
    comparisons: dict[str, Comparison] = {}
    for fill in PAD_FILLS:
        y, _ = fresh_forward(ctx, module, _filled(ctx, x64, mask, fill, stable_seed("pad", probe.case.seed)), mask)
        comparisons[f"pads={fill}"] = compare(tokens_view(ctx, y)[real], base_real, ctx.dtype, tol, n)
    return comparisons_trial(ctx, comparisons, cex)


@register_check("pad_mask_independence")
def pad_mask_independence(ctx: CheckContext) -> Observation:
    """Outputs at real tokens do not move (and stay finite) when the pads hold zeros, garbage, +inf or NaN.

    The mask (True = pad) is passed through the implementation's `mask_kwarg`, so masked families
    (masked BatchNorm, PowerNorm) are judged on their masking; plain ones ignore it.
    """
    result = search(ctx, lambda p: _pad_trial(ctx, p), _pad_probes(ctx), _pad_strategy(ctx))
    return observation("real-token outputs independent of pad contents", result)

