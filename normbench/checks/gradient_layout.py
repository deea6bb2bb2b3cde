"""The upstream gradient laid out independently of x: a calling context.

noncontiguous_input hands x and dy over in the same layout. Frameworks do not: a packed x meets a dy that is a
slice of a wider buffer (a fused QKV split, the backward of ``cat``), a transposed one, or one broadcast with
stride 0 (the backward of ``.sum()`` and ``.mean()`` losses, of a ``(y * w).sum()`` with w broadcast), and a
strided x meets a packed dy. A backward kernel that assumes ``dy.stride() == x.stride()`` or a packed dy reads
the wrong elements. The yardstick is the same module given a packed copy of the same dy and x.
"""

from __future__ import annotations

from typing import Any

import torch

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.calling import (
    ContextProbe,
    Run,
    affine_of,
    compare_runs,
    context_observation,
    context_probes,
    gradient_scale,
    runs_trial,
    worst_trial,
)
from normbench.checks.layout import strided_view
from normbench.checks.toolkit.reductions import reduction_length, weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.inputs import random_like

#: (how x is laid out, how dy is laid out); "packed" is contiguous, the others as in checks.layout, plus
#: "broadcast" (one sample's gradient expanded over the batch, stride 0 on dim 0: ``(y * w).sum()``) and
#: "sum_loss" (ones expanded from a scalar, every stride 0: ``y.sum().backward()``).
PAIRINGS: tuple[tuple[str, str], ...] = (
    ("packed", "row_padded"), ("packed", "transposed"), ("packed", "broadcast"), ("packed", "sum_loss"),
    ("row_padded", "packed"), ("transposed", "packed"),
)


def _lay_out(values: torch.Tensor, kind: str, features_axis: int) -> torch.Tensor:
    if kind == "packed":
        return values.contiguous()
    if kind == "broadcast":
        return values.narrow(0, 0, 1).expand(values.shape)
    if kind == "sum_loss":
        return torch.ones((), dtype=values.dtype, device=values.device).expand(values.shape)
    return strided_view(values, kind, features_axis)


def _call(ctx: CheckContext, probe: ContextProbe, x: torch.Tensor, dy: torch.Tensor) -> Run:
    module = ctx.build(ctx.num_features_of(x), dict(probe.params))
    xi = x.detach().requires_grad_(True)  # detach keeps the strides
    y = ctx.forward(module, xi)
    y.backward(dy)
    run = Run(outputs={"output": y.detach().clone()},
              grads={"grad_input": None if xi.grad is None else xi.grad.detach().clone()})
    for label, tensor in affine_of(ctx, module).items():
        run.grads[f"grad_{label}"] = None if tensor.grad is None else tensor.grad.detach().clone()
    return run


def _layout_trial(ctx: CheckContext, probe: ContextProbe) -> Trial:
    axis = ctx.spec.layout.features_axis
    values = ctx.input(probe.case)
    dy_values = random_like(values, stable_seed("grad_output", probe.case.seed))
    n = reduction_length(ctx.spec, tuple(values.shape), dict(probe.params).get("num_groups"))
    m = weight_reduction_length(ctx.spec, tuple(values.shape))
    scales = gradient_scale(ctx, ctx.build(ctx.num_features_of(values), dict(probe.params)), values,
                            stable_seed("grad_scale", probe.case.seed))
    trials = []
    for x_kind, dy_kind in PAIRINGS:
        x = _lay_out(values, x_kind, axis)
        dy = _lay_out(dy_values, dy_kind, axis)
        where = f"x {x_kind} {list(x.stride())}, dy {dy_kind} {list(dy.stride())}"
        example: dict[str, Any] = {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode,
                                   "x_layout": x_kind, "dy_layout": dy_kind}
        control = _call(ctx, probe, values.clone(), dy.detach().clone().contiguous())
        try:
            got = _call(ctx, probe, x, dy)
        except Skip:
            raise
        except Exception as exc:  # raising on a valid strided gradient violates the property
            trials.append(Trial(False, f"{where}: raised {type(exc).__name__}: {exc}",
                                {"tol_ratio": float("inf"), "context": where}, example))
            break
        comparisons, problems = compare_runs(ctx, got, control, n, m, scales=scales)
        trials.append(runs_trial(ctx, comparisons, problems, where, example))
        if not trials[-1].ok:
            break
    return worst_trial(trials)


@register_check("gradient_layout", dtypes=("float32", "bfloat16"))
def gradient_layout(ctx: CheckContext) -> Observation:
    """A packed x with a row-padded, transposed, broadcast (stride 0) or .sum()-loss dy, and a strided x with a
    packed dy, give the gradients the same module gives on packed copies (within twice the tolerance)."""
    result = find_counterexample(ctx, lambda p: _layout_trial(ctx, p), context_probes(ctx))
    return context_observation(
        result, lambda t: f"every upstream-gradient layout matches the packed one over {result.trials} cases of "
                          f"{len(PAIRINGS)} pairings; worst: ",
        "the gradient depends on how dy is laid out",
        " (the same values packed give another result: the layout is the cause)")
