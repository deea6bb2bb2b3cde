"""Repeated use of one module (weight sharing, recomputation, gradient accumulation): a calling context.

- Two forwards before one backward: weight sharing, siamese encoders, activation checkpointing's recomputation.
  A module that stashes its statistics on ``self`` (instead of the autograd ctx) hands the second call's
  statistics to the first call's backward.
- Two backward passes without zeroing (gradient accumulation): dγ and dβ must sum. A backward that assigns
  ``param.grad = ...`` keeps only the last one.

Here the context changes what is right (the second call sees the state the first left), so the yardstick is the
float64 truth called in the same sequence: the reference module through the same calls and backward passes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.calling import (
    ContextProbe,
    Run,
    compare_runs,
    context_observation,
    context_probes,
    parameter_grads,
    runs_trial,
    state_of,
    worst_trial,
)
from normbench.checks.toolkit.reductions import reduction_length, weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.inputs import Case, random_like

SCENARIOS = ("two forwards, one backward", "two backward passes accumulate")


def _sequence(ctx: CheckContext, module: nn.Module, inputs: list[torch.Tensor], grads: list[torch.Tensor],
              scenario: str, reference: bool) -> Run:
    xs = [(x.detach().to(torch.float64) if reference else x.detach().clone()).requires_grad_(True) for x in inputs]
    dys = [dy.to(torch.float64) if reference else dy for dy in grads]

    def call(x: torch.Tensor) -> torch.Tensor:
        return module(x) if reference else ctx.forward(module, x)

    if scenario == SCENARIOS[0]:
        ys = [call(x) for x in xs]
        torch.autograd.backward(ys, dys)
    else:
        ys = []
        for x, dy in zip(xs, dys, strict=True):
            ys.append(call(x))
            ys[-1].backward(dy)
    run = Run(outputs={f"output{i + 1}": y.detach() for i, y in enumerate(ys)},
              grads={f"grad_input{i + 1}": None if x.grad is None else x.grad.detach() for i, x in enumerate(xs)})
    if reference:
        for label in ("weight", "bias"):
            tensor = getattr(module, label, None)
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                run.grads[f"grad_{label}"] = None if tensor.grad is None else tensor.grad.detach()
        run.state = {name: buf.detach().clone() for name in ctx.spec.state
                     if isinstance(buf := getattr(module, name, None), torch.Tensor)}
    else:
        parameter_grads(ctx, module, run)
        run.state = state_of(ctx, module)
    return run


def _repeat_trial(ctx: CheckContext, probe: ContextProbe) -> Trial:
    params = dict(probe.params)
    first = ctx.input(probe.case)
    # A second input of the same shape with other values, as weight sharing and checkpoint recomputation make: a
    # stash on the module then fits the first call's backward and silently hands it the second call's statistics.
    second_case = Case(probe.case.shape, "normal", seed=probe.case.seed + 1)
    inputs = [first, ctx.input(second_case)]
    grads = [random_like(x, stable_seed("grad_output", probe.case.seed, i)) for i, x in enumerate(inputs)]
    c = ctx.num_features_of(first)
    n = reduction_length(ctx.spec, tuple(first.shape), params.get("num_groups"))
    m = sum(weight_reduction_length(ctx.spec, tuple(x.shape)) for x in inputs)
    trials = []
    for scenario in SCENARIOS:
        module = ctx.build(c, params)
        ref = ctx.reference(module, c, params)
        got = _sequence(ctx, module, inputs, grads, scenario, reference=False)
        want = _sequence(ctx, ref, inputs, grads, scenario, reference=True)
        if not ctx.impl.bias:
            want.grads.pop("grad_bias", None)
        comparisons, problems = compare_runs(ctx, got, want, n, m, doubled_tolerance=False)
        example: dict[str, Any] = {**probe.as_dict(), "second_input": second_case.as_dict(),
                                   "dtype": ctx.dtype_name, "mode": ctx.mode, "scenario": scenario}
        trials.append(runs_trial(ctx, comparisons, problems, scenario, example))
        if not trials[-1].ok:
            break
    return worst_trial(trials)


@register_check("repeated_use", dtypes=("float32",))
def repeated_use(ctx: CheckContext) -> Observation:
    """Two calls before one backward give each input its own gradient and dγ / dβ the sum; two backward passes
    without zeroing accumulate: both against the float64 truth called in the same sequence."""
    result = find_counterexample(ctx, lambda p: _repeat_trial(ctx, p), context_probes(ctx))
    return context_observation(
        result, lambda t: f"{' and '.join(SCENARIOS)} match the float64 truth over {result.trials} cases; worst: ",
        "repeated use of one module goes wrong")
