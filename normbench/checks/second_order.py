"""Second-order gradients (gradient penalties, Hessian-vector products): a calling context.

Gradient penalties (WGAN-GP, R1), meta-learning (MAML) and Hessian-vector products differentiate the backward
pass. A custom backward built from detached intermediates, without ``once_differentiable``, then returns wrong
second-order gradients silently (the terms through the saved statistics are missing), which is worse than
raising. So, in float32 (not depending on a float64 path, which fused kernels rarely have): with
g = dX(dy) taken with ``create_graph=True`` and a fixed v, the gradients of s = Σ g·v with respect to x, γ and β
are compared with the float64 reference's; in float64, where the module declares a float64 path,
``torch.autograd.gradgradcheck`` runs too. A module that supports first-order gradients only declares
``double_backward=False`` and must then raise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.calling import (
    ContextProbe,
    Run,
    affine_of,
    compare_runs,
    context_observation,
    context_probes,
    runs_trial,
)
from normbench.checks.toolkit.reductions import reduction_length, weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import global_rng_seeded, stable_seed
from normbench.implementation import ImplementationError
from normbench.inputs import Case, input_shape, random_like

UNDECLARED = ("a module with first-order gradients only declares double_backward=False (then double backward must "
              "raise, as it did)")


class _Raised(Exception):  # noqa: N818 - carries the exception double backward raised
    pass


def _second_order(module: torch.nn.Module, call: Any, x: torch.Tensor, dy: torch.Tensor, v: torch.Tensor,
                  tensors: dict[str, torch.Tensor]) -> Run:
    """d(Σ dX(dy)·v)/d{x, γ, β}; a tensor the graph does not reach gets zeros, as ``s.backward()`` leaves it."""
    xi = x.detach().clone().requires_grad_(True)
    y = call(module, xi)
    try:
        (g,) = torch.autograd.grad(y, xi, dy, create_graph=True)
        s = (g * v).sum()
        if not s.requires_grad:
            # What a gradient penalty's s.backward() then raises (a once_differentiable backward given a dy that
            # needs no grad returns a dX outside any graph).
            raise RuntimeError("the create_graph=True gradient is outside any graph: element 0 of tensors does not "
                               "require grad")
        wrt = [xi, *tensors.values()]
        grads = torch.autograd.grad(s, wrt, allow_unused=True)
    except RuntimeError as exc:
        raise _Raised(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    run = Run(outputs={"first-order grad_input": g.detach()})
    for label, grad, tensor in zip(["x", *tensors], grads, wrt, strict=True):
        run.grads[f"d(dX·v)/d{label}"] = torch.zeros_like(tensor) if grad is None else grad.detach()
    return run


def _trial(ctx: CheckContext, probe: ContextProbe) -> Trial:
    params = dict(probe.params)
    x = ctx.input(probe.case)
    c = ctx.num_features_of(x)
    dy = random_like(x, stable_seed("grad_output", probe.case.seed))
    v = random_like(x, stable_seed("second_order_v", probe.case.seed))
    module = ctx.build(c, params)
    ref = ctx.reference(module, c, params)
    ref_tensors = {label: t for label in affine_of(ctx, module)
                   if isinstance(t := getattr(ref, label, None), torch.Tensor) and t.requires_grad}
    example: dict[str, Any] = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode}
    try:
        got = _second_order(module, ctx.forward, x, dy, v,
                            {k: t for k, t in affine_of(ctx, module).items() if k in ref_tensors})
    except _Raised as exc:
        if not ctx.impl.double_backward:
            return Trial(True, f"double backward raised, as declared (double_backward=False): {exc}",
                         {"tol_ratio": 0.0, "raised": True}, example)
        return Trial(False, f"double backward raised {exc}; {UNDECLARED}", {"tol_ratio": float("inf")}, example)
    want = _second_order(ref, lambda m, t: m(t), x.to(torch.float64), dy.to(torch.float64), v.to(torch.float64),
                         ref_tensors)
    n = reduction_length(ctx.spec, tuple(x.shape), params.get("num_groups"))
    m = weight_reduction_length(ctx.spec, tuple(x.shape))
    # Two backward passes, each within the backward tolerance, compose: the allowance is doubled.
    comparisons, problems = compare_runs(ctx, got, want, n, m, doubled_tolerance=True)
    trial = runs_trial(ctx, comparisons, problems, "create_graph=True", example)
    if not ctx.impl.double_backward:
        if trial.ok:
            raise ImplementationError(f"implementation {ctx.impl.name!r} declares double_backward=False, but its "
                                      "second-order gradients match the float64 truth: drop the declaration")
        trial.summary = (f"declared double_backward=False, yet double backward returned wrong numbers instead of "
                         f"raising: {trial.summary}")
    return trial


#: fast mode, as gradcheck (normbench.checks.equivalence.FAST_GRADCHECK, whose comment gives the reasons): the numerical
#: derivative of a first-order gradient has more finite-difference error (with some draws, torch.nn.InstanceNorm1d's
#: passes at atol 1e-9 and no lower), so 100x tighter than the full mode's (1e-5, 1e-4) rather than 1000x, keeping a
#: 100x margin. That flags a slip in the double backward's derivative through rstd from 1e-4 to 1e-3, by the draw (the
#: full mode: 1e-4); the float32 item, which compares create_graph gradients with the float64 reference's, flags it
#: from 1e-4 as before (docs/findings.md, "gradcheck in fast mode").
FAST_GRADGRADCHECK = {"fast_mode": True, "atol": 1e-7, "rtol": 1e-6}


def _gradgradcheck(ctx: CheckContext) -> Observation:
    layout = ctx.spec.layout
    c = ctx.spec.features[0]
    rows = 3 if layout.reduce == "token" else 4
    case = Case(input_shape(layout, batch=rows, features=c, rank=layout.ranks[0], length=2), "normal", ctx.seed)
    x = ctx.input(case).requires_grad_(True)
    module = ctx.build(c)
    # With respect to x, γ and β only: the norm's own parameters (a placement block's projections would make the
    # numerical Jacobian cost seconds, and gradcheck judges them at first order).
    affine = {id(t) for t in affine_of(ctx, module).values()}
    names = [n for n, p in module.named_parameters() if p.requires_grad and id(p) in affine]
    values = tuple(p.detach().clone().requires_grad_(True) for n, p in module.named_parameters() if n in names)

    def fn(inp: torch.Tensor, *flat: torch.Tensor) -> torch.Tensor:
        return functional_call(module, dict(zip(names, flat, strict=True)), (inp,))

    if not ctx.impl.double_backward:
        # torch's gradgradcheck reports a once_differentiable backward as a Jacobian mismatch (its DelayedError is
        # never raised there), so whether double backward raises is asked directly first.
        try:
            _second_order(module, ctx.forward, x, random_like(x, stable_seed("grad_output", case.seed)),
                          random_like(x, stable_seed("second_order_v", case.seed)), {})
        except _Raised as exc:
            return Observation(True, f"double backward raised, as declared (double_backward=False): {exc}",
                               {"raised": True})
    try:
        # gradgradcheck draws its grad_outputs from torch's global generator (gradcheck seeds a generator of its own)
        with global_rng_seeded(stable_seed("gradgradcheck_grad_outputs", case.seed)):
            torch.autograd.gradgradcheck(fn, (x, *values), eps=1e-6, raise_exception=True, **FAST_GRADGRADCHECK)
    except GradcheckError as exc:
        return Observation(False, f"gradgradcheck failed: {str(exc).strip().splitlines()[0]}",
                           {"inputs": ["x", *names]}, {"input": case.as_dict(), "params": ctx.params()})
    except RuntimeError as exc:
        if not ctx.impl.double_backward:
            return Observation(True, f"double backward raised, as declared (double_backward=False): {exc}",
                               {"raised": True})
        return Observation(False, f"double backward raised {type(exc).__name__}: {str(exc).splitlines()[0]}; "
                           f"{UNDECLARED}", {}, {"input": case.as_dict(), "params": ctx.params()})
    if not ctx.impl.double_backward:
        raise ImplementationError(f"implementation {ctx.impl.name!r} declares double_backward=False, but "
                                  "gradgradcheck passes: drop the declaration")
    return Observation(True, f"gradgradcheck: analytical and numerical second-order gradients agree for x, "
                       f"{', '.join(names) or '-'}", {"inputs": ["x", *names]})


@register_check("second_order_gradients", dtypes=("float64", "float32"))
def second_order_gradients(ctx: CheckContext) -> Observation:
    """create_graph=True: d(Σ dX·v)/d{x, γ, β} equal the float64 truth's (float32); gradgradcheck (float64, where
    the module has a float64 path). A module declared double_backward=False must raise instead."""
    if ctx.dtype == torch.float64:
        if not ctx.impl.supports_gradcheck:
            raise Skip(f"implementation {ctx.impl.name!r} declares no float64 gradient path; the float32 item "
                       "judges its second-order gradients")
        from normbench.checks.equivalence import no_float64_path

        if no_float64_path(ctx) is not None:
            raise Skip("no float64 path (reported by forward_equivalence); the float32 item judges second order")
        return _gradgradcheck(ctx)
    result = find_counterexample(ctx, lambda p: _trial(ctx, p), context_probes(ctx))
    return context_observation(result, lambda t: f"second-order gradients over {result.trials} cases: ",
                               "second-order gradients are wrong")
