"""Frozen parameters: γ and / or β with requires_grad=False, x with or without: a calling context.

LoRA / PEFT fine-tuning freezes the norm's γ and β, frozen layers freeze everything, and the first layer of a
model gets an input that needs no gradient. A custom autograd Function that branches on ``needs_input_grad``
(to skip dγ when γ is frozen) can then take another path for dX, return dX only when γ needs a gradient, or
write a gradient into a frozen tensor. Each subset of {x, γ, β} that requires grad is one call; the gradients
asked for must be what the same module gives with everything requiring grad, and the frozen ones get none.
"""

from __future__ import annotations

import itertools
from typing import Any

from normbench.checks.base import CheckContext, Observation, register_check
from normbench.checks.calling import (
    ContextProbe,
    Run,
    affine_of,
    compare_runs,
    context_observation,
    context_probes,
    runs_trial,
    worst_trial,
)
from normbench.checks.toolkit.reductions import reduction_length, weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.inputs import random_like


def _call(ctx: CheckContext, probe: ContextProbe, requires: frozenset[str]) -> tuple[Run, list[str]]:
    """One forward (and backward, when anything requires grad) with exactly `requires` requiring grad."""
    params = dict(probe.params)
    x = ctx.input(probe.case)
    module = ctx.build(ctx.num_features_of(x), params)
    tensors = affine_of(ctx, module)
    for label, tensor in tensors.items():
        tensor.requires_grad_(label in requires)
    x.requires_grad_("x" in requires)
    y = ctx.forward(module, x)
    run = Run(outputs={"output": y.detach().clone()})
    problems: list[str] = []
    if not requires:
        return run, problems
    if not y.requires_grad:
        return run, [f"the output does not require grad although {', '.join(sorted(requires))} does"]
    y.backward(random_like(y, stable_seed("grad_output", probe.case.seed)))
    if "x" in requires:
        run.grads["grad_input"] = None if x.grad is None else x.grad.detach().clone()
    for label, tensor in tensors.items():
        grad = None if tensor.grad is None else tensor.grad.detach().clone()
        if label in requires:
            run.grads[f"grad_{label}"] = grad
        elif grad is not None:
            problems.append(f"the frozen {label} (requires_grad=False) received a gradient")
    return run, problems


def _subsets(labels: list[str]) -> list[frozenset[str]]:
    """Every subset of the tensors that can require grad, but the full one (the control)."""
    full = frozenset(labels)
    return [frozenset(s) for r in range(len(labels)) for s in itertools.combinations(labels, r) if frozenset(s) != full]


def _frozen_trial(ctx: CheckContext, probe: ContextProbe) -> Trial:
    x = ctx.input(probe.case)
    module = ctx.build(ctx.num_features_of(x), dict(probe.params))
    labels = ["x", *affine_of(ctx, module)]
    control, _ = _call(ctx, probe, frozenset(labels))
    n = reduction_length(ctx.spec, tuple(x.shape), dict(probe.params).get("num_groups"))
    m = weight_reduction_length(ctx.spec, tuple(x.shape))
    trials = []
    for requires in _subsets(labels):
        where = f"requires_grad on {{{', '.join(sorted(requires)) or 'nothing'}}}"
        got, problems = _call(ctx, probe, requires)
        wanted = ["output", *(("grad_input",) if "x" in requires else ()),
                  *(f"grad_{label}" for label in requires if label != "x")]
        comparisons, more = compare_runs(ctx, got, control, n, m, labels=wanted)
        example: dict[str, Any] = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode,
                                   "requires_grad": sorted(requires)}
        trials.append(runs_trial(ctx, comparisons, problems + more, where, example))
        if not trials[-1].ok:
            break
    trial = worst_trial(trials)
    trial.metrics["subsets"] = len(trials)
    return trial


@register_check("frozen_parameters", dtypes=("float32", "bfloat16"))
def frozen_parameters(ctx: CheckContext) -> Observation:
    """With every subset of {x, γ, β} requiring grad, the gradients asked for equal the module's own with all
    requiring grad (within twice the tolerance), and frozen tensors receive no gradient."""
    result = find_counterexample(ctx, lambda p: _frozen_trial(ctx, p), context_probes(ctx))
    return context_observation(
        result, lambda t: f"frozen-parameter gradients match the unfrozen call over {result.trials} cases "
                          f"({t.metrics.get('subsets', 0)} subsets each); worst: ",
        "frozen parameters change the gradients")
