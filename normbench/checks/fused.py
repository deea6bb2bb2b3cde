"""The fused add + norm residual contract, for kernels that add the residual stream and normalize in one pass.

vLLM's fused_add_rms_norm, TransformerEngine, Liger and apex fuse ``h = x + residual; y = norm(h)`` and hand
back both y and h, the next layer's residual (BUGS.md: vllm#52104, sglang#28005, ggml#1519). An implementation
opts in with ``Implementation(residual_kwarg=...)``: ``forward(x, **{residual_kwarg: r})`` returns
``(normed, residual_out)``. The contract checked here:

- ``residual_out`` is bitwise ``x + r`` computed in the input dtype, what the unfused model computes: every
  later layer adds to it, so a residual rounded differently (or left in float32) drifts across depth;
- ``normed`` equals the float64 norm of x + r within the spec's forward tolerance;
- with upstream gradients on both outputs, dX, dR, dγ and dβ equal the float64 truth (dR = dX: a fused
  backward that forgets the residual output's gradient, or the norm's gradient into r, is caught);
- neither argument is written, the outputs share no memory with the arguments or with each other, and the
  residual may be x itself (a caller passing one tensor twice: an in-place kernel then reads what it wrote).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.toolkit.bitwise import bitwise_equal, deviation, shares_memory
from normbench.checks.toolkit.comparison import affine_gradient_comparisons, comparisons_trial
from normbench.checks.toolkit.reductions import weight_reduction_length
from normbench.checks.toolkit.reference import reference_forward
from normbench.checks.toolkit.search import Trial, find_counterexample, observation
from normbench.compare import Comparison
from normbench.implementation import ImplementationError
from normbench.inputs import Case, input_shape, make_input, random_like

#: the residual stream is louder than a sublayer's output in a deep model; 4x keeps the sum's rounding real.
RESIDUAL_SCALE = 4.0


@dataclass(frozen=True)
class FusedProbe:
    case: Case
    #: pass x itself as the residual (the aliasing trigger)
    same: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.case.as_dict(), "residual_is_x": self.same, "residual_scale": RESIDUAL_SCALE}


def _residual(ctx: CheckContext, case: Case) -> torch.Tensor:
    base = make_input(Case(case.shape, "normal", case.seed + 7919), torch.float64, "cpu", ctx.spec.layout)
    return (RESIDUAL_SCALE * base).to(ctx.dtype).to(ctx.device)


def call_fused(ctx: CheckContext, module: nn.Module, x: torch.Tensor,
               residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """forward(x, residual=...) in the implementation's token layout; (normed, residual_out) in the harness's."""
    impl = ctx.impl
    assert impl.residual_kwarg is not None
    time_major = impl.token_layout == "TBC" and x.dim() == 3
    args = (x.transpose(0, 1), residual.transpose(0, 1)) if time_major else (x, residual)
    out = module(args[0], **{impl.residual_kwarg: args[1]})
    if not (isinstance(out, tuple | list) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise ImplementationError(f"implementation {impl.name!r}: forward(x, {impl.residual_kwarg}=r) returned "
                                  f"{type(out).__name__}, not the pair (normed, residual_out) it declares")
    normed, res = (t.transpose(0, 1) for t in out) if time_major else out
    for label, t in (("normed", normed), ("residual_out", res)):
        if t.shape != x.shape:
            raise ImplementationError(f"implementation {impl.name!r}: {label} shape {tuple(t.shape)} differs "
                                      f"from input shape {tuple(x.shape)}")
    return normed, res


def _contract_problems(x_before: torch.Tensor, r_before: torch.Tensor, x: torch.Tensor, r: torch.Tensor,
                       normed: torch.Tensor, res: torch.Tensor, same: bool) -> list[str]:
    problems = []
    if not bitwise_equal(x, x_before):
        problems.append(f"forward wrote into the input x ({deviation(x, x_before).describe()})")
    if not same and not bitwise_equal(r, r_before):
        problems.append(f"forward wrote into the residual argument ({deviation(r, r_before).describe()})")
    expected = x_before + r_before
    if res.dtype != expected.dtype:
        problems.append(f"residual_out is {str(res.dtype).removeprefix('torch.')}, not the input dtype "
                        f"{str(expected.dtype).removeprefix('torch.')}")
    elif not bitwise_equal(res, expected):
        problems.append(f"residual_out is not bitwise x + residual: {deviation(res, expected).describe()}")
    for out_name, out in (("normed", normed), ("residual_out", res)):
        for arg_name, arg in (("x", x), ("the residual argument", r)):
            if shares_memory(out, arg):
                problems.append(f"{out_name} shares memory with {arg_name}")
    if shares_memory(normed, res):
        problems.append("normed and residual_out share memory")
    return problems


def _with_problems(trial: Trial, problems: list[str]) -> Trial:
    if not problems:
        return trial
    counterexample = {**trial.counterexample, "failing": [*trial.counterexample.get("failing", []), "contract"]}
    return Trial(ok=False, summary="; ".join(problems) + "; " + trial.summary,
                 metrics={**trial.metrics, "contract_violations": problems}, counterexample=counterexample)


def _setup(ctx: CheckContext, probe: FusedProbe) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, int,
                                                           nn.Module, nn.Module]:
    """A probe's parameters, x, r (x itself for the aliasing trigger), feature count, module and reference."""
    params = ctx.params()
    x = ctx.input(probe.case)
    r = x if probe.same else _residual(ctx, probe.case)
    c = ctx.num_features_of(x)
    module = ctx.build(c, params)
    return params, x, r, c, module, ctx.reference(module, c, params)


