"""Numerical robustness: adversarial inputs against the float64 truth, constant and all-zero groups, and
output dtype preservation.

Each adversarial input is a trigger from the project's bug catalogue (BUGS.md): a large mean with a small
spread breaks a one-pass E[x²]−E[x]² (pytorch#51102, #40302), squares or sums kept in a half dtype overflow
or lose the spread (pytorch PR #133085, executorch#18772, pytorch#126525), tiny spreads show where ε sits
(gpt-neox#1337, keras#22586), and constant groups divide 0 by 0 without an ε guard
(pytorch_geometric#2559). Truth is always the family's reference in float64 on the same (rounded) input,
so legitimate cast orders (LLaMA, Gemma, torch.nn.RMSNorm) differ from it by rounding only and pass.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.toolkit.comparison import comparisons_trial
from normbench.checks.toolkit.reductions import num_groups_of, reduction_length, rounding_condition
from normbench.checks.toolkit.search import Trial, observation, search
from normbench.checks.toolkit.seeds import stable_seed
from normbench.compare import Comparison, accumulate_eps, compare, dtype_eps
from normbench.inputs import DEGENERATE_FEATURES, Case, input_shape, random_like
from normbench.spec import Layout, Spec, Tolerance

HALF_DTYPES = (torch.float16, torch.bfloat16)
#: ε values that expose where ε sits and what precision it is added in (BUGS.md: 1e-12 underflows to 0 in
#: float16, keras#22586; 1 makes ε-outside-the-sqrt differ from inside by O(1)).
EPS_VALUES: tuple[float, ...] = (1e-12, 1e-6, 1e-5, 1.0)
#: Reduction lengths of the large-mean trigger: C = 4 (mean 2000, std 1) and C = 4096 (mean 1e4, std 1).
SHORT_REDUCTION, LONG_REDUCTION = 4, 4096
#: `large_mean` multiplies its mean by the case scale: fp32 mean 2000 · 5 = 1e4 for the long reduction.
LONG_MEAN_SCALE = 5.0
#: Magnitude of the inputs whose mean square is of the order of ε (1e-6 for |x| ~ 1e-3): the second-moment
#: analogue of a tiny variance, where ε placement decides an RMSNorm's output.
SMALL_MAGNITUDE = 1e-3
#: Backward-stability allowance, in units of eps(dtype)·κ·S (κ = max|x|/σ over the statistic groups of a
#: centred family, S the output scale): a correct kernel returns the exact normalization of an input
#: perturbed by O(eps(dtype)) relative, e.g. with its mean rounded to the input dtype (torch's CPU half
#: BatchNorm does: measured up to 0.25 of this unit; its fp32 LayerNorm 0.5 on mean 2000 / std 1). A
#: one-pass variance errs by κ²·eps (hundreds of units at κ ~ 1e3), a bf16 accumulation by ~L·eps (6 units
#: at L = 769, thousands at 4096), ε outside the square root by O(1).
STABILITY_SAFETY = 4.0
#: Constants of the constant groups: unit, and large enough that a one-pass variance cancels to a negative
#: number in float32 (E[x²] ~ 1e6 carries an absolute rounding error far above ε).
CONSTANT_SCALES: tuple[float, ...] = (1.0, 1000.0)


@dataclass(frozen=True)
class Trigger:
    """One adversarial input: which bug class it targets, the reproducible case, the parameters."""

    name: str
    case: Case
    params: tuple[tuple[str, Any], ...]
    gradients: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"trigger": self.name, "input": self.case.as_dict(), "params": dict(self.params)}


def shape_with_reduction(spec: Spec, features: int, length: int, params: dict[str, Any]) -> tuple[int, ...]:
    """A small input shape whose statistic groups have about `length` members each (per layout.reduce).

    Per-token families reduce over C, so C = length; the others keep C = `features` and stretch the batch
    or length axes instead.
    """
    layout: Layout = spec.layout
    ranks = layout.ranks
    if layout.reduce == "token":
        rank = 2 if 2 in ranks else min(ranks)
        return input_shape(layout, batch=4, features=length, rank=rank, length=2)
    if layout.reduce == "channel":
        if 2 in ranks:
            return input_shape(layout, batch=length, features=features, rank=2)
        return input_shape(layout, batch=2, features=features, rank=min(ranks), length=max(1, length // 2))
    rank = 3 if 3 in ranks else min(ranks)
    per_group = 1
    if layout.reduce == "group":
        per_group = max(1, features // int(params.get("num_groups") or 1))
    shape = list(input_shape(layout, batch=2, features=features, rank=rank, length=1))
    # The whole length goes on the first spatial axis (the others stay 1 for rank 4).
    shape[1 if layout.features_axis % rank != 1 else 2] = max(2, length // per_group)
    return tuple(shape)


def _eps_params(ctx: CheckContext, eps: float) -> tuple[tuple[str, Any], ...]:
    return tuple(ctx.params(eps=eps).items())


def _eps_values(ctx: CheckContext) -> list[float]:
    """The ε sweep of the triggers. Under a deployment variant's bounded plan, where each ε is a compilation (a
    constant of the generated kernel) or an export: the smallest and the default. ε = 1, the other end, is the
    bounded plan's ε variant of forward_equivalence; the decades between are judged in eager mode."""
    if ctx.bounded_variant_plan:
        return ctx.sweep("eps", (EPS_VALUES[0], ctx.params()["eps"]))
    return ctx.sweep("eps", EPS_VALUES)


