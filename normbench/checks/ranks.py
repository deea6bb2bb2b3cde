"""Ranks the family's users feed beyond the layout's own (QK-norm's (B, T, H, D), one token): a calling context.

A per-token norm takes any leading shape: QK-norm in Qwen3, OLMo-2 and Gemma-3 feeds RMSNorm (B, T, H, D), a
single token is (C,), video and 3-D models add a fifth dim. A kernel that reshapes with a fixed rank
(``B, T, C = x.shape``, ``x.reshape(x.shape[0] * x.shape[1], -1)``) raises, or silently normalizes over H·D.
The yardstick is the same module on the same values flattened to the layout's plain rank: (-1, C) per token,
(N, C, -1) for a channels-first family, so the statistics are the same by construction.
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
    runs_trial,
    worst_trial,
)
from normbench.checks.toolkit.reductions import reduction_length, weight_reduction_length
from normbench.checks.toolkit.search import Trial, find_counterexample
from normbench.checks.toolkit.seeds import stable_seed
from normbench.inputs import Case, random_like

#: the leading sizes per rank: small, unequal, so a swapped pair of dims shows
LEADING: dict[int, tuple[int, ...]] = {1: (), 2: (5,), 3: (2, 3), 4: (2, 3, 2), 5: (2, 2, 3, 2)}
#: spatial sizes after (N, C) for a channels-first family, per rank
SPATIAL: dict[int, tuple[int, ...]] = {2: (), 3: (5,), 4: (3, 2), 5: (2, 3, 2)}


def _shape(ctx: CheckContext, rank: int, c: int) -> tuple[int, ...]:
    if ctx.spec.layout.features_axis == -1:
        return (*LEADING[rank], c)
    if rank < 2:
        raise Skip(f"rank {rank} has no channel axis at dim 1 for a channels-first family")
    return (3, c, *SPATIAL[rank])


def _flatten(ctx: CheckContext, x: torch.Tensor) -> torch.Tensor:
    c = ctx.num_features_of(x)
    if ctx.spec.layout.features_axis == -1:
        return x.reshape(-1, c)
    return x.reshape(x.shape[0], c, -1)


def _call(ctx: CheckContext, probe: ContextProbe, x: torch.Tensor, dy: torch.Tensor) -> Run:
    module = ctx.build(ctx.num_features_of(x), dict(probe.params))
    xi = x.detach().clone().requires_grad_(True)
    y = ctx.forward(module, xi)
    y.backward(dy.reshape(y.shape))
    run = Run(outputs={"output": y.detach().clone()},
              grads={"grad_input": None if xi.grad is None else xi.grad.detach().clone()})
    for label, tensor in affine_of(ctx, module).items():
        run.grads[f"grad_{label}"] = None if tensor.grad is None else tensor.grad.detach().clone()
    return run


def _rank_trial(ctx: CheckContext, c: int, params: dict[str, Any]) -> Trial:
    trials = []
    ranks = [int(r) for r in ctx.options.get("ranks", ())]
    if not ranks:
        raise Skip(f"the spec names no ranks for {ctx.prop.name} (options.ranks)")
    for i, rank in enumerate(ranks):
        case = Case(_shape(ctx, rank, c), "normal", seed=ctx.seed + 31 * i)
        x = ctx.input(case)
        dy = random_like(x, stable_seed("grad_output", case.seed))
        flat_x = _flatten(ctx, x)
        control = _call(ctx, ContextProbe(case, tuple(params.items())), flat_x, _flatten(ctx, dy))
        control.outputs = {k: v.reshape(x.shape) for k, v in control.outputs.items()}
        control.grads = {k: (v.reshape(x.shape) if k == "grad_input" and v is not None else v)
                         for k, v in control.grads.items()}
        where = f"rank {rank} {list(x.shape)} vs the same values as {list(flat_x.shape)}"
        example = {"input": case.as_dict(), "params": params, "dtype": ctx.dtype_name, "mode": ctx.mode,
                   "rank": rank}
        try:
            got = _call(ctx, ContextProbe(case, tuple(params.items())), x, dy)
        except Skip:
            raise
        except Exception as exc:  # a rank the family takes, refused
            trials.append(Trial(False, f"{where}: raised {type(exc).__name__}: {exc}",
                                {"tol_ratio": float("inf"), "context": where}, example))
            break
        n = reduction_length(ctx.spec, tuple(flat_x.shape), params.get("num_groups"))
        m = weight_reduction_length(ctx.spec, tuple(flat_x.shape))
        comparisons, problems = compare_runs(ctx, got, control, n, m)
        trials.append(runs_trial(ctx, comparisons, problems, where, example))
        if not trials[-1].ok:
            break
    return worst_trial(trials)


@register_check("leading_ranks", dtypes=("float32", "bfloat16"))
def leading_ranks(ctx: CheckContext) -> Observation:
    """Inputs of the ranks in options.ranks (rank 1, the (B, T, H, D) of QK-norm, rank 5) give, forward and
    backward, what the same module gives on the same values flattened to the layout's plain rank."""
    params = ctx.params(**({"affine": True} if True in ctx.affine_settings else {}))
    result = find_counterexample(ctx, lambda c: _rank_trial(ctx, c, params), list(ctx.spec.features))
    ranks = list(ctx.options.get("ranks", ()))
    return context_observation(
        result, lambda t: f"ranks {ranks} match the flattened input over {result.trials} feature counts; worst: ",
        "a rank the family takes is mishandled", ranks=ranks)