def _forward_trial(ctx: CheckContext, probe: FusedProbe) -> Trial:
    params, x_before, r_before, c, module, ref = _setup(ctx, probe)
    x = x_before.clone()
    r = x if probe.same else r_before.clone()
    with torch.no_grad():
        normed, res = call_fused(ctx, module, x, r)
    problems = _contract_problems(x_before, r_before, x, r, normed, res, probe.same)
    with torch.no_grad():
        truth = reference_forward(ref, x_before.to(torch.float64) + r_before.to(torch.float64))
    comparisons = {"normed": ctx.compare(normed, truth, "forward", c)}
    example = {**probe.as_dict(), "params": params, "dtype": ctx.dtype_name, "pass": "forward"}
    return _with_problems(comparisons_trial(ctx, comparisons, example), problems)


def _gradient_trial(ctx: CheckContext, probe: FusedProbe) -> Trial:
    params, x0, r0, c, module, ref = _setup(ctx, probe)
    x = x0.clone().requires_grad_(True)
    r = x if probe.same else r0.clone().requires_grad_(True)
    normed, res = call_fused(ctx, module, x, r)
    seed = probe.case.seed
    g_normed, g_res = random_like(normed, seed + 1), random_like(res, seed + 2)
    torch.autograd.backward([normed, res], [g_normed, g_res])
    x64 = x0.detach().to(torch.float64).cpu().requires_grad_(True)
    r64 = x64 if probe.same else r0.detach().to(torch.float64).cpu().requires_grad_(True)
    h64 = x64 + r64
    torch.autograd.backward([ref(h64), h64], [g_normed.detach().to(torch.float64).cpu(),
                                              g_res.detach().to(torch.float64).cpu()])
    comparisons: dict[str, Comparison] = {}
    leaves = [("grad_input", x, x64)] + ([] if probe.same else [("grad_residual", r, r64)])
    for label, got, want in leaves:
        if got.grad is None:
            raise AssertionError(f"{label}: no gradient reached the argument")
        comparisons[label] = ctx.compare(got.grad, want.grad, "backward", c)
    comparisons.update(affine_gradient_comparisons(ctx, module, ref, weight_reduction_length(ctx.spec,
                                                                                            tuple(x0.shape))))
    example = {**probe.as_dict(), "params": params, "dtype": ctx.dtype_name, "pass": "backward"}
    return comparisons_trial(ctx, comparisons, example)


def _probes(ctx: CheckContext) -> list[FusedProbe]:
    layout = ctx.spec.layout
    out = []
    for i, c in enumerate(ctx.spec.features):
        rank = layout.ranks[i % len(layout.ranks)]
        shape = input_shape(layout, batch=4, features=c, rank=rank, length=3)
        out.append(FusedProbe(Case(shape, "normal", ctx.seed + i)))
        out.append(FusedProbe(Case(shape, "normal", ctx.seed + 100 + i), same=True))
    return out


@register_check("fused_residual", dtypes=("float32", "float16", "bfloat16"), deployment_sensitive=True)
def fused_residual(ctx: CheckContext) -> Observation:
    """Fused add + norm: residual_out is bitwise x + r, normed is the norm of x + r, gradients, no aliasing."""
    if ctx.impl.residual_kwarg is None:
        raise Skip(f"implementation {ctx.impl.name!r} declares no residual_kwarg (it is not a fused add + norm)")
    probes = _probes(ctx)
    result = find_counterexample(ctx, lambda p: _forward_trial(ctx, p), probes)
    if result.ok:
        backward = find_counterexample(ctx, lambda p: _gradient_trial(ctx, p), probes)
        worst = max((t for t in (result.worst, backward.worst) if t is not None),
                    key=lambda t: float(t.metrics.get("tol_ratio", 0.0)))
        result = type(result)(ok=backward.ok, trials=result.trials + backward.trials, failure=backward.failure,
                              worst=worst)
    return observation("the fused add + norm residual contract", result)