def _triggers(ctx: CheckContext) -> list[Trigger]:
    spec, layout = ctx.spec, ctx.spec.layout
    default = tuple(ctx.params().items())
    c0 = spec.features[0]
    seed = ctx.seed
    out = [
        Trigger(f"large mean, reduction {SHORT_REDUCTION}",
                Case(shape_with_reduction(spec, c0, SHORT_REDUCTION, ctx.params()), "large_mean", seed), default),
        Trigger(f"large mean x{LONG_MEAN_SCALE:g}, reduction {LONG_REDUCTION}",
                Case(shape_with_reduction(spec, c0, LONG_REDUCTION, ctx.params()), "large_mean", seed + 1,
                     LONG_MEAN_SCALE), default),
    ]
    rank = layout.ranks[-1]
    for i, eps in enumerate(_eps_values(ctx)):
        params = _eps_params(ctx, eps)
        shape = input_shape(layout, batch=4, features=c0, rank=rank, length=3)
        out.append(Trigger(f"tiny variance, eps={eps:g}", Case(shape, "tiny_var", seed + 10 + i), params,
                           gradients=eps == ctx.params()["eps"]))
        out.append(Trigger(f"|x| ~ {SMALL_MAGNITUDE:g}, eps={eps:g}",
                           Case(shape, "scaled", seed + 20 + i, SMALL_MAGNITUDE), params, gradients=False))
    out.append(Trigger(f"small std 0.05 around 1, reduction {LONG_REDUCTION}",
                       Case(shape_with_reduction(spec, c0, LONG_REDUCTION, ctx.params()), "small_std", seed + 2),
                       default))
    for i, c in enumerate(spec.features):
        # The spec's feature counts include sizes that are not powers of two (769, 37, 60...).
        shape = input_shape(layout, batch=4, features=c, rank=layout.ranks[i % len(layout.ranks)], length=3)
        out.append(Trigger(f"|x| in [300, 2000] (x² > 65504), C={c}", Case(shape, "big", seed + 30 + i), default))
        out.append(Trigger(f"small std 0.05 around 1, C={c}", Case(shape, "small_std", seed + 40 + i), default))
    return out


