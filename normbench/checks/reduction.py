"""Weight-gradient reduction precision: dγ and dβ summed over many rows.

dγ = Σ dy·x̂ and dβ = Σ dy run over every row that shares a channel (M tokens, or N·L positions). A kernel
that accumulates them in the input dtype, or adds per-block partial sums in it, loses precision as M grows
(BUGS.md: Liger #950); a correct one accumulates in float32 and rounds once, so its error stays near half an
ulp of each element whatever M is. `gradient_equivalence` runs small batches with the loose backward
tolerance that dX needs; this check runs M = options.rows (default 8192, BUGS.md's trigger) rows and judges
dγ and dβ alone with the spec's tighter `reduction` tolerance.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.toolkit.comparison import affine_gradient_comparisons, comparisons_trial
from normbench.checks.toolkit.reductions import weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample, observation
from normbench.compare import TermScale
from normbench.inputs import Case, input_shape, random_like

DEFAULT_ROWS = 8192
#: positions per sample for layouts that need a length axis (N, C, L): N = rows / LENGTH samples.
LENGTH = 128


def _shape(ctx: CheckContext, rows: int) -> tuple[int, ...]:
    layout = ctx.spec.layout
    c = ctx.spec.features[0]
    if 2 in layout.ranks and layout.reduce in ("token", "channel"):
        return input_shape(layout, batch=rows, features=c, rank=2)
    return input_shape(layout, batch=max(1, rows // LENGTH), features=c, rank=3, length=LENGTH)


def term_scales(ref: nn.Module, x64: torch.Tensor, dy64: torch.Tensor, y64: torch.Tensor) -> dict[str, TermScale]:
    """Σ|terms| and sqrt(Σ terms²) of dγ and dβ, from the float64 truth: the terms are dy_i·J_i with
    J_i = ∂y_i/∂p_c(i), one element of p per output element (per-channel γ / β, or ScaleNorm's one g).

    J is y(p) − y(p − 1), exact because every family's output is affine in γ and in β; then Σ_i w_i·J_i is the
    reference's own backward with cotangent w: w = |dy|·sign(J) gives Σ|dy·J|, w = dy²·J gives Σ(dy·J)².
    `ref` is the reference in the state the module saw (copies run every pass); `y64` is its output on x64,
    already computed by the check."""
    out: dict[str, TermScale] = {}
    for label, name in (("grad_weight", "weight"), ("grad_bias", "bias")):
        param = getattr(ref, name, None)
        if not isinstance(param, torch.Tensor) or not param.requires_grad:
            continue  # absent, or no gradient expected (β of a bias=False implementation)
        probe = copy.deepcopy(ref)
        with torch.no_grad():
            getattr(probe, name).sub_(1.0)
            jac = y64.detach() - probe(x64)
        sums = []
        for cotangent in (dy64.abs() * torch.sign(jac), dy64 * dy64 * jac):
            probe = copy.deepcopy(ref)
            p = getattr(probe, name)
            p.grad = None
            probe(x64).backward(cotangent)
            sums.append(p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p))
        out[label] = TermScale(abs_sum=sums[0], root_sum_square=sums[1].sqrt())
    return out


def _trial(ctx: CheckContext, case: Case, params: dict[str, Any]) -> Trial:
    x = ctx.input(case).requires_grad_(True)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    ref = ctx.reference(module, c, params)
    weight, _ = ctx.impl.affine_tensors(module)
    if weight is None:
        raise Skip(f"implementation {ctx.impl.name!r} has no weight attribute {ctx.impl.weight_attr!r} to judge")
    y = ctx.forward(module, x)
    dy = random_like(y, case.seed + 1)
    y.backward(dy)
    x64 = x.detach().to(torch.float64).cpu()
    dy64 = dy.detach().to(torch.float64).cpu()
    # A copy runs the truth: train-mode references update their state on every call, and term_scales must
    # start from the state the module saw.
    before = copy.deepcopy(ref)
    truth = ref(x64)
    truth.backward(dy64)
    m = weight_reduction_length(ctx.spec, tuple(x.shape))
    terms = term_scales(before, x64, dy64, truth.detach())
    comparisons = affine_gradient_comparisons(ctx, module, ref, m, kind="reduction", require=True, terms=terms)
    example = {"input": case.as_dict(), "params": params, "dtype": ctx.dtype_name, "mode": ctx.mode,
               "rows_per_channel": m}
    return comparisons_trial(ctx, comparisons, example)


@register_check("weight_gradient_reduction", dtypes=("float32", "float16", "bfloat16"), differentiates="compares dγ/dβ",
                deployment_sensitive=True)
def weight_gradient_reduction(ctx: CheckContext) -> Observation:
    """dγ and dβ over options.rows (default 8192) rows per channel equal the float64 truth within the spec's
    `reduction` tolerance (float32 accumulation, one rounding)."""
    rows = int(ctx.options.get("rows", DEFAULT_ROWS))
    params = ctx.params(affine=True)
    shape = _shape(ctx, rows)
    cases = [(Case(shape, "normal", ctx.seed + i), params) for i in range(2)]
    result = find_counterexample(ctx, lambda p: _trial(ctx, *p), cases)
    return observation(f"dγ / dβ over {rows} rows within the reduction tolerance", result)