def _trigger_strategy(ctx: CheckContext) -> st.SearchStrategy[Trigger]:
    """Random shapes and seeds over the adversarial domains and ε values (small shapes, so it shrinks)."""
    layout = ctx.spec.layout
    per_token = layout.reduce == "token"

    @st.composite
    def build(draw: st.DrawFn) -> Trigger:
        domain = draw(st.sampled_from(("large_mean", "tiny_var", "big", "small_std")))
        eps = draw(st.sampled_from(_eps_values(ctx)))
        c = draw(st.sampled_from(ctx.spec.features))
        rank = draw(st.sampled_from(layout.ranks))
        batch = draw(st.integers(1 if per_token else 3, 6))
        length = draw(st.integers(1 if per_token else 3, 5))
        case = Case(input_shape(layout, batch, c, rank, length), domain, draw(st.integers(0, 2**16)))
        return Trigger(f"{domain}, eps={eps:g} (random)", case, _eps_params(ctx, eps), gradients=True)

    return build()


def _state_comparisons(ctx: CheckContext, module: nn.Module, ref: nn.Module, n: int,
                       skipped: list[str]) -> dict[str, Comparison]:
    """Updated floating-point state buffers (BatchNorm's running statistics) against the reference's; a
    buffer whose true value its dtype cannot hold (a variance of 1e6 in float16) is not compared."""
    out: dict[str, Comparison] = {}
    for name in ctx.spec.state:
        got, want = ctx.impl.state_tensor(module, name), getattr(ref, name, None)
        if isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor) and want.is_floating_point():
            if got.is_floating_point() and want.numel() and \
                    float(want.detach().abs().max()) > torch.finfo(got.dtype).max:
                skipped.append(f"{name} (true value exceeds {got.dtype} range)")
                continue
            out[name] = ctx.compare(got, want, "forward", n)
    return out


def _with_allowance(tol: Tolerance, units: float) -> Tolerance:
    """`tol` with `units` more of the abs term (eps(dtype)·S each)."""
    return Tolerance(rel=tol.rel, abs=tol.abs + units, red=tol.red, bias=tol.bias)


def _fits(truth: torch.Tensor, dtype: torch.dtype, label: str, skipped: list[str]) -> bool:
    """False (and noted) when the true values exceed the dtype's range: an overflow there is no error (a
    nearly constant group's dX of 3e5 in float16)."""
    if truth.numel() and float(truth.detach().abs().max()) > torch.finfo(dtype).max:
        skipped.append(f"{label} (true values exceed the {str(dtype).removeprefix('torch.')} range)")
        return False
    return True


def stability_allowance(ctx: CheckContext, x: torch.Tensor, params: dict[str, Any]) -> float:
    """STABILITY_SAFETY·κ for centred families (κ = max|x|/σ over statistic groups; inf for a constant
    group, which constant_rows judges), 0 for second-moment ones: no centring, nothing to magnify."""
    if ctx.spec.layout.moments != "centred":
        return 0.0
    return STABILITY_SAFETY * rounding_condition(ctx.spec, x.detach(), params)


def _adversarial_trial(ctx: CheckContext, trigger: Trigger) -> Trial:
    params = dict(trigger.params)
    x = ctx.input(trigger.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    ref = ctx.reference(module, c, params)
    n = reduction_length(ctx.spec, tuple(x.shape), num_groups_of(params))
    x_in = x.clone().requires_grad_(trigger.gradients)
    y = ctx.forward(module, x_in)
    x64 = x.detach().to(torch.float64).requires_grad_(trigger.gradients)
    truth = ref(x64)
    allowance = stability_allowance(ctx, x64, params)
    counterexample = {**trigger.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode}
    skipped: list[str] = []
    if math.isinf(allowance):
        # Rounding to the dtype made a group constant (float16 holds 200 ± 1 in steps of 0.125): that is
        # constant_rows' input, judged there.
        skipped.append("a statistic group is constant in this dtype (constant_rows judges it)")
        return comparisons_trial(ctx, {}, counterexample, {"trigger": trigger.name}, skipped)
    comparisons: dict[str, Comparison] = {}
    if _fits(truth, ctx.dtype, "output", skipped):
        comparisons["output"] = compare(y, truth, ctx.dtype, _with_allowance(ctx.tolerance("forward"), allowance), n)
    comparisons.update(_state_comparisons(ctx, module, ref, n, skipped))
    if trigger.gradients and y.requires_grad:
        dy = random_like(y, stable_seed("adversarial_dy", trigger.case.seed))
        y.backward(dy)
        truth.backward(dy.detach().to(torch.float64))
        if x_in.grad is None:
            raise AssertionError("no gradient reached the input")
        # Floor the gradient's scale at float32's resolution of dy·γ: where the true dX is far below it (a
        # saturated tanh in DyT: 1 - tanh² = 1e-12), a kernel computing in float32 rightly returns 0.
        floor = accumulate_eps(ctx.dtype) * float(dy.abs().max()) * _effective_gamma_scale(ref)
        scale = max(float(x64.grad.abs().max()), floor)
        if _fits(x64.grad, ctx.dtype, "grad_input", skipped):
            comparisons["grad_input"] = compare(x_in.grad, x64.grad, ctx.dtype,
                                                _with_allowance(ctx.tolerance("backward"), allowance), n, scale=scale)
    trial = comparisons_trial(ctx, comparisons, counterexample, {"stability_allowance": allowance}, skipped)
    if not trial.ok:
        trial.summary = f"[{trigger.name}] {trial.summary}"
    trial.metrics["trigger"] = trigger.name
    return trial


@register_check("adversarial_inputs", dtypes=("float32", "float16", "bfloat16"), deployment_sensitive=True)
def adversarial_inputs(ctx: CheckContext) -> Observation:
    """Output (and dX) equal the float64 reference on the bug catalogue's triggers: large mean with small
    spread, tiny variance with ε over decades, |x| beyond sqrt(65504), small spread in bf16, odd sizes."""
    result = search(ctx, lambda t: _adversarial_trial(ctx, t), _triggers(ctx), _trigger_strategy(ctx))
    return observation("output within tolerance of the float64 truth on adversarial inputs", result)


# -- constant and all-zero groups ----------------------------------------------------------------------

def _effective_gamma_scale(ref: nn.Module) -> float:
    """max|γ| of the reference (the effective γ, weight_offset applied); 1 without affine."""
    weight = getattr(ref, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.numel():
        return float(weight.detach().abs().max().item())
    return 1.0


def _constant_cases(ctx: CheckContext) -> list[Trigger]:
    layout = ctx.spec.layout
    default_eps = ctx.params()["eps"]
    out = []
    # a deployment variant's bounded plan: the first hidden size only (each configuration is a compilation or an
    # export; the degenerate C = 1 below stays)
    sizes = ctx.spec.features[:1] if ctx.bounded_variant_plan else ctx.spec.features
    for i, c in enumerate(sizes):
        shape = input_shape(layout, batch=4, features=c, rank=layout.ranks[i % len(layout.ranks)], length=3)
        for eps in ctx.sweep("eps", (default_eps, 1e-12)):
            params = _eps_params(ctx, eps)
            for affine in ctx.affine_settings:
                p = tuple({**dict(params), "affine": affine}.items())
                out.append(Trigger(f"all-zero groups, C={c}, eps={eps:g}, affine={affine}",
                                   Case(shape, "zeros", ctx.seed + i), p))
                for scale in CONSTANT_SCALES:
                    out.append(Trigger(f"constant groups (|c| ~ {scale:g}), C={c}, eps={eps:g}, affine={affine}",
                                       Case(shape, "constant", ctx.seed + 50 + i, scale), p))
    return out + _degenerate_cases(ctx)


def _degenerate_cases(ctx: CheckContext) -> list[Trigger]:
    """One value per row (C = 1) for per-token families: each row is a constant group of length one."""
    layout = ctx.spec.layout
    if layout.reduce != "token":
        return []
    rank = 2 if 2 in layout.ranks else layout.ranks[0]
    shape = input_shape(layout, batch=4, features=DEGENERATE_FEATURES, rank=rank, length=1)
    return [Trigger(f"one value per row (C = {DEGENERATE_FEATURES}), affine={affine}",
                    Case(shape, "normal", ctx.seed + 90), tuple(ctx.params(affine=affine).items()))
            for affine in ctx.affine_settings]


def _constant_trial(ctx: CheckContext, trigger: Trigger) -> Trial:
    params = dict(trigger.params)
    x = ctx.input(trigger.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    ref = ctx.reference(module, c, params)
    n = reduction_length(ctx.spec, tuple(x.shape), num_groups_of(params))
    x_in = x.clone().requires_grad_(True)
    y = ctx.forward(module, x_in)
    x64_in = x.detach().to(torch.float64).requires_grad_(True)
    truth_graph = ref(x64_in)
    truth = truth_graph.detach()
    gamma = _effective_gamma_scale(ref)
    # The truth may be exactly β (or 0): the output's scale is that of a normalized value, |γ|·O(1).
    scale = max(float(truth.abs().max().item()) if truth.numel() else 0.0, gamma)
    tol = ctx.tolerance("forward")
    x64 = x.to(torch.float64)
    if ctx.spec.layout.moments == "centred" and x.numel():
        # A centred kernel's mean of L equal values c may be off by rounding (~eps_acc·|c|·sqrt(L) for a
        # plain sum; Welford is exact); normalizing multiplies that residue by |γ|/sqrt(ε). Allowed, in the
        # spec's reduction-term units: the property is "β, and never NaN/inf", not "exact to the ulp".
        residue = accumulate_eps(ctx.dtype) * tol.red * math.sqrt(max(n, 1)) * float(x64.abs().max().item())
        allowance = gamma * residue / math.sqrt(float(params["eps"]))
        tol = Tolerance(rel=tol.rel, abs=tol.abs + allowance / (dtype_eps(ctx.dtype) * scale), red=tol.red)
    comparisons = {"output": compare(y, truth, ctx.dtype, tol, n, scale=scale)}
    nonfinite: list[str] = []
    skipped: list[str] = []
    dy = random_like(y, stable_seed("constant_dy", trigger.case.seed))
    # On a constant group every gradient carries the factor 1/sqrt(ε); where γ·|dy|/sqrt(ε) overflows the
    # dtype (ε = 1e-12 in float16: 1e6 > 65504) no kernel can return finite gradients, so none are judged.
    grad_scale = gamma * float(dy.abs().max()) / math.sqrt(float(params["eps"])) if dy.numel() else 0.0
    if grad_scale > torch.finfo(ctx.dtype).max:
        skipped.append(f"gradients (true scale γ·|dy|/sqrt(eps) = {grad_scale:.3g} exceeds {ctx.dtype_name})")
    elif y.requires_grad:
        y.backward(dy)
        truth_graph.backward(dy.detach().to(torch.float64))
        weight, bias = ctx.impl.affine_tensors(module)
        pairs = (("grad_input", x_in, x64_in), ("grad_weight", weight, getattr(ref, "weight", None)),
                 ("grad_bias", bias, getattr(ref, "bias", None)))
        for label, tensor, true_tensor in pairs:
            grad = tensor.grad if isinstance(tensor, torch.Tensor) else None
            if grad is None:
                continue
            bad = ~torch.isfinite(grad)
            true_grad = true_tensor.grad if isinstance(true_tensor, torch.Tensor) else None
            if true_grad is not None and true_grad.shape == grad.shape:
                # A true gradient beyond the dtype's range (γ·dy/sqrt(1e-12) in float16) may be inf.
                bad &= true_grad.abs().cpu() <= torch.finfo(grad.dtype).max
            if bool(bad.any()):
                nonfinite.append(f"{label}: {int(bad.sum())} non-finite element(s) where the true gradient "
                                 f"is finite in {str(grad.dtype).removeprefix('torch.')}")
    counterexample = {**trigger.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode}
    trial = comparisons_trial(ctx, comparisons, counterexample, skipped=skipped)
    trial.metrics["nonfinite_gradients"] = nonfinite
    if nonfinite:
        trial.ok = False
        trial.counterexample = {**trial.counterexample, "nonfinite_gradients": nonfinite}
        trial.summary = "; ".join(nonfinite) + ("" if comparisons["output"].ok else f"; {trial.summary}")
        trial.metrics["tol_ratio"] = math.inf
    if not trial.ok:
        trial.summary = f"[{trigger.name}] {trial.summary}"
    return trial


@register_check("constant_rows", dtypes=("float32", "float16", "bfloat16"), deployment_sensitive=True)
def constant_rows(ctx: CheckContext) -> Observation:
    """Constant and all-zero statistic groups: finite output and gradients; the output equals the
    reference's (β for centred families, γ·c/sqrt(c²+ε) for second-moment ones)."""
    result = search(ctx, lambda t: _constant_trial(ctx, t), _constant_cases(ctx), None)
    return observation("finite output and gradients equal to the reference on constant groups", result)


# -- output dtype ---------------------------------------------------------------------------------------

def _output_dtype(ctx: CheckContext, module: nn.Module, x: torch.Tensor) -> torch.dtype:
    with torch.no_grad():
        return ctx.forward(copy.deepcopy(module), x).dtype


@register_check("dtype_preservation", dtypes=("float32", "float16", "bfloat16", "float64"), deployment_sensitive=True,
                accuracy=True)
def dtype_preservation(ctx: CheckContext) -> Observation:
    """The output dtype equals the input dtype, with parameters in the input dtype and, for half inputs,
    with float32 parameters too (HF LLaMA's RMSNorm returned float32 there: transformers#25421)."""
    layout = ctx.spec.layout
    c = ctx.spec.features[0]
    case = Case(input_shape(layout, batch=4, features=c, rank=layout.ranks[0], length=3), "normal", ctx.seed)
    x = ctx.input(case)
    observed: dict[str, str] = {}
    wrong: list[str] = []
    module = ctx.build(c)
    got = _output_dtype(ctx, module, x)
    label = f"{ctx.impl.param_dtype or ctx.dtype_name} parameters"
    if ctx.impl.param_dtype is not None:
        label += " (declared param_dtype)"
    observed[label] = str(got).removeprefix("torch.")
    if got != x.dtype:
        wrong.append(f"{label}: {observed[label]} output for a {ctx.dtype_name} input")
    if ctx.dtype in HALF_DTYPES and ctx.impl.param_dtype is None:
        label = "float32 parameters"
        mixed = ctx.build(c).to(torch.float32)
        try:
            with warnings.catch_warnings():  # torch warns that mixed dtypes miss its fused kernel: expected here
                warnings.simplefilter("ignore", UserWarning)
                got = _output_dtype(ctx, mixed, x)
        except Exception as exc:  # a module may refuse mixed precision; that is not this property
            observed[label] = f"refused ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
        else:
            observed[label] = str(got).removeprefix("torch.")
            if got != x.dtype:
                wrong.append(f"{label}: {observed[label]} output for a {ctx.dtype_name} input")
    metrics: dict[str, Any] = {"input_dtype": ctx.dtype_name, "output_dtype": observed}
    text = ", ".join(f"{k} -> {v}" for k, v in observed.items())
    if wrong:
        return Observation(False, "output dtype differs from the input dtype: " + "; ".join(wrong), metrics,
                           {"input": case.as_dict(), "params": ctx.params(), "dtype": ctx.dtype_name,
                            "mode": ctx.mode, "observed": observed})
    return Observation(True, f"output dtype equals the {ctx.dtype_name} input ({text})", metrics)
